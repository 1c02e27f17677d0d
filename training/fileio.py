"""Files the project writes: temporary names, atomic replacement, checksums, the cache
folder, and which files are images.

Standard library only. The deploy side (engine.runtime, engine.video, app) shares this
module with training: it is one of the two torch-free leaves of `training` that the import
rules let every part use (tests/test_architecture.py, SHARED).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# What is read as a still image (cv2.imread), in every part: datasets, `detect`, the GUI.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image(path: str | Path) -> bool:
    """Whether a path names a still image by its extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(path: str | Path, root: str | Path) -> bool:
    """Whether `path`, below `root`, is hidden or inside a hidden folder (.git, .venv,
    .cache, .DS_Store ...): folder searches leave those out."""
    return any(part.startswith(".") for part in Path(path).relative_to(root).parts)


def cache_dir(kind: str, override: str | Path | None = None) -> Path:
    """The folder for cached `kind` files (weights, onnx, engines): `override` if given,
    else $SSD300_CACHE/KIND, else ~/.cache/ssd300/KIND."""
    if override:
        return Path(override).expanduser()
    root = os.environ.get("SSD300_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "ssd300") / kind


def partial_path(final: str | Path) -> Path:
    """The fixed temporary name a file is written under until it is finalized: hidden, in
    the same folder, with the same extension (containers are chosen by it). Fixed, so an
    interrupted download can resume from it."""
    final = Path(final)
    return final.with_name(f".{final.stem}.partial{final.suffix}")


def unique_partial_path(final: str | Path) -> Path:
    """A new, empty temporary file beside `final` (hidden, same extension) that no other
    process uses: two runs writing the same output never share one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent
    )
    os.close(fd)
    return Path(tmp)


def _umask_once() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_once()


def current_umask() -> int:
    """The process's umask: from /proc on Linux (read, nothing changed), else the one it
    had when this module was imported (setting it to read it would race with threads
    that create files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # no /proc (macOS) or an odd line: the import-time one
        pass
    return _UMASK_AT_IMPORT


def finalize(tmp: str | Path, final: str | Path) -> Path:
    """Renames a finished temporary file over `final`, readable as any new file of the
    user would be (0o666 less the umask; mkstemp makes files 0600)."""
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, final)
    return Path(final)


def atomic_write(path: str | Path, write: Callable[[Path], object], fsync: bool = True) -> Path:
    """Calls write(tmp) for a temporary file beside `path`, then renames it over `path`: a
    crash or a full disk leaves the old file (or none), never half a file. Returns path."""
    path = Path(path)
    tmp = unique_partial_path(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        return finalize(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
