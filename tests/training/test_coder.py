import math

import torch

from training.boxes import xyxy_to_cxcywh
from training.coder import BoxCoder
from training.priors import preset


def test_encode_decode_round_trip():
    priors = torch.from_numpy(preset("voc").generate())
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(len(priors), 2, generator=g) * 0.7
    boxes = xyxy_to_cxcywh(
        torch.cat([xy, xy + 0.02 + torch.rand(len(priors), 2, generator=g) * 0.28], 1)
    )
    coder = BoxCoder()
    offsets = coder.encode(boxes, priors)
    torch.testing.assert_close(coder.decode(offsets, priors), boxes, rtol=1e-5, atol=1e-6)


def test_encoding_matches_the_formula_with_variances():
    prior = torch.tensor([0.5, 0.5, 0.2, 0.4])
    box = torch.tensor([0.52, 0.46, 0.3, 0.2])
    t = BoxCoder((0.1, 0.1, 0.2, 0.2)).encode(box, prior)
    expected = [0.02 / 0.2 / 0.1, -0.04 / 0.4 / 0.1, math.log(1.5) / 0.2, math.log(0.5) / 0.2]
    torch.testing.assert_close(t, torch.tensor(expected))


def test_decode_clamps_before_exp_so_fp16_cannot_overflow():
    coder = BoxCoder()
    prior = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    huge = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    out = coder.decode(huge, prior)
    torch.testing.assert_close(out[0, 2:], torch.tensor([62.5, 62.5]))
    out16 = coder.decode(huge.half(), prior.half())
    assert torch.isfinite(out16).all()


def test_degenerate_boxes_encode_to_finite_targets():
    coder = BoxCoder()
    t = coder.encode(torch.tensor([[0.5, 0.5, 0.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.1, 0.1]]))
    assert torch.isfinite(t).all()
