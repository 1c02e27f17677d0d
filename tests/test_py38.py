"""The deploy path runs on Jetsons with the system Python: 3.8 (JetPack 5) and 3.10
(JetPack 6). Its files are checked here with the 3.8 grammar, for runtime uses of newer
typing syntax that the grammar allows, and with vermin for newer standard-library APIs
(ruff also checks them with a py38 target: pyproject.toml). With SSD300_PYTHON38 naming a
Python 3.8 that has numpy and OpenCV, the command line also runs under it."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Everything main.py imports to build its parser, the GUI, and the engine runtime.
DEPLOY = sorted(
    [ROOT / "main.py", *(ROOT / "app").glob("*.py")]
    + [
        p
        for d in ("engine", "engine/commands", "engine/runtime", "engine/video")
        for p in (ROOT / d).glob("*.py")
    ]
    + [ROOT / "engine" / "export" / n for n in ("__init__.py", "quantize.py")]  # build --int8
    + [
        ROOT / "training" / n
        for n in ("__init__.py", "errors.py", "spec.py", "priors.py", "fileio.py", "boxes.py")
    ]
)
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def test_main_py_imports_only_the_checked_modules():
    """If main.py's parser starts importing another module, it must join DEPLOY."""
    code = (
        "import sys, main; main.build_parser(); "
        "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items()) "
        "if n.split('.')[0] in ('app', 'engine', 'training')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    imported = {Path(line).resolve() for line in out.split()}
    missing = sorted(str(p.relative_to(ROOT)) for p in imported - {p.resolve() for p in DEPLOY})
    assert not missing, f"main.py imports modules not checked for Python 3.8: {missing}"


@pytest.mark.parametrize("path", DEPLOY, ids=_ids(DEPLOY))
def test_parses_with_the_python_3_8_grammar(path):
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 8))


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (not evaluated with `from __future__ import
    annotations`, which every deploy file has)."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            roots += [a.annotation for a in every if a is not None and a.annotation]
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(n) for r in roots if r is not None for n in ast.walk(r)}


def runtime_typing_problems(source: str) -> list[str]:
    """Uses evaluated at run time that Python 3.8 rejects: `X | Y` of types (3.10) in
    isinstance or with None, and subscripted builtins such as list[int] (3.9)."""
    tree = ast.parse(source)
    problems = []
    in_annotation = _annotation_nodes(tree)
    if in_annotation and "from __future__ import annotations" not in source:
        problems.append("annotations without `from __future__ import annotations`")
    for node in ast.walk(tree):
        if id(node) in in_annotation:
            continue
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in BUILTIN_GENERICS
        ):
            problems.append(f"line {node.lineno}: {node.value.id}[...] evaluated at run time")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Constant) and s.value is None for s in sides):
                problems.append(f"line {node.lineno}: `X | None` evaluated at run time")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
            and isinstance(node.args[1], ast.BinOp)
        ):
            problems.append(f"line {node.lineno}: {node.func.id} with an `X | Y` union")
    return problems


def test_the_runtime_typing_check_finds_what_it_looks_for():
    bad = (
        "from __future__ import annotations\n"
        "def f(x: list[int] | None = None) -> dict[str, int] | None:\n"
        "    ok: tuple[int, ...] = ()\n"
        "    Alias = list[int]\n"
        "    y = int | None\n"
        "    return isinstance(x, int | str)\n"
    )
    assert runtime_typing_problems(bad) == [
        "line 4: list[...] evaluated at run time",
        "line 5: `X | None` evaluated at run time",
        "line 6: isinstance with an `X | Y` union",
    ]


@pytest.mark.parametrize("path", DEPLOY, ids=_ids(DEPLOY))
def test_no_newer_typing_syntax_at_run_time(path):
    problems = runtime_typing_problems(path.read_text(encoding="utf-8"))
    assert not problems, problems


def test_vermin_finds_no_api_newer_than_python_3_8():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (requirements-dev.txt has it)")
    r = subprocess.run(
        [vermin, "--no-tips", "-t=3.8-", "--violations", *map(str, DEPLOY)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_command_line_runs_under_python_3_8(tmp_path, shared_data):
    """Runs when SSD300_PYTHON38 names a Python 3.8 with the deploy requirements (numpy,
    OpenCV, onnx, onnxruntime): the video command end to end, torch absent."""
    python = os.environ.get("SSD300_PYTHON38")
    if not python:
        pytest.skip("set SSD300_PYTHON38 to a Python 3.8 interpreter with the deploy packages")
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    ).stdout
    assert version.strip() == "(3, 8)"
    from tests.conftest import export_test_model

    onnx = export_test_model(tmp_path / "m.onnx")
    clip = shared_data / "videos" / "car-detection.mp4"
    r = subprocess.run(
        [python, "main.py", "video", str(clip), "-m", str(onnx), "-o", str(tmp_path / "out")]
        + ["--end", "2", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "car-detection.jsonl").read_text().count("\n") == 25
    gui = subprocess.run([python, "main.py", "gui", "--help"], cwd=ROOT, capture_output=True)
    assert gui.returncode == 0
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    r = subprocess.run(
        [python, "main.py", "video", str(bad), "-m", str(onnx), "-o", str(tmp_path / "b")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "cannot be opened as a video" in r.stdout
