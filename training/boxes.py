"""Box operations, written once for torch tensors and numpy arrays (no torchvision).

Each function works on the array type it is given: torch tensors on whatever device they
live (training, the matcher, the post-processing graph), numpy arrays on the deploy side
(the GUI's detection filter, augmentation, evaluation). The module itself imports numpy
only, and torch only when a tensor is passed in (it is then already imported), so the
torch-free deploy path can use it: it is one of the two leaves of `training` that every part
may import (tests/test_architecture.py, SHARED).

Conventions: `xyxy` boxes are (x1, y1, x2, y2) with x1 <= x2, y1 <= y2; `cxcywh` boxes are
(centre x, centre y, width, height). All functions accept any leading batch dimensions
unless their docstring says otherwise. `Array` is a torch.Tensor or an np.ndarray.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

Array = Any  # torch.Tensor | np.ndarray


class _NumpyOps:
    """The few calls whose numpy and torch spellings differ, numpy's side."""

    @staticmethod
    def cat(xs, dim):
        return np.concatenate(xs, axis=dim)

    @staticmethod
    def stack(xs, dim):
        return np.stack(xs, axis=dim)

    @staticmethod
    def tiny(x):
        return np.finfo(x.dtype).tiny if np.issubdtype(x.dtype, np.floating) else 1e-12

    @staticmethod
    def where(cond, x, other: float):
        return np.where(cond, x, np.asarray(other, dtype=x.dtype))

    @staticmethod
    def argsort(x, descending: bool = False):
        """Stable: ties keep their input order."""
        return np.argsort(-x if descending else x, kind="stable")

    @staticmethod
    def equal(a, b) -> bool:
        return bool(np.array_equal(a, b))

    @staticmethod
    def group_sizes(sorted_labels):
        return np.unique(sorted_labels, return_counts=True)

    @staticmethod
    def bools(shape, like, value: bool):
        return np.full(shape, value, dtype=bool)

    @staticmethod
    def arange(n, like):
        return np.arange(n)

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def empty_index(like):
        return np.empty(0, dtype=np.int64)

    maximum, minimum = np.maximum, np.minimum  # ufuncs: not bound as methods
    triu, repeat, cumsum = staticmethod(np.triu), staticmethod(np.repeat), staticmethod(np.cumsum)


class _TorchOps:
    """The same calls, torch's side (made on first use of a tensor)."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.maximum, self.minimum, self.triu = torch.maximum, torch.minimum, torch.triu
        self.repeat, self.cumsum = torch.repeat_interleave, torch.cumsum

    def cat(self, xs, dim):
        return self.torch.cat(xs, dim=dim)

    def stack(self, xs, dim):
        return self.torch.stack(xs, dim=dim)

    def tiny(self, x):
        return self.torch.finfo(x.dtype).tiny if x.is_floating_point() else 1e-12

    def where(self, cond, x, other: float):
        return self.torch.where(cond, x, other)

    def argsort(self, x, descending: bool = False):
        return self.torch.sort(x, descending=descending, stable=True).indices

    def equal(self, a, b) -> bool:
        return self.torch.equal(a, b)

    def group_sizes(self, sorted_labels):
        return self.torch.unique_consecutive(sorted_labels, return_counts=True)

    def bools(self, shape, like, value: bool):
        return self.torch.full(shape, value, dtype=self.torch.bool, device=like.device)

    def arange(self, n, like):
        return self.torch.arange(n, device=like.device)

    def zeros(self, shape, like):
        return like.new_zeros(shape)

    def empty_index(self, like):
        return self.torch.empty(0, dtype=self.torch.int64, device=like.device)


_NUMPY = _NumpyOps()
_torch_ops: _TorchOps | None = None


def _ops(x: Array):
    """numpy's or torch's spelling, by the type of `x`."""
    global _torch_ops
    if isinstance(x, np.ndarray):
        return _NUMPY
    if _torch_ops is None:
        _torch_ops = _TorchOps(sys.modules["torch"])  # a tensor exists: torch is imported
    return _torch_ops


def cxcywh_to_xyxy(boxes: Array) -> Array:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    c, wh = boxes[..., :2], boxes[..., 2:]
    return _ops(boxes).cat([c - wh / 2, c + wh / 2], -1)


def xyxy_to_cxcywh(boxes: Array) -> Array:
    """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h)."""
    p1, p2 = boxes[..., :2], boxes[..., 2:]
    return _ops(boxes).cat([(p1 + p2) / 2, p2 - p1], -1)


def box_area(boxes: Array) -> Array:
    """[..., 4] xyxy -> [...] area; inverted boxes count as 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clip(0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: Array, b: Array) -> Array:
    """Pairwise IoU.

    Args:
        a: [..., N, 4] xyxy.
        b: [..., M, 4] xyxy (same leading dimensions as `a`, or broadcastable).
    Returns:
        [..., N, M] IoU in [0, 1]; pairs with zero union give 0.
    """
    xp = _ops(a)
    a1, a2 = a[..., :, None, :2], a[..., :, None, 2:]
    b1, b2 = b[..., None, :, :2], b[..., None, :, 2:]
    wh = (xp.minimum(a2, b2) - xp.maximum(a1, b1)).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return xp.where(union > 0, inter / union.clip(xp.tiny(union)), 0.0)


