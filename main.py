#!/usr/bin/env python3
"""SSD300 toolchain: train, convert, inspect, export and run SSD300 detectors.

Run `python main.py COMMAND --help` for each command's options.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="SSD300 toolchain: build, convert, inspect, train, evaluate, export and "
        "benchmark detectors.",
        epilog="Run 'python main.py COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from app import command as gui_command
    from engine.commands import register_all

    register_all(sub, gui=gui_command.register)  # every command: engine/commands/
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from engine.runtime.detector import EngineError
    from engine.video.sources import mask_credentials
    from training.errors import SSDError

    try:
        return args.func(args)
    except (SSDError, EngineError) as e:
        print(f"error: {mask_credentials(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:  # unwritable output, disk full, ...
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(mask_credentials(f"error: {e.strerror or e}{where}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
