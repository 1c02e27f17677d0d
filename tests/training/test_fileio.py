"""training.fileio: what every part uses to write files."""

import os
import threading
from pathlib import Path

import pytest

from training.fileio import atomic_write_text, cache_dir, current_umask, unique_partial_path
from training.model import SSD
from training.spec import make_spec
from training.weights import save_detector


@pytest.fixture
def umask():
    """Sets the process umask for a test (restored afterwards)."""
    old = os.umask(0o022)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_users_umask_not_mkstemps_0600(umask, tmp_path, mask, mode):
    umask(mask)
    assert current_umask() == mask
    text = atomic_write_text(tmp_path / "a.json", "{}")
    weights = save_detector(
        SSD(make_spec("mobilenet_v2", "voc", "voc")), tmp_path / "m.safetensors"
    )
    for path in (text, weights):
        assert path.stat().st_mode & 0o777 == mode, path


def test_runs_writing_the_same_file_never_share_a_temporary_name(tmp_path):
    names = set()

    def grab():
        for _ in range(50):
            names.add(unique_partial_path(tmp_path / "out.mp4"))

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == 200
    assert all(n.name.startswith(".out.") and n.name.endswith(".partial.mp4") for n in names)


def test_one_cache_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("SSD300_CACHE", str(tmp_path))
    assert cache_dir("onnx") == tmp_path / "onnx"
    assert cache_dir("engines", tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("SSD300_CACHE")
    assert cache_dir("weights") == Path.home() / ".cache" / "ssd300" / "weights"