def clip_boxes(boxes: Array, width: float = 1.0, height: float = 1.0) -> Array:
    """Clamp [..., 4] xyxy boxes into [0, width] x [0, height]."""
    x = boxes[..., 0::2].clip(0, width)
    y = boxes[..., 1::2].clip(0, height)
    return _ops(boxes).stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def nms_sorted(boxes: Array, valid: Array, iou_threshold: float) -> Array:
    """Greedy NMS over groups of boxes already sorted by descending score.

    A box is kept when it is valid and no kept box before it in its group overlaps it
    with IoU > iou_threshold: exactly the classic greedy algorithm. It is computed as the
    fixed point of keep_i = valid_i and not any_{j<i}(keep_j and iou_ji > t) (Cluster-NMS,
    Zheng et al. 2020). Entry i is final after i rounds, and a round that changes nothing
    is the unique solution, so the loop ends early, usually after a few rounds, with no
    data-dependent shapes.

    Args:
        boxes: [G, K, 4] xyxy, each group sorted by descending score.
        valid: [G, K] bool, False for padding or boxes under the score threshold.
    Returns:
        [G, K] bool keep mask.
    """
    if boxes.shape[-2] == 0:
        return valid.copy() if isinstance(valid, np.ndarray) else valid.clone()
    xp = _ops(boxes)
    over = box_iou(boxes, boxes) > iou_threshold  # [G, K, K]
    over = xp.triu(over, 1) & valid[:, :, None]  # j suppresses i only if j < i
    keep = valid
    for _ in range(boxes.shape[-2]):
        suppressed = (over & keep[:, :, None]).any(1)
        new_keep = valid & ~suppressed
        if xp.equal(new_keep, keep):
            break
        keep = new_keep
    return keep & valid  # a new array even when the loop changed nothing


def nms(boxes: Array, scores: Array, iou_threshold: float) -> Array:
    """Greedy NMS for one class, like torchvision.ops.nms.

    Args:
        boxes: [N, 4] xyxy.
        scores: [N].
    Returns:
        int64 indices of the kept boxes, by descending score (ties keep input order).
    """
    xp = _ops(boxes)
    order = xp.argsort(scores, descending=True)
    valid = xp.bools((1, order.shape[0]), boxes, True)
    keep = nms_sorted(boxes[order][None], valid, iou_threshold)[0]
    return order[keep]


def batched_nms(boxes: Array, scores: Array, labels: Array, iou_threshold: float) -> Array:
    """Greedy NMS run independently per label, like torchvision.ops.batched_nms.

    Args:
        boxes: [N, 4] xyxy; scores: [N]; labels: [N] int.
    Returns:
        int64 indices of the kept boxes, by descending score (ties keep input order).
    """
    xp = _ops(boxes)
    n = scores.shape[0]
    if n == 0:
        return xp.empty_index(boxes)
    # Group by label, by descending score inside a group, into a padded [G, K] layout.
    order = xp.argsort(scores, descending=True)
    order = order[xp.argsort(labels[order])]
    _, counts = xp.group_sizes(labels[order])
    g, k = counts.shape[0], int(counts.max())
    starts = xp.cumsum(counts, 0) - counts
    group = xp.repeat(xp.arange(g, boxes), counts)
    slot = xp.arange(n, boxes) - starts[group]
    padded = xp.zeros((g, k, 4), boxes)
    padded[group, slot] = boxes[order]
    valid = xp.bools((g, k), boxes, False)
    valid[group, slot] = True
    keep = nms_sorted(padded, valid, iou_threshold)[group, slot]
    kept = order[keep]
    return kept[xp.argsort(scores[kept], descending=True)]
