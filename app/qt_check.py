"""Whether Qt's xcb platform plugin can load, checked before Qt starts.

Without some X11 libraries (on a fresh Ubuntu/Debian desktop typically libxcb-icccm4,
libxcb-keysyms1 and libxcb-xinerama0) Qt aborts the process with "Could not load the Qt
platform plugin xcb" (exit 134). The `gui` command asks ldd which libraries the plugin
of the installed PyQt5 cannot find, and stops with a one-line error and the exact install
command instead. `python -m app.qt_check` prints the Debian packages still needed (for
scripts/install.sh). Standard library only; PyQt5 is located, not imported.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

# The shared libraries Qt 5.15's xcb plugin (and its libQt5XcbQpa) loads, by Debian/Ubuntu
# package (the same names on Ubuntu 20.04 to 24.04 and Debian 11 to 12).
PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libglib-2.0.so.0": "libglib2.0-0",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def xcb_plugin() -> Path | None:
    """The installed PyQt5's libqxcb.so, or None (no PyQt5, not Linux, another layout)."""
    spec = importlib.util.find_spec("PyQt5")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for sub in ("Qt5/plugins/platforms", "Qt/plugins/platforms"):
            path = Path(root) / sub / "libqxcb.so"
            if path.is_file():
                return path
    return None


def missing_from_ldd(ldd_output: str) -> list[str]:
    """The libraries ldd reports as 'not found', in its order, without duplicates."""
    return list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))


def missing_xcb_libraries() -> list[str]:
    """What Qt's xcb plugin cannot load on this machine ([] when all is there, or when it
    cannot be told: no plugin found, no ldd)."""
    plugin, ldd = xcb_plugin(), shutil.which("ldd")
    if plugin is None or ldd is None or not sys.platform.startswith("linux"):
        return []
    try:
        out = subprocess.run(
            [ldd, str(plugin)], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return missing_from_ldd(out)


def packages_for(libraries: list[str]) -> list[str]:
    """The Debian/Ubuntu packages that provide these libraries (unknown ones left out)."""
    return sorted({PACKAGES[lib] for lib in libraries if lib in PACKAGES})


def missing_message(libraries: list[str]) -> str:
    """One line: what is missing and the command that installs it."""
    packages = packages_for(libraries)
    how = (
        f"install them with: sudo apt-get install {' '.join(packages)}"
        if packages
        else "install them with your system's package manager"
    )
    return (
        f"the GUI cannot start: Qt's xcb platform plugin needs {', '.join(libraries)}, "
        f"which this system lacks; {how}"
    )


if __name__ == "__main__":  # for scripts/install.sh: the packages still needed, one line
    print(" ".join(packages_for(missing_xcb_libraries())))
