"""Import rules of the architecture: app -> engine (runtime) -> training, never back."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """{file: top-level modules it imports} for every .py file of a package."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        mods = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = mods
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("training", {"engine", "app", "torchvision"}),
        ("engine", {"app", "torchvision"}),
        ("app", {"training", "torch", "torchvision"}),
    ],
)
def test_imports_run_one_way(package, forbidden):
    bad = {f: sorted(m & forbidden) for f, m in imported_modules(package).items() if m & forbidden}
    assert not bad, f"forbidden imports: {bad}"


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


RUNTIME = [
    "engine.runtime",
    "engine.contract",
    "engine.tensorrt_backend",
    "engine.trt_compat",
    "engine.overlay",
    "engine.sources",
    "engine.writers",
    "engine.video",
    "engine.video_command",
    "engine.platform",
    "engine.gstreamer",
    "engine.system",
]


@pytest.mark.parametrize(
    "module",
    [
        "app",
        "app.window",
        "app.worker",
        "app.view",
        "app.filters",
        "app.command",
        "engine",
        "training",
        "training.priors",
        "training.spec",
        *RUNTIME,
    ],
)
def test_torch_free_modules_import_without_torch(module):
    code = BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_runtime_files_do_not_import_training_or_torch():
    for module in RUNTIME:
        path = ROOT / (module.replace(".", "/") + ".py")
        mods = imported_modules("engine")[str(path.relative_to(ROOT))]
        assert not mods & {"torch", "training", "torchvision"}, (module, mods)


def test_onnx_runtime_detects_with_torch_unimportable(tmp_path):
    """Export with torch, then detect in a process where torch cannot be imported."""
    from engine.export import export_onnx
    from training.model import SSD
    from training.spec import make_spec

    onnx_path = export_onnx(
        SSD(make_spec("mobilenet_v2", "voc", "voc")), tmp_path / "m.onnx", score_threshold=0.01
    )
    code = BLOCK_TORCH + (
        "import numpy as np\n"
        "from engine.runtime import open_detector\n"
        f"det = open_detector({str(onnx_path)!r})\n"
        "d = det.detect(np.full((480, 640, 3), 127, np.uint8))\n"
        "assert det.backend == 'onnxruntime' and len(d) > 0 and d.boxes.max() <= 640\n"
        "assert 'torch' not in sys.modules\n"
        "print(det.describe(), len(d))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("onnxruntime on cpu")


def test_the_command_line_starts_without_torch():
    code = BLOCK_TORCH + (
        "import main\n"
        "parser = main.build_parser()\n"
        "assert 'torch' not in sys.modules\n"
        "print(sorted(parser._subparsers._group_actions[0].choices))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for command in ("bench", "build", "eval", "export", "info", "train"):
        assert command in r.stdout
