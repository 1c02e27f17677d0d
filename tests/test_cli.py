import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main
from tests.training.reference_impls import SSDPyTorch

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    """main.py in a subprocess, as users run it: (exit code, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("command", [[], ["create"], ["import"], ["info"]])
def test_help_explains_each_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main.main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: main.py" in out
    assert len(out.splitlines()) > 5


def test_create_then_info(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert (
        main.main(["create", "--backbone", "mobilenet_v2", "--classes", "coco", "-o", str(out)])
        == 0
    )
    assert main.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "backbone mobilenet_v2" in text
    assert "80 + background: person, bicycle" in text
    assert "preset voc, 8732 boxes" in text
    assert main.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 81
    assert [m["boxes"] for m in info["priors"]["maps"]] == [5776, 2166, 600, 150, 36, 4]
    assert info["parameters"]["total"] == sum(info["parameters"][k] for k in ("backbone", "head"))
    assert info["provenance"]["backbone_init"].startswith("torchvision mobilenet_v2")


def test_info_describes_the_shipped_onnx(capsys):
    """`info` on an exported ONNX reads its embedded description (no torch needed)."""
    from engine.runtime.models import DEFAULT_ONNX, DEFAULT_WEIGHTS

    if not DEFAULT_ONNX.is_file():
        pytest.skip(f"the shipped ONNX is missing: {DEFAULT_ONNX}")
    assert main.main(["info", str(DEFAULT_ONNX)]) == 0
    text = capsys.readouterr().out
    assert "backbone mobilenet_v2" in text
    assert "exported      NMS onnx, score >= 0.4, IoU 0.45, up to 100 detections" in text
    assert main.main(["info", str(DEFAULT_ONNX), "--json"]) == 0
    onnx_info = json.loads(capsys.readouterr().out)
    assert main.main(["info", str(DEFAULT_WEIGHTS), "--json"]) == 0
    weights_info = json.loads(capsys.readouterr().out)
    for key in ("backbone", "class_names", "input", "variances"):
        assert onnx_info[key] == weights_info[key]
    assert [m["boxes"] for m in onnx_info["priors"]["maps"]] == [5776, 2166, 600, 150, 36, 4]
    assert onnx_info["export"]["opset"] == 17


def test_vgg16_info_reports_the_paper_figures(tmp_path, capsys):
    out = tmp_path / "vgg.safetensors"
    assert main.main(["create", "--backbone", "vgg16", "-o", str(out)]) == 0
    assert "starts from random weights" in capsys.readouterr().out
    assert main.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == 26_285_486
    # 31.37 GMAC per 300x300 image at 21 classes (conv MACs of the Caffe layout)
    assert info["gmacs_per_image"] == pytest.approx(31.37, abs=0.01)


def test_import_ssd_pytorch_checkpoint(tmp_path):
    ckpt = tmp_path / "ssd300_voc.pth"
    torch.save(SSDPyTorch(21).state_dict(), ckpt)
    out = tmp_path / "voc.safetensors"
    code, stdout, stderr = run("import", ckpt, "-o", out)
    assert code == 0, stderr
    assert "SSD300-vgg16, 20 classes, priors voc, 8732 default boxes" in stdout
    assert out.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "missing.safetensors"], "error: weights file not found: missing.safetensors"),
        (["info", "README.md"], "not an SSD300 weights file|not a readable safetensors"),
        (["create", "--classes", "none.txt", "-o", "x.safetensors"], "class list file not found"),
        (["import", "main.py", "-o", "x.safetensors"], "cannot be loaded safely|not a readable"),
        (["create", "--classes", "vocc", "-o", "x.safetensors"], "unknown class list 'vocc'"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, message, tmp_path):
    code, stdout, stderr = run(*args)
    assert code == 1
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    import re

    assert re.search(message, stderr), stderr


def test_unknown_choices_are_usage_errors():
    code, _, stderr = run("create", "--backbone", "resnet", "-o", "x.safetensors")
    assert code == 2
    assert "invalid choice: 'resnet'" in stderr
    code, _, stderr = run("eval", "x.safetensors", "--data", "d", "--batch-size", "0")
    assert code == 2
    assert "must be at least 1" in stderr
    code, _, stderr = run("create", "--seed", str(10**23), "-o", "x.safetensors")
    assert code == 2
    assert "must be between 0 and 2**63 - 1" in stderr


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = run("create", "-o", blocker / "sub" / "m.safetensors")
    assert code == 1
    assert "Traceback" not in stderr
    assert stderr.startswith("error:")


def test_readme_quick_start_matches_ci():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if not line.startswith("#")]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci


def test_the_listed_checkpoint_kinds_are_the_importers():
    from engine.commands.model import CHECKPOINT_KINDS
    from training.importers import KINDS

    assert list(KINDS) == CHECKPOINT_KINDS


def test_export_never_replaces_the_shipped_onnx_and_checks_its_folder_first(
    tmp_path, monkeypatch, capsys
):
    from engine.runtime.models import DEFAULT_ONNX, DEFAULT_WEIGHTS
    from training.fileio import current_umask, sha256_file

    if not (DEFAULT_WEIGHTS.is_file() and DEFAULT_ONNX.is_file()):
        pytest.skip("the shipped model is missing")
    shipped = sha256_file(DEFAULT_ONNX)
    monkeypatch.chdir(tmp_path)
    assert main.main(["export", str(DEFAULT_WEIGHTS)]) == 0
    out = capsys.readouterr().out
    written = Path("runs/export") / f"{DEFAULT_WEIGHTS.stem}.onnx"
    assert written.is_file()
    assert sha256_file(DEFAULT_ONNX) == shipped  # the tracked asset is untouched
    assert f"exporting to {written}" in out
    assert f"next: python main.py video VIDEO -m {written}" in out
    assert oct(written.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    # an output folder that cannot be made is refused before exporting (in well under
    # the seconds an export takes)
    blocker = tmp_path / "file"
    blocker.write_text("")
    t0 = time.perf_counter()
    assert main.main(["export", str(DEFAULT_WEIGHTS), "-o", str(blocker / "m.onnx")]) == 1
    assert time.perf_counter() - t0 < 1.0
    assert capsys.readouterr().err.startswith(f"error: output folder {blocker} is a file")


@pytest.mark.parametrize("kind", [None, "ssd-pytorch", "torchvision-ssd300", "torchvision-vgg16"])
def test_import_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, kind):
    """(The fault run found a KeyError traceback here.)"""
    path = tmp_path / "not-a-checkpoint.pth"
    torch.save({"foo": torch.zeros(3)}, path)
    args = ["import", str(path), "-o", str(tmp_path / "m.safetensors")]
    assert main.main(args + (["--kind", kind] if kind else [])) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "m.safetensors").exists()


def test_train_and_eval_of_an_empty_folder_are_one_line(tmp_path, capsys):
    """(The fault run found an IndexError traceback here.)"""
    empty = tmp_path / "empty"
    empty.mkdir()
    from engine.runtime.models import DEFAULT_WEIGHTS

    for args in (
        ["train", "--data", str(empty), "--output", str(tmp_path / "run")],
        ["eval", str(DEFAULT_WEIGHTS), "--data", str(empty)],
    ):
        assert main.main(args) == 1
        err = capsys.readouterr().err
        assert (
            err == f"error: {empty}: no usable images (no VOC folder annotations or images found)\n"
        )
