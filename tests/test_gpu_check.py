"""scripts/gpu_check.sh runs here too: without a GPU its tests skip with the reason and the
bench writes {"cuda": false}; its Markdown table renders a GPU result."""

import importlib.util
import json
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "scripts" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_skips_cleanly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        return  # on a GPU machine gpu_check.sh itself is the check
    r = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(tmp_path), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 skipped" in (tmp_path / "gpu-tests.txt").read_text()
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert data["cuda"] is False
    assert "no CUDA device" in data["reason"]
    assert "Nothing measured" in (tmp_path / "gpu.md").read_text()


def test_the_markdown_table_of_a_gpu_result():
    bench = load_bench()
    data = {
        "date": "2026-12-07 10:00",
        "cuda": True,
        "gpu": "NVIDIA H100 80GB HBM3",
        "parts": {
            "inference": {
                "vgg16 fp16": {
                    "eager": {"p50_ms_batch1": 1.8, "images_per_s_batch32": 4100.0},
                    "cuda_graph": {"error": "RuntimeError: capture failed"},
                    "best": {"p50_ms_batch1": 1.8, "images_per_s_batch32": 4100.0},
                }
            },
            "postprocess": {"batch 1": {"p50_ms": 2.1}},
            "training": {"vgg16": {"images_per_s": 700.0}},
            "pipeline": {"ratio": 0.93},
        },
    }
    text = bench.markdown(data)
    assert "| vgg16 fp16 | eager | 1.8 | 4100.0 |" in text
    assert "| vgg16 fp16 | cuda_graph | RuntimeError: capture failed |  |" in text
    assert '"ratio": 0.93' in text
