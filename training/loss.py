"""SSD's MultiBox loss with hard negative mining."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LossParts(NamedTuple):
    """The loss and its parts, each already divided by the number of positives N."""

    total: Tensor
    localization: Tensor
    confidence: Tensor
    num_positives: Tensor


def hard_negative_mask(ce: Tensor, positives: Tensor, neg_pos_ratio: float) -> Tensor:
    """Chooses the hardest negatives, at most `neg_pos_ratio` per positive in each image.

    Args:
        ce: [B, N] per-box classification loss (used only for ranking).
        positives: [B, N] bool.
    Returns:
        [B, N] bool mask of the chosen negatives: in each image the
        min(ratio * positives, negatives available) highest-loss negatives.
    """
    num_pos = positives.sum(dim=1, keepdim=True)
    num_neg = torch.minimum((num_pos * neg_pos_ratio).floor().long(), positives.shape[1] - num_pos)
    ranking = ce.detach().masked_fill(positives, -torch.inf)
    order = ranking.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)
    return rank < num_neg


def partial_negative_loss(conf: Tensor, unlabeled: Tensor) -> Tensor:
    """Confidence loss of an unmatched default box in an image whose dataset does not label
    every class: -log of the summed softmax probability of "background or a class this
    image's dataset does not label". An unlabeled class is then never pushed down there
    (its gradient is <= 0), while the labeled ones are, as by the usual background loss.

    Args:
        conf: [B, N, C] class logits, background at 0.
        unlabeled: [B, C] bool, True for the classes the image's dataset does not label
            (column 0, background, is ignored: it is always in the set).
    Returns:
        [B, N] the loss of each box taken as a negative.
    """
    allowed = unlabeled.clone()
    allowed[:, 0] = True
    kept = conf.masked_fill(~allowed[:, None, :], -torch.inf)
    return torch.logsumexp(conf, dim=2) - torch.logsumexp(kept, dim=2)


class MultiBoxLoss(nn.Module):
    """L = (L_conf + alpha * L_loc) / N, the objective of the SSD paper (eq. 1).

    L_loc is smooth L1 (beta 1) over the (cx, cy, w, h) offsets of the positives; L_conf is
    softmax cross-entropy over the positives and the hardest negatives, at most
    `neg_pos_ratio` negatives per positive; N is the number of positives in the batch.
    With N = 0 the loss is 0 (and still differentiable), never NaN.

    Partial labels: with `unlabeled` given, the negatives of an image whose dataset does
    not label some classes are scored with partial_negative_loss (and ranked by it for
    the mining); its positives and every fully labeled image are scored exactly as above.

    Args:
        alpha: weight of the localization term.
        neg_pos_ratio: negatives kept per positive.
    """

    def __init__(self, alpha: float = 1.0, neg_pos_ratio: float = 3.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.neg_pos_ratio = float(neg_pos_ratio)

    def forward(
        self,
        loc: Tensor,
        conf: Tensor,
        loc_targets: Tensor,
        labels: Tensor,
        unlabeled: Tensor | None = None,
    ) -> LossParts:
        """
        Args:
            loc: [B, N, 4] predicted offsets.
            conf: [B, N, C] class logits, background at 0.
            loc_targets: [B, N, 4] encoded targets (see encode_targets).
            labels: [B, N] int64 target classes, 0 for background.
            unlabeled: [B, C] bool, True for the classes an image's dataset does not label;
                None: every image labels every class.
        """
        positives = labels > 0
        num_pos = positives.sum()
        ce = F.cross_entropy(conf.flatten(0, 1), labels.flatten(), reduction="none")
        ce = ce.view_as(labels)
        if unlabeled is not None and bool(unlabeled[:, 1:].any()):
            partial_image = unlabeled[:, 1:].any(dim=1, keepdim=True)  # [B, 1]
            negative_loss = partial_negative_loss(conf, unlabeled)
            ce = torch.where(positives | ~partial_image, ce, negative_loss)
        negatives = hard_negative_mask(ce, positives, self.neg_pos_ratio)
        conf_loss = ce[positives | negatives].sum()
        loc_loss = F.smooth_l1_loss(
            loc[positives], loc_targets[positives], beta=1.0, reduction="sum"
        )
        denom = num_pos.clamp(min=1).to(loc.dtype)
        loc_loss = loc_loss / denom
        conf_loss = conf_loss / denom
        return LossParts(conf_loss + self.alpha * loc_loss, loc_loss, conf_loss, num_pos)
