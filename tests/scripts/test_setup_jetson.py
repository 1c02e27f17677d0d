"""scripts/setup_jetson.sh's checks, on this (non-Jetson) machine and on fake device trees
(SSD300_JETSON_ROOT) with a stand-in system Python; --dry-run prints what it would change."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup_jetson.sh"


def run(tmp_path, release=None, python_version="3.10", args=(), model="NVIDIA Jetson Orin NX"):
    fs = tmp_path / "fs"
    (fs / "etc").mkdir(parents=True, exist_ok=True)
    (fs / "proc" / "device-tree").mkdir(parents=True, exist_ok=True)
    (fs / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    if release is not None:
        (fs / "etc" / "nv_tegra_release").write_text(release)
    fake_python = tmp_path / "python3"
    fake_python.write_text(f"#!/bin/sh\necho {python_version}\n")
    fake_python.chmod(0o755)
    env = dict(os.environ, SSD300_JETSON_ROOT=str(fs), PYTHON=str(fake_python))
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_refuses_on_a_machine_that_is_not_a_jetson(tmp_path):
    for r in (
        subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True),
        run(tmp_path),  # an empty device tree
    ):
        assert r.returncode == 1
        assert r.stderr == (
            "error: this is not an NVIDIA Jetson (no /etc/nv_tegra_release): this script sets "
            "up Jetsons only; on a desktop or server run: bash scripts/install.sh\n"
        )
        assert r.stdout == ""


@pytest.mark.parametrize(
    ("release", "message"),
    [
        ("# R32 (release), REVISION: 7.4, GCID: 1", "JetPack 4 (L4T R32.7.4: Python 3.6"),
        ("# R38 (release), REVISION: 2.0, GCID: 1", "L4T R38.2.0 is not a JetPack this project"),
        ("garbage", "cannot read the L4T release"),
    ],
)
def test_refuses_unsupported_jetpacks(tmp_path, release, message):
    r = run(tmp_path, release)
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stderr.count("\n") == 1


def test_refuses_a_python_other_than_the_jetpacks(tmp_path):
    r = run(tmp_path, "# R36 (release), REVISION: 4.3, GCID: 1", python_version="3.12")
    assert r.returncode == 1
    assert "is Python 3.12; JetPack 6's TensorRT bindings are for its system Python 3.10" in (
        r.stderr
    )


@pytest.mark.parametrize(
    ("release", "python", "cuda"),
    [
        ("# R36 (release), REVISION: 4.3, GCID: 1", "3.10", "cuda-python>=12.6,<13"),
        ("# R35 (release), REVISION: 4.1, GCID: 1", "3.8", "cuda-python>=11.8,<12"),
    ],
)
def test_dry_run_plans_packages_venv_and_engine(tmp_path, release, python, cuda):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    venv = tmp_path / "venv"
    r = run(tmp_path, release, python, ["--dry-run", "--venv", str(venv), "--model", str(model)])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"NVIDIA Jetson Orin NX: L4T R{release[3:5]}" in out
    assert f"would run: {tmp_path}/python3 -m venv --system-site-packages {venv}" in out
    assert f"-m pip install -r requirements-jetson.txt {cuda}" in out
    assert f"would run: {venv}/bin/python main.py build {model}" in out
    assert "opencv-python" not in out
    with_dla = run(
        tmp_path, release, python, ["--dry-run", "--venv", str(venv), "--model", str(model),
                                    "--dla", "0"]
    )  # fmt: skip
    assert f"main.py build {model} --dla 0" in with_dla.stdout


def test_requirements_for_jetson_never_bring_pips_opencv():
    text = (ROOT / "requirements-jetson.txt").read_text()
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    assert not [ln for ln in lines if ln.lower().startswith(("opencv", "torch", "tensorrt"))]
    assert "numpy>=1.17,<2" in lines


def test_refuses_a_venv_that_cannot_see_the_system_packages(tmp_path):
    venv = tmp_path / "desktop-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "bin" / "python").chmod(0o755)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    r = run(tmp_path, "# R36 (release), REVISION: 4.3, GCID: 1", "3.10",
            ["--dry-run", "--venv", str(venv), "--no-build"])  # fmt: skip
    assert r.returncode == 1
    assert "does not see the system's packages (made by scripts/install.sh?)" in r.stderr
