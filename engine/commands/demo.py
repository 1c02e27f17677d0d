"""`main.py demo`: the first thing to run after installing. It makes a sample video, runs
the shipped model over it with the video command, and says where the annotated video and
the detections log are and how fast it ran.

The sample is made here, on the user's machine, from the public-domain/CC0 photographs that
the scikit-image package (installed from the package index by scripts/install.sh) carries:
the astronaut Eileen Collins (NASA), the "cameraman" (CC0 since scikit-image 0.19), Stéfan
van der Walt's cat Chelsea (CC0) and a coffee cup (Rachel Michetti, CC0). Each one is shown
for a few seconds with a slow zoom and pan, so the boxes have something to follow.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np

from engine.commands.args import positive_float
from engine.runtime.detector import EngineError

# (scikit-image loader, what is in it) in showing order.
SCENES = (
    ("astronaut", "a person (NASA, public domain)"),
    ("chelsea", "a cat (CC0)"),
    ("camera", "a person with a camera (CC0)"),
    ("coffee", "a cup on a table (CC0; not a VOC class)"),
)
DEFAULT_OUTPUT = Path("runs/demo")


def sample_images() -> list[tuple[str, np.ndarray]]:
    """The scenes' photographs as BGR uint8 arrays."""
    try:
        from skimage import data
    except ImportError:
        raise EngineError(
            "the demo's sample images come from scikit-image: pip install scikit-image "
            "(scripts/install.sh installs it)"
        ) from None
    images = []
    for name, _ in SCENES:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append((name, cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)))
    return images


def scene_frames(
    image: np.ndarray, size: tuple[int, int], frames: int, zoom: float = 1.25
) -> list[np.ndarray]:
    """`frames` frames of `size` (w, h) moving from the whole image (letterboxed on grey) to
    a `zoom`x closer view, panning towards its centre: a smooth affine path per frame."""
    w, h = size
    ih, iw = image.shape[:2]
    base = min(w / iw, h / ih)
    out = []
    for k in range(frames):
        t = 0.5 - 0.5 * math.cos(math.pi * k / max(1, frames - 1))  # ease in and out
        s = base * (1 + (zoom - 1) * t)
        # The image centre drifts from the frame centre by up to 4% of the frame.
        cx = w / 2 + 0.04 * w * math.sin(2 * math.pi * t)
        cy = h / 2
        m = np.array([[s, 0, cx - s * iw / 2], [0, s, cy - s * ih / 2]], dtype=np.float64)
        out.append(
            cv2.warpAffine(
                image,
                m,
                (w, h),
                flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(60, 60, 60),
            )
        )
    return out


def make_sample_video(
    path: Path, size: tuple[int, int] = (640, 480), fps: int = 25, seconds_each: float = 3.0
) -> int:
    """Writes the sample video (H.264 where PyAV is installed, else mp4v); returns its
    frame count."""
    from engine.runtime.platform import Platform
    from engine.video.writers import open_sink, resolve_codec

    codec, _ = resolve_codec("auto", Platform())  # the software encoder: same file everywhere
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = open_sink(path, size[0], size[1], float(fps), codec)
    try:
        for _, image in sample_images():
            for frame in scene_frames(image, size, int(round(fps * seconds_each))):
                sink.write(frame)
    except BaseException:
        sink.close()
        path.unlink(missing_ok=True)
        raise
    sink.close()
    return sink.frames


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="make a sample video, detect objects in it with the shipped model, report",
        description="Make a 12-second sample video from scikit-image's public-domain/CC0 "
        "photographs (a person, a cat, a cameraman, a cup), run the video command on it "
        "with the default model (SSD300-MobileNetV2, 20 VOC classes) on the best backend "
        "here (ONNX Runtime on the CPU without a GPU), and print where the annotated video "
        "and the detections log are and how fast it ran.",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"folder for the sample and the results (default {DEFAULT_OUTPUT})",
    )
    p.add_argument("-m", "--model", default=None, help="another model (default: the shipped one)")
    p.add_argument(
        "--seconds",
        type=positive_float,
        default=3.0,
        help="seconds per photograph in the sample (default 3: 12 s, 300 frames)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.commands import video as video_command
    from engine.commands.video import check_output_dir

    if not 0.2 <= args.seconds <= 60:
        raise EngineError("--seconds must be between 0.2 and 60")
    check_output_dir(args.output)
    sample = args.output / "sample.mp4"
    t0 = time.perf_counter()
    frames = make_sample_video(sample, seconds_each=args.seconds)
    print(f"sample video: {sample} ({frames} frames, made in {time.perf_counter() - t0:.1f} s)")
    parser = argparse.ArgumentParser(prog="main.py")
    video_command.register(parser.add_subparsers())
    argv = ["video", str(sample), "-o", str(args.output / "annotated")]
    argv += ["-m", str(args.model)] if args.model else []
    argv += ["--no-progress"] if args.no_progress else []
    video_args = parser.parse_args(argv)
    code = video_args.func(video_args)
    out = args.output / "annotated"
    print(
        f"\nannotated video: {out / 'sample.mp4'}\ndetections log:  {out / 'sample.jsonl'} "
        f"(one JSON line per frame)\nrun summary:     {out / 'summary.json'}"
    )
    return code
