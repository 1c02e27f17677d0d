"""Every subcommand of main.py, wired here: one module per group, each with register(sub)
(its parser) and cmd_* functions (what it runs), with the value types in one module.

    args      the argparse value types (int_in_range, unit_interval, seconds, ...)
    model     create, import, info, weights
    train     train, eval
    export    export, build
    video     video
    detect    detect (images too; videos and live sources as `video`)
    bench     bench
    system    system
    demo      demo
    (app.command: gui, kept in app/ because only app/ imports the GUI)

Rule: building the parser imports no torch and no training module beyond the torch-free
ones (main.py runs on a Jetson without torch); the cmd_* functions import what they run.
"""

from __future__ import annotations

import argparse


def register_all(sub: argparse._SubParsersAction, gui=None) -> None:
    """Adds every command to main.py's subparsers in --help order; `gui` registers the
    GUI's command (app.command.register) in its place."""
    from engine.commands import bench, demo, detect, export, model, system, train, video

    for register in (
        model.register,
        train.register,
        export.register,
        bench.register,
        video.register,
        detect.register,
        gui,
        system.register,
        demo.register,
    ):
        if register is not None:
            register(sub)
