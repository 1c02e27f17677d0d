#!/usr/bin/env bash
# The GPU checks, in one command, for a machine with an NVIDIA GPU and CUDA PyTorch (such as
# the device tool's lent machine): the tests marked `gpu`, then scripts/gpu_bench.py's
# figures (inference, NMS, AMP training, the video pipeline). Writes OUT/gpu.json, gpu.md and
# gpu-tests.txt. Without a GPU everything skips with the reason and it exits 0.
#   bash scripts/gpu_check.sh OUT [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/gpu_check.sh OUT [--quick]}
shift
mkdir -p "$out"
PY=${PYTHON:-}
[[ -z "$PY" && -x .venv/bin/python ]] && PY=.venv/bin/python
PY=${PY:-python3}
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["torch", "numpy", "cv2", "safetensors", "onnx", "onnxruntime", "yaml", "tqdm", "pytest"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PYEOF
)
if [[ -n "$missing" ]]; then
    echo "gpu_check: missing Python packages: $missing (carry wheels, or pip install them)" >&2
fi
tests_rc=0
if "$PY" -c "import pytest" 2>/dev/null; then
    "$PY" -m pytest -q -m gpu tests/test_gpu.py -rs -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.txt"
    tests_rc=${PIPESTATUS[0]}
    [[ $tests_rc -eq 5 ]] && tests_rc=0  # "no tests collected" is not a failure
else
    echo "pytest is not installed: the gpu tests were not run" | tee "$out/gpu-tests.txt"
fi
"$PY" scripts/gpu_bench.py --out "$out" "$@"
bench_rc=$?
echo "gpu_check: tests exit $tests_rc, bench exit $bench_rc; results in $out"
exit $(( tests_rc != 0 || bench_rc != 0 ))
