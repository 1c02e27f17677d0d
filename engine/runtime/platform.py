"""What this machine is: an NVIDIA Jetson (which one, which JetPack) or not, and what its
OpenCV and video hardware can do. The capture pipelines, the video encoder and the engine
builder's workspace are chosen from it.

Everything is read from files (`/etc/nv_tegra_release`, the device tree, /dev nodes) under a
root folder, so the rules are tested with fake trees. Python 3.8 syntax (JetPack 5), no torch.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

# L4T release -> JetPack release (NVIDIA's JetPack archive; the first match wins).
_JETPACK = (
    ((36, 4, 4), "6.2.1"),
    ((36, 4, 3), "6.2"),
    ((36, 4), "6.1"),
    ((36, 3), "6.0"),
    ((36, 2), "6.0 DP"),
    ((35, 6), "5.1.4"),
    ((35, 5), "5.1.3"),
    ((35, 4), "5.1.2"),
    ((35, 3), "5.1.1"),
    ((35, 2), "5.1"),
    ((35, 1), "5.0.2"),
    ((32, 7), "4.6.x"),
)
SUPPORTED_L4T_MAJOR = (35, 36)  # JetPack 5 (Python 3.8) and 6 (Python 3.10)


def jetpack_for_l4t(l4t: tuple[int, ...]) -> str | None:
    """The JetPack release of an L4T version, e.g. (36, 4, 3) -> '6.2'; None if unknown."""
    for prefix, jetpack in _JETPACK:
        if tuple(l4t[: len(prefix)]) == prefix:
            return jetpack
    if l4t and l4t[0] >= 37:
        return "7.x or later"
    return None


def parse_tegra_release(text: str) -> tuple[int, ...] | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> (36, 4, 3); None if not that format."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None
    return (int(m.group(1)),) + tuple(int(p) for p in m.group(2).strip(".").split(".") if p)


@dataclass(frozen=True)
class Platform:
    """What the capture, recording and engine code needs to know about this machine.

    jetson: an NVIDIA Jetson (L4T); model: its name from the device tree ('NVIDIA Jetson
    Orin Nano Developer Kit'); l4t: (major, minor, patch); gstreamer: this OpenCV was built
    with GStreamer (JetPack's is, pip's wheels are not); nvenc: a hardware H.264 encoder is
    present (Jetson: not on Orin Nano); memory_mb: total RAM (CPU and GPU share it on Jetson).
    """

    jetson: bool = False
    model: str = ""
    l4t: tuple[int, ...] | None = None
    gstreamer: bool = False
    nvenc: bool = False
    memory_mb: int = 0

    @property
    def jetpack(self) -> str | None:
        return jetpack_for_l4t(self.l4t) if self.l4t else None

    @property
    def hardware_decode(self) -> bool:
        """nvv4l2decoder / nvvidconv / nvarguscamerasrc can be used (Jetson + GStreamer)."""
        return self.jetson and self.gstreamer

    def describe(self) -> str:
        if self.jetson:
            l4t = ".".join(map(str, self.l4t)) if self.l4t else "unknown"
            what = f"{self.model or 'NVIDIA Jetson'} (L4T {l4t}, JetPack {self.jetpack or '?'})"
        else:
            what = "not a Jetson"
        gst = "with" if self.gstreamer else "without"
        enc = "hardware H.264 encoder" if self.nvenc else "no hardware H.264 encoder"
        return f"{what}; OpenCV {gst} GStreamer; {enc}"


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _memory_mb(root: Path) -> int:
    m = re.search(r"MemTotal:\s*(\d+)\s*kB", _read(root / "proc" / "meminfo"))
    return int(m.group(1)) // 1024 if m else 0


def jetson_has_nvenc(model: str, root: Path) -> bool:
    """Orin Nano has no NVENC (its datasheet); other Jetsons expose the encoder as
    /dev/nvhost-msenc (JetPack 5/6) or /dev/v4l2-nvenc."""
    if "orin nano" in model.lower():
        return False
    return any((root / "dev" / n).exists() for n in ("nvhost-msenc", "v4l2-nvenc"))


@functools.lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    """True when the imported cv2 was built with GStreamer ('GStreamer: YES')."""
    try:
        import cv2

        info = cv2.getBuildInformation()
    except Exception:  # no cv2 at all: no GStreamer either
        return False
    m = re.search(r"GStreamer:\s*(\S+)", info)
    if not m:
        return False
    value = m.group(1).upper()  # "YES (1.20.3)", "NO", or a bare version on some builds
    return value in ("YES", "ON") or value[:1].isdigit()


def detect_platform(root: str = "/", gstreamer: bool | None = None) -> Platform:
    """Reads the machine under `root` (a fake tree in tests); `gstreamer` overrides the
    OpenCV check."""
    r = Path(root)
    release = _read(r / "etc" / "nv_tegra_release")
    model = _read(r / "proc" / "device-tree" / "model")
    compatible = _read(r / "proc" / "device-tree" / "compatible")
    jetson = bool(release) or "nvidia,tegra" in compatible
    if gstreamer is None:
        gstreamer = opencv_has_gstreamer()
    return Platform(
        jetson=jetson,
        model=model if jetson else "",
        l4t=parse_tegra_release(release) if release else None,
        gstreamer=gstreamer,
        nvenc=jetson and jetson_has_nvenc(model, r),
        memory_mb=_memory_mb(r),
    )


_current: Platform | None = None


def current_platform() -> Platform:
    """This machine, detected once per process. SSD300_PLATFORM=desktop forces the
    non-Jetson choices (for troubleshooting a pipeline)."""
    global _current
    if _current is None:
        if os.environ.get("SSD300_PLATFORM", "").lower() == "desktop":
            _current = Platform(gstreamer=opencv_has_gstreamer())
        else:
            _current = detect_platform()
    return _current


def default_workspace_mb(platform: Platform) -> int:
    """The TensorRT builder's workspace: 1 GiB on desktops, less on small Jetsons, whose GPU
    shares the RAM (a 4 GB Nano-class device builds with 256 MiB, 8 GB with 512 MiB)."""
    if not platform.jetson or not platform.memory_mb:
        return 1024
    if platform.memory_mb <= 4600:
        return 256
    if platform.memory_mb <= 9000:
        return 512
    return 1024
