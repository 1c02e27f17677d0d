#!/usr/bin/env bash
# Sets this project up on an NVIDIA Jetson (JetPack 5.1 or 6.x) and builds the FP16
# TensorRT engine of a model on the device. See docs/jetson.md.
#
#   bash scripts/setup_jetson.sh [--model MODEL.onnx] [--dla CORE] [--venv DIR]
#                                [--no-build] [--dry-run]
#
# 1. checks that this is a Jetson and which JetPack/L4T it runs (refuses anything else);
# 2. installs what is missing from the system's packages (apt): TensorRT's Python bindings,
#    OpenCV with GStreamer, PyQt5, GStreamer's tools and plugins, python3-venv;
# 3. creates a virtual environment that sees the system's TensorRT, OpenCV, numpy and
#    PyQt5 (--system-site-packages) and installs the few pip packages the deploy path needs
#    (requirements-jetson.txt, cuda-python for this JetPack), never pip's OpenCV;
# 4. checks that the environment imports JetPack's OpenCV (with GStreamer) and TensorRT;
# 5. builds the engine (main.py build: FP16, cached per device and TensorRT version).
#
# --dry-run prints the commands that change the system instead of running them.
# SSD300_JETSON_ROOT (tests) reads /etc/nv_tegra_release and /proc under another folder;
# PYTHON picks the system interpreter (default python3).
set -euo pipefail

HERE="$(pwd)"
ROOT_FS="${SSD300_JETSON_ROOT:-}"
PYTHON="${PYTHON:-python3}"
VENV=".venv"
MODEL=""
DLA=""
BUILD=1
DRY=0

die() { echo "error: $*" >&2; exit 1; }
say() { echo "==> $*"; }
run() {
    if [ "$DRY" = 1 ]; then echo "would run: $*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="${2:?--model needs a file}"; shift 2 ;;
        --dla) DLA="${2:?--dla needs a core number}"; shift 2 ;;
        --venv) VENV="${2:?--venv needs a folder}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
# Paths given relative to where the script was started, then work from the repository.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$HERE/$1" ;; esac; }
[ -z "$MODEL" ] || MODEL="$(abspath "$MODEL")"
VENV="$(abspath "$VENV")"
cd "$(dirname "$0")/.."
[ "$VENV" != "$HERE/.venv" ] || VENV="$(pwd)/.venv"

# -- 1. the device ------------------------------------------------------------------------
RELEASE_FILE="$ROOT_FS/etc/nv_tegra_release"
if [ ! -f "$RELEASE_FILE" ]; then
    die "this is not an NVIDIA Jetson (no /etc/nv_tegra_release): this script sets up Jetsons only; on a desktop or server run: bash scripts/install.sh"
fi
RELEASE="$(head -n 1 "$RELEASE_FILE")"
L4T_MAJOR="$(echo "$RELEASE" | sed -n 's/^# R\([0-9][0-9]*\) (release).*/\1/p')"
L4T_REV="$(echo "$RELEASE" | sed -n 's/.*REVISION: \([0-9.]*\).*/\1/p')"
[ -n "$L4T_MAJOR" ] || die "cannot read the L4T release from $RELEASE_FILE: '$RELEASE'"
MODEL_NAME="$(tr -d '\0' < "$ROOT_FS/proc/device-tree/model" 2>/dev/null || echo "NVIDIA Jetson")"

case "$L4T_MAJOR" in
    35) JETPACK=5; WANT_PY="3.8"; CUDA_PYTHON="cuda-python>=11.8,<12" ;;
    36) JETPACK=6; WANT_PY="3.10"; CUDA_PYTHON="cuda-python>=12.6,<13" ;;
    32) die "JetPack 4 (L4T R32.$L4T_REV: Python 3.6, TensorRT 8.2) is not supported: Jetson Nano/TX2 cannot run JetPack 5; use a JetPack 5.1 or 6 device" ;;
    *) die "L4T R$L4T_MAJOR.$L4T_REV is not a JetPack this project supports (JetPack 5.1 = L4T R35, JetPack 6 = L4T R36)" ;;
esac
say "$MODEL_NAME: L4T R$L4T_MAJOR.$L4T_REV (JetPack $JETPACK)"

PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
    || die "$PYTHON does not run: JetPack $JETPACK's Python $WANT_PY is needed"
