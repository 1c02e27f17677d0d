"""The `detect` command of main.py: detection on anything a user points it at.

Still images (jpg, png, bmp, webp, tiff) give annotated copies and one line each in
OUTPUT/images.jsonl; videos, cameras, streams and the Jetson sources go through the video
pipeline exactly as `main.py video` runs them; folders give their images and videos
together. --save-txt writes YOLO labels and --coco-json a COCO results file, so detections
can be evaluated or used as labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands.video import add_options, run_inputs

DEFAULT_OUTPUT = Path("runs/detect")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="detect in images, folders, globs, videos, cameras or streams",
        description="Run a detector over any mix of inputs. Images: an annotated copy each "
        "(OUTPUT/NAME.EXT) and one JSON line each in OUTPUT/images.jsonl ({image, width, "
        "height, frame: 0, time: 0, detections: [{class_id, class, score, box [x1, y1, x2, "
        "y2] in pixels}]}, the video log's schema plus the image). Videos and live sources: "
        "what `main.py video` writes (NAME.mp4, NAME.jsonl). summary.json lists every input. "
        "Boxes are in the image as it is displayed (its EXIF orientation applied).",
        epilog="Inputs: image or video files, folders (searched recursively for both), "
        "globs ('photos/*.jpg', quoted), a webcam index (0), /dev/videoN, csi://N, "
        "stream URLs and GStreamer pipelines. Exit code: 0 when every input was processed, "
        "1 when any failed (the others are still processed), 130/143 after Ctrl-C/SIGTERM.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="SOURCE", help="images, videos, folders, globs, 0, URLs"
    )
    add_options(p, DEFAULT_OUTPUT)
    p.add_argument(
        "--save-txt",
        action="store_true",
        help="also write YOLO labels for images: OUTPUT/labels/NAME.txt, a line 'class cx cy "
        "w h' per detection (normalized, class 0-based as in a YOLO data.yaml)",
    )
    p.add_argument(
        "--save-conf", action="store_true", help="with --save-txt: add each score to its line"
    )
    p.add_argument(
        "--coco-json",
        action="store_true",
        help="also write OUTPUT/detections_coco.json, COCO's results format for the images "
        "(image_id: the file's number, e.g. 000000000139.jpg -> 139, else its name, or its "
        "path under OUTPUT when that id is taken; category_id: the model's class id)",
    )
    p.set_defaults(func=cmd_detect)


def cmd_detect(args: argparse.Namespace) -> int:
    return run_inputs(args, images=True)
