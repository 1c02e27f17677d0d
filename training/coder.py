"""SSD box coding: offsets of a box relative to a default box, scaled by the variances."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# detectron2's Box2BoxTransform default: exp() never sees more than log(1000 / 16), so a
# decoded box is at most 62.5x its default box and FP16 (max 65504) cannot overflow.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes as SSD regression targets and decodes predictions back.

    For a box (cx, cy, w, h) and a default box (pcx, pcy, pw, ph), both in (cx, cy, w, h):
        t = ((cx - pcx) / pw / v0, (cy - pcy) / ph / v1, log(w / pw) / v2, log(h / ph) / v3)
    with variances v = (0.1, 0.1, 0.2, 0.2) as in the Caffe release. Invariant:
    decode(encode(b, p), p) == b for boxes of positive size within the clamp range.

    Args:
        variances: the four variances (torchvision's BoxCoder weights are their inverses).
        scale_clamp: the largest log-scale offset passed to exp() when decoding.
        min_size: sizes below this are raised to it before log() when encoding, so a
            degenerate (zero-width) box gives a large but finite target, never inf/NaN.
    """

    def __init__(
        self,
        variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
        min_size: float = 1e-6,
    ) -> None:
        if len(variances) != 4 or any(v <= 0 for v in variances):
            raise ValueError(f"variances must be four positive numbers, got {variances}")
        self.variances = tuple(float(v) for v in variances)
        self.scale_clamp = float(scale_clamp)
        self.min_size = float(min_size)

    def encode(self, boxes: Tensor, priors: Tensor) -> Tensor:
        """[..., 4] cxcywh boxes and [..., 4] cxcywh priors -> [..., 4] offsets."""
        v = boxes.new_tensor(self.variances)
        xy = (boxes[..., :2] - priors[..., :2]) / priors[..., 2:] / v[:2]
        wh = torch.log(boxes[..., 2:].clamp(min=self.min_size) / priors[..., 2:]) / v[2:]
        return torch.cat([xy, wh], dim=-1)

    def decode(self, offsets: Tensor, priors: Tensor) -> Tensor:
        """[..., 4] offsets and [..., 4] cxcywh priors -> [..., 4] cxcywh boxes."""
        v = offsets.new_tensor(self.variances)
        xy = priors[..., :2] + offsets[..., :2] * v[:2] * priors[..., 2:]
        wh = priors[..., 2:] * torch.exp((offsets[..., 2:] * v[2:]).clamp(max=self.scale_clamp))
        return torch.cat([xy, wh], dim=-1)
