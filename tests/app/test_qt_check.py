"""`main.py gui` on a desktop that lacks what Qt's xcb plugin loads: a one-line error with
the install command, never Qt's abort (exit 134)."""

import shutil
import subprocess

import pytest

import main
from app import qt_check

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd4b1f2000)
\tlibQt5XcbQpa.so.5 => /venv/PyQt5/Qt5/plugins/platforms/../../lib/libQt5XcbQpa.so.5 (0x7f)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-xinerama.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f3c2a1b0000)
"""


def test_what_ldd_cannot_find_becomes_the_apt_command():
    missing = qt_check.missing_from_ldd(LDD)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-xinerama.so.0"]
    assert qt_check.missing_message(missing) == (
        "the GUI cannot start: Qt's xcb platform plugin needs libxcb-icccm.so.4, "
        "libxcb-keysyms.so.1, libxcb-xinerama.so.0, which this system lacks; install them "
        "with: sudo apt-get install libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0"
    )


def test_the_installed_plugin_is_found_and_checked():
    """On this machine, the real plugin through the real ldd."""
    pytest.importorskip("PyQt5")
    plugin = qt_check.xcb_plugin()
    assert plugin is not None
    assert plugin.name == "libqxcb.so"
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd on this machine")
    listed = subprocess.run([ldd, str(plugin)], capture_output=True, text=True).stdout
    assert "libQt5XcbQpa.so.5" in listed  # what ldd printed is the plugin's dependencies
    assert qt_check.missing_xcb_libraries() == qt_check.missing_from_ldd(listed)


def test_gui_stops_with_one_line_before_qt_loads(monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(qt_check, "missing_xcb_libraries", lambda: qt_check.missing_from_ldd(LDD))
    assert main.main(["gui"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: the GUI cannot start: Qt's xcb platform plugin needs")
    assert err.strip().endswith(
        "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0"
    )
