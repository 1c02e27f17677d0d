"""`main.py system`: what this machine offers the deploy path, one line each: the Jetson and
its JetPack, Python, OpenCV and its GStreamer, TensorRT, cuda-python and the GPU, ONNX
Runtime's providers, PyQt5, PyAV's encoders, the power mode. The Jetson setup script runs it
last; docs/jetson.md's troubleshooting starts from it. No torch; Python 3.8 syntax."""

from __future__ import annotations

import argparse
import platform as pyplatform
import shutil
import subprocess

from engine.runtime.platform import current_platform


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # absent, or present but broken (a wrong CUDA, a missing library)
        return None
    return str(getattr(mod, "__version__", "installed"))


def _tensorrt() -> str:
    try:
        import tensorrt as trt
    except Exception as e:
        return f"not available ({type(e).__name__}: {str(e)[:80]})"
    text = trt.__version__
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        text += f", {builder.num_DLA_cores} DLA core(s)"
    except Exception as e:  # no GPU visible
        text += f" (no builder: {str(e)[:60]})"
    return text


def _gpu() -> str:
    try:
        from engine.runtime.tensorrt_backend import gpu_identity

        name, cc = gpu_identity()
        return f"{name} (sm{cc})"
    except Exception as e:
        return f"none found ({str(e)[:80]})"


def _power_mode() -> str | None:
    if not shutil.which("nvpmodel"):
        return None
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return lines[0] if lines else None


def report() -> list[tuple[str, str]]:
    """(what, finding) rows."""
    plat = current_platform()
    rows = [("machine", plat.describe()), ("python", pyplatform.python_version())]
    import cv2
    import numpy as np

    rows.append(("numpy", np.__version__))
    where = getattr(cv2, "__file__", "?")
    gst = "with GStreamer" if plat.gstreamer else "WITHOUT GStreamer"
    rows.append(("opencv", f"{cv2.__version__} {gst} ({where})"))
    rows.append(("tensorrt", _tensorrt()))
    cuda = _version("cuda")
    rows.append(("cuda-python", "installed" if cuda else "not installed"))
    if cuda:
        rows.append(("gpu", _gpu()))
    try:
        import onnxruntime as ort

        rows.append(
            ("onnxruntime", f"{ort.__version__} ({', '.join(ort.get_available_providers())})")
        )
    except Exception:
        rows.append(("onnxruntime", "not installed"))
    rows.append(("pyqt5", "installed" if _version("PyQt5") else "not installed (no GUI)"))
    from engine.video.writers import h264_available, pyav_nvenc_available

    if _version("av"):
        enc = ["libx264"] if h264_available() else []
        enc += ["h264_nvenc"] if pyav_nvenc_available() else []
        rows.append(("pyav", f"{_version('av')} (H.264 encoders: {', '.join(enc) or 'none'})"))
    else:
        rows.append(("pyav", "not installed (videos are mp4v unless NVENC is used)"))
    rows.append(("torch", _version("torch") or "not installed (fine for running models)"))
    mode = _power_mode()
    if mode:
        rows.append(("power mode", mode))
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "system",
        help="what this machine offers: Jetson/JetPack, OpenCV+GStreamer, TensorRT, GPU, ...",
        description="Print what the deploy path finds on this machine, one line each "
        "(what a Jetson setup should show: JetPack's OpenCV with GStreamer, TensorRT, "
        "cuda-python, the GPU).",
    )
    p.set_defaults(func=cmd_system)


def cmd_system(args: argparse.Namespace) -> int:
    for what, finding in report():
        print(f"{what:<12} {finding}")
    return 0
