"""The `gui` command of main.py."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.runtime.detector import BACKENDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gui",
        help="live detection window for webcams, video files and streams",
        description="Open the PyQt5 window: pick a camera, a file (or drop one on the window) "
        "or a URL, and a model; detections are drawn live with confidence and IoU sliders, "
        "a class filter, pause/step/seek for files, recording and snapshots. Keys: space "
        "pause, S snapshot, R record, F full screen, Q quit. The last source and settings "
        "are remembered.",
    )
    p.add_argument(
        "--model",
        "-m",
        help=".onnx, TensorRT engine, .safetensors weights or a `main.py weights` name "
        "(default: the last one used, else the shipped SSD300-MobileNetV2 VOC model)",
    )
    p.add_argument("--source", "-s", help="camera index (0), video file, or stream URL")
    p.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        default=None,
        help="auto: TensorRT when installed with a GPU, else ONNX Runtime",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("runs/gui"),
        help="folder for recordings and snapshots (default runs/gui)",
    )
    p.set_defaults(func=cmd_gui)


def cmd_gui(args: argparse.Namespace) -> int:
    from engine.runtime.detector import EngineError

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not has_display and not platform and sys.platform.startswith("linux"):
        raise EngineError(
            "no display: run it on a desktop, over ssh -X, or under Xvfb (xvfb-run -a "
            "python main.py gui ...)"
        )
    if platform in ("", "xcb") and sys.platform.startswith("linux"):
        from app.qt_check import missing_message, missing_xcb_libraries

        missing = missing_xcb_libraries()  # before Qt loads: it would abort (exit 134)
        if missing:
            raise EngineError(missing_message(missing))
    try:
        from PyQt5.QtWidgets import QApplication
    except ImportError:
        raise EngineError("PyQt5 is not installed (pip install PyQt5)") from None
    if args.model:
        from engine.runtime.models import resolve_model

        args.model = str(resolve_model(args.model))

    from app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("SSD300 live detection")
    window = MainWindow(args.model, args.source, args.backend, args.output)
    window.show()
    return app.exec_()
