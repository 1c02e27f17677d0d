import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is missing")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    try:
        import torch
    except ImportError:  # a deploy-only environment (a Jetson): the torch-free tests run
        return
    torch.manual_seed(0)


def export_test_model(path: Path) -> Path:
    """SSD300-MobileNetV2 with its ImageNet backbone and a random head (seed 0), exported
    to `path` with score threshold 0.2."""
    import torch

    from engine.export.onnx_export import export_onnx
    from training.importers import (
        import_torchvision_mobilenet_v2,
        mobilenet_v2_imagenet_path,
        read_checkpoint,
    )

    torch.manual_seed(0)
    m = import_torchvision_mobilenet_v2(read_checkpoint(mobilenet_v2_imagenet_path()), "voc", "voc")
    return export_onnx(m.eval(), path, score_threshold=0.2)


@pytest.fixture(scope="session")
def detector_onnx(tmp_path_factory) -> Path:
    """SSD300-MobileNetV2 with its ImageNet backbone and a random head, exported with score
    threshold 0.2: real frames give image-dependent detections, fast enough for video tests."""
    return export_test_model(tmp_path_factory.mktemp("detector") / "mobilenet_random_head.onnx")
