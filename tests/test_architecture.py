"""Import rules of the architecture: app -> engine (runtime) -> training, never back."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(source: str, file: str) -> set[str]:
    """Every module a file imports, anywhere in it (top level and inside functions), as
    dotted names; `from a.b import c` gives both a.b and a.b.c (c may be a module)."""
    mods: set[str] = set()
    package = file.removesuffix(".py").split("/")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, node.module] if node.module else parts)
            mods.add(base)
            mods |= {f"{base}.{a.name}" for a in node.names}
    return mods


def imported_modules(package: str) -> dict[str, set[str]]:
    """{file: modules it imports} for every .py file below a folder."""
    files = sorted((ROOT / package).rglob("*.py"))
    rel = [str(p.relative_to(ROOT)) for p in files]
    return {r: imports_of(p.read_text(encoding="utf-8"), r) for r, p in zip(rel, files)}


# What each part may not import (a name forbids itself and its submodules). The first
# matching folder decides. engine/runtime and engine/video run on a Jetson without torch.
RULES = [
    ("training/", {"engine", "app", "torchvision"}),
    (
        "engine/runtime/",
        {"torch", "torchvision", "training", "app", "engine.video", "engine.export"},
    ),
    ("engine/video/", {"torch", "torchvision", "training", "app", "engine.export"}),
    ("engine/export/", {"app", "engine.video", "torchvision"}),
    ("engine/", {"app", "torchvision"}),  # the command modules
    ("app/", {"torch", "torchvision", "training", "engine.export"}),
]
# Torch-free leaves of training that every part may import: the one box-ops module (numpy
# and torch) and the one file-writing module. They import only the standard library and
# numpy (test_shared_modules_stay_leaves), so the deploy path can use them without torch.
SHARED = {"training.boxes", "training.fileio"}
# Imports that break a rule on purpose, with the reason.
ALLOWED = {
    ("engine/runtime/detector.py", "engine.export.torch_backend"): (
        "open_detector loads the PyTorch backend only when a weights file is opened"
    ),
}


def within(module: str, names) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def violations(table: dict[str, set[str]]) -> dict[str, list[str]]:
    """{file: the imports it may not make} for a {file: imports} table."""
    out: dict[str, list[str]] = {}
    for file, mods in table.items():
        forbidden = next(f for prefix, f in RULES if file.startswith(prefix))
        allowed = SHARED | {a for f, a in ALLOWED if f == file}
        bad = sorted(m for m in mods if within(m, forbidden) and not within(m, allowed))
        if bad:
            out[file] = bad
    return out


def test_imports_run_one_way_including_those_inside_functions():
    table = {}
    for package in ("training", "engine", "app"):
        table.update(imported_modules(package))
    assert violations(table) == {}


def test_the_rules_see_imports_inside_functions():
    """A function-level import of torch in the runtime is caught, a relative one too."""
    file = "engine/runtime/probe.py"
    source = "def f():\n    import torch\n    from ..export import onnx_export\n"
    assert violations({file: imports_of(source, file)}) == {
        file: ["engine.export", "engine.export.onnx_export", "torch"]
    }
    assert violations({"engine/runtime/detector.py": {"engine.export.torch_backend"}}) == {}
    assert violations({"app/probe.py": {"training.boxes", "training.fileio"}}) == {}
    assert violations({"app/probe.py": {"training.model"}}) == {"app/probe.py": ["training.model"]}


def test_shared_modules_stay_leaves():
    """What every part may import imports nothing of the project and nothing but numpy
    beside the standard library (torch only inside a function, for tensors passed in)."""
    for module in SHARED:
        file = module.replace(".", "/") + ".py"
        tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
        top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        third_party = {m.split(".")[0] for m in top} - set(sys.stdlib_module_names)
        assert third_party <= {"numpy"}, (file, third_party)
        assert not within_any(imports_of(ast.unparse(tree), file), ("training", "engine", "app"))


def within_any(mods: set[str], names) -> bool:
    return any(within(m, names) for m in mods)


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def modules_in(*folders: str) -> list[str]:
    return [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for folder in folders
        for p in sorted((ROOT / folder).glob("*.py"))
    ]


# Everything that runs on a Jetson without torch: the runtime, video, the GUI, and the
# command modules main.py imports to build its parser.
TORCH_FREE = modules_in("engine/runtime", "engine/video", "engine/commands", "app") + [
    "engine",
    "training",
    "training.priors",
    "training.spec",
    *sorted(SHARED),
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_modules_import_without_torch(module):
    code = BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_onnx_runtime_detects_with_torch_unimportable(tmp_path):
    """Export with torch, then detect in a process where torch cannot be imported."""
    from engine.export.onnx_export import export_onnx
    from training.model import SSD
    from training.spec import make_spec

    onnx_path = export_onnx(
        SSD(make_spec("mobilenet_v2", "voc", "voc")), tmp_path / "m.onnx", score_threshold=0.01
    )
    code = BLOCK_TORCH + (
        "import numpy as np\n"
        "from engine.runtime.detector import open_detector\n"
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


SHIPPED_ONNX = ROOT / "assets" / "models" / "ssd300_mobilenet_v2_voc.onnx"
CLIP = ROOT.parent / "shared" / "data" / "videos" / "vtest.avi"


def run_without_torch(code: str, tmp_path: Path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "SSD300_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def main_without_torch(args: list[str], tmp_path: Path) -> str:
    code = (
        "import runpy\n"
        f"sys.argv = ['main.py', *{[str(a) for a in args]!r}]\n"
        "try:\n"
        "    runpy.run_path('main.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    return run_without_torch(code, tmp_path)


@pytest.fixture
def clip():
    if not CLIP.is_file():
        pytest.skip(f"real data not available: {CLIP} is missing")
    return CLIP


def test_the_deploy_commands_run_without_torch(tmp_path, clip):
    """What a Jetson runs, in a process where `import torch` fails: the video command on a
    real clip with the shipped ONNX, the system report and the ONNX Runtime benchmark."""
    out = tmp_path / "video"
    main_without_torch(
        ["video", clip, "-m", SHIPPED_ONNX, "-o", out, "--end", "1", "--backend", "onnxruntime"],
        tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"][0]["status"] == "ok"
    assert summary["inputs"][0]["frames"] > 0
    assert main_without_torch(["system"], tmp_path).strip()
    bench = main_without_torch(
        ["bench", SHIPPED_ONNX, "--backends", "onnxruntime", "--video", clip, "--runs", "2",
         "--frames", "5", "--batch", "2"],
        tmp_path,
    )  # fmt: skip
    assert "onnxruntime" in bench


def test_the_gui_worker_runs_a_clip_without_torch(tmp_path, clip):
    pytest.importorskip("PyQt5")
    code = (
        "import time\n"
        "from app.worker import DetectionWorker, source_from_text\n"
        f"w = DetectionWorker({str(SHIPPED_ONNX)!r}, source_from_text({str(clip)!r}),\n"
        "                    backend='onnxruntime', realtime=False)\n"
        "import threading\n"
        "t = threading.Thread(target=w.run); t.start()\n"
        "got = []\n"
        "deadline = time.time() + 120\n"
        "while len(got) < 3 and time.time() < deadline:\n"
        "    p = w.take()\n"
        "    if p is not None: got.append(p)\n"
        "    time.sleep(0.01)\n"
        "w.stop(); t.join(30)\n"
        "assert len(got) == 3, got\n"
        "assert 'torch' not in sys.modules\n"
        "print('frames', [p.index for p in got])\n"
    )
    assert run_without_torch(code, tmp_path).startswith("frames")