if [ "$PY_VERSION" != "$WANT_PY" ]; then
    die "$PYTHON is Python $PY_VERSION; JetPack $JETPACK's TensorRT bindings are for its system Python $WANT_PY (set PYTHON=/usr/bin/python3)"
fi

# -- 2. system packages -------------------------------------------------------------------
# JetPack's TensorRT and OpenCV (built with GStreamer) come from NVIDIA's apt repository;
# pip has no TensorRT for JetPack and its OpenCV has no GStreamer.
PACKAGES="python3-venv python3-pip python3-libnvinfer nvidia-opencv python3-pyqt5 \
gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav"
MISSING=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        MISSING="$MISSING $pkg"
    fi
done
if [ -n "$MISSING" ]; then
    say "installing from the system's packages:$MISSING"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    run $SUDO apt-get update
    # shellcheck disable=SC2086
    run $SUDO apt-get install -y $MISSING
else
    say "system packages present"
fi

# -- 3. the virtual environment -----------------------------------------------------------
if [ -x "$VENV/bin/python" ]; then
    # scripts/install.sh's desktop venv sees no system packages and has pip's OpenCV.
    if ! grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null; then
        die "$VENV exists but does not see the system's packages (made by scripts/install.sh?): remove it or pass --venv DIR"
    fi
else
    say "creating $VENV (sees the system's TensorRT, OpenCV, numpy and PyQt5)"
    run "$PYTHON" -m venv --system-site-packages "$VENV"
fi
say "installing the deploy path's pip packages ($CUDA_PYTHON)"
run "$VENV/bin/python" -m pip install --upgrade pip
run "$VENV/bin/python" -m pip install -r requirements-jetson.txt "$CUDA_PYTHON"
# PyAV records H.264 in software where there is no NVENC (Orin Nano); optional.
if [ "$DRY" = 1 ]; then
    echo "would run: $VENV/bin/python -m pip install av (optional)"
elif ! "$VENV/bin/python" -m pip install "av>=12,<20"; then
    echo "note: PyAV did not install; recordings on a Jetson without NVENC will be mp4v" >&2
fi

# -- 4. checks ----------------------------------------------------------------------------
if [ "$DRY" = 0 ]; then
    PIP_LIST="$("$VENV/bin/python" -m pip list 2>/dev/null || true)"
    if echo "$PIP_LIST" | grep -i '^opencv-' >/dev/null; then
        die "pip's OpenCV is installed in $VENV and shadows JetPack's (no GStreamer, no CSI cameras): $VENV/bin/python -m pip uninstall opencv-python opencv-python-headless opencv-contrib-python"
    fi
    "$VENV/bin/python" - <<'EOF' || exit 1
import sys
import cv2
info = cv2.getBuildInformation()
if "GStreamer:                   YES" not in info:
    sys.exit("error: the cv2 in this environment (%s) has no GStreamer; remove pip's "
             "opencv packages and install nvidia-opencv" % cv2.__file__)
try:
    import tensorrt
except ImportError as e:
    sys.exit("error: TensorRT's Python bindings do not import (%s): apt install python3-libnvinfer" % e)
print("==> OpenCV %s with GStreamer, TensorRT %s" % (cv2.__version__, tensorrt.__version__))
EOF
    "$VENV/bin/python" main.py system
fi

# -- 5. the engine ------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    if [ -z "$MODEL" ]; then
        MODEL="$(ls assets/models/*.onnx 2>/dev/null | head -n 1 || true)"
        [ -n "$MODEL" ] || die "no ONNX model in assets/models: give one with --model MODEL.onnx (main.py export on a desktop makes it)"
    fi
    [ -f "$MODEL" ] || die "model not found: $MODEL"
    ARGS=("$MODEL")
    [ -z "$DLA" ] || ARGS+=(--dla "$DLA")
    say "building the FP16 TensorRT engine of $MODEL on this device (minutes; cached afterwards)"
    run "$VENV/bin/python" main.py build "${ARGS[@]}"
fi

say "done. Next:"
echo "  $VENV/bin/python main.py gui -m ${MODEL:-MODEL.onnx} -s csi://0        # CSI camera (USB: -s /dev/video0)"
echo "  $VENV/bin/python main.py video clip.mp4 -m ${MODEL:-MODEL.onnx}        # annotated video + log"
