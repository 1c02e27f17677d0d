"""Checks that need an NVIDIA GPU (marked `gpu`): an AMP training step, CUDA post-processing
equal to CPU post-processing, CUDA-backend detections equal to CPU ones. Where torch sees
no CUDA device they skip with that reason; scripts/gpu_check.sh runs them on a lent GPU."""

import cv2
import numpy as np
import pytest
import torch

from engine.runtime.models import DEFAULT_WEIGHTS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"
    ),
]


def test_an_amp_training_step_on_cuda(shared_data, tmp_path):
    from tests.training.test_train import config
    from training.train import Trainer

    cfg = config(shared_data, tmp_path, n=4, epochs=1, device="cuda", amp=True)
    steps = []
    summary = Trainer(cfg, on_step=steps.append, quiet=True).run()
    assert len(steps) == 2
    assert all(np.isfinite(s["loss"]) for s in steps)
    assert summary["images_per_s"] > 0


def test_cuda_post_processing_equals_cpu():
    from training.model import SSD
    from training.spec import make_spec

    torch.manual_seed(0)
    model = SSD(make_spec("mobilenet_v2", "voc", "voc")).eval()
    loc = torch.randn(2, model.priors.shape[0], 4) * 0.5
    conf = torch.randn(2, model.priors.shape[0], 21) * 3
    post = model.detect_postprocessor()
    cpu = post(loc, conf, model.priors)
    gpu = post(loc.cuda(), conf.cuda(), model.priors.cuda())
    for a, b in zip(cpu, gpu):
        assert a.labels.tolist() == b.labels.cpu().tolist()
        torch.testing.assert_close(a.boxes, b.boxes.cpu(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.scores, b.scores.cpu(), atol=1e-5, rtol=1e-5)


def test_cuda_backend_detections_equal_cpu_ones(shared_data):
    from engine.runtime.detector import open_detector

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"the shipped weights are missing: {DEFAULT_WEIGHTS}")
    frames = [
        cv2.imread(str(p)) for p in sorted((shared_data / "images" / "darknet").glob("*.jpg"))
    ]
    with (
        open_detector(DEFAULT_WEIGHTS, "torch", "cpu") as cpu,
        open_detector(DEFAULT_WEIGHTS, "torch", "cuda", half=False) as gpu,
    ):
        for frame in frames:
            a, b = cpu.detect(frame), gpu.detect(frame)
            assert a.names == b.names
            np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)  # pixels
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
