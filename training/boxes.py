"""Box operations in plain torch (no torchvision), on whatever device the tensors live.

Conventions: `xyxy` boxes are (x1, y1, x2, y2) with x1 <= x2, y1 <= y2; `cxcywh` boxes are
(centre x, centre y, width, height). All functions accept any leading batch dimensions
unless their docstring says otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    c, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([c - wh / 2, c + wh / 2], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h)."""
    p1, p2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(p1 + p2) / 2, p2 - p1], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """[..., 4] xyxy -> [...] area; inverted boxes count as 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU.

    Args:
        a: [..., N, 4] xyxy.
        b: [..., M, 4] xyxy (same leading dimensions as `a`, or broadcastable).
    Returns:
        [..., N, M] IoU in [0, 1]; pairs with zero union give 0.
    """
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    w = torch.minimum(ax2[..., :, None], bx2[..., None, :])
    w = (w - torch.maximum(ax1[..., :, None], bx1[..., None, :])).clamp_(min=0)
    h = torch.minimum(ay2[..., :, None], by2[..., None, :])
    h = (h - torch.maximum(ay1[..., :, None], by1[..., None, :])).clamp_(min=0)
    inter = w.mul_(h)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(a.dtype).tiny), 0.0)


def clip_boxes(boxes: Tensor, width: float = 1.0, height: float = 1.0) -> Tensor:
    """Clamp [..., 4] xyxy boxes into [0, width] x [0, height]."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def nms_sorted(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
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
        return valid.clone()
    over = box_iou(boxes, boxes) > iou_threshold  # [G, K, K]
    over = torch.triu(over, diagonal=1) & valid[:, :, None]  # j suppresses i only if j < i
    keep = valid.clone()
    for _ in range(boxes.shape[-2]):
        suppressed = (over & keep[:, :, None]).any(dim=1)
        new_keep = valid & ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS for one class, like torchvision.ops.nms.

    Args:
        boxes: [N, 4] xyxy.
        scores: [N].
    Returns:
        int64 indices of the kept boxes, by descending score (ties keep input order).
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    valid = torch.ones(1, order.numel(), dtype=torch.bool, device=boxes.device)
    keep = nms_sorted(boxes[order][None], valid, iou_threshold)[0]
    return order[keep]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS run independently per label, like torchvision.ops.batched_nms.

    Args:
        boxes: [N, 4] xyxy; scores: [N]; labels: [N] int.
    Returns:
        int64 indices of the kept boxes, by descending score.
    """
    n = scores.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Group by label, by descending score inside a group, into a padded [G, K] layout.
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]
    uniq, counts = torch.unique_consecutive(labels[order], return_counts=True)
    g, k = uniq.numel(), int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(g, device=boxes.device), counts)
    slot = torch.arange(n, device=boxes.device) - starts[group]
    padded = boxes.new_zeros(g, k, 4)
    padded[group, slot] = boxes[order]
    valid = torch.zeros(g, k, dtype=torch.bool, device=boxes.device)
    valid[group, slot] = True
    keep = nms_sorted(padded, valid, iou_threshold)[group, slot]
    kept = order[keep]
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
