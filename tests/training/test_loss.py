import torch
import torch.nn.functional as F

from training.coder import BoxCoder
from training.loss import MultiBoxLoss, hard_negative_mask
from training.matcher import SSDMatcher, encode_targets
from training.priors import preset


def make_batch(b=2, n=50, c=5, pos_per_image=(3, 0), seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, n, 4, generator=g, requires_grad=True)
    conf = torch.randn(b, n, c, generator=g, requires_grad=True)
    loc_t = torch.randn(b, n, 4, generator=g)
    labels = torch.zeros(b, n, dtype=torch.long)
    for i, k in enumerate(pos_per_image):
        labels[i, :k] = torch.randint(1, c, (k,), generator=g)
    return loc, conf, loc_t, labels


def test_negatives_are_three_per_positive_or_all_available():
    ce = torch.rand(3, 10)
    positives = torch.zeros(3, 10, dtype=torch.bool)
    positives[0, :1] = True  # 1 positive -> 3 negatives
    positives[1, :4] = True  # 4 positives -> min(12, 6) = 6 negatives
    mask = hard_negative_mask(ce, positives, 3.0)  # image 2: no positive -> no negative
    assert mask.sum(1).tolist() == [3, 6, 0]
    assert not (mask & positives).any()
    # the chosen ones are the highest-loss negatives
    neg_ce = ce[0].masked_fill(positives[0], -1)
    assert set(mask[0].nonzero().flatten().tolist()) == set(neg_ce.topk(3).indices.tolist())


def test_loss_equals_the_paper_formula():
    loc, conf, loc_t, labels = make_batch(pos_per_image=(3, 2))
    out = MultiBoxLoss(alpha=1.0)(loc, conf, loc_t, labels)
    expected_l = expected_c = 0.0
    for i in range(2):
        pos = labels[i] > 0
        expected_l += F.smooth_l1_loss(loc[i][pos], loc_t[i][pos], reduction="sum")
        ce = F.cross_entropy(conf[i], labels[i], reduction="none")
        neg_ce = ce[~pos].sort(descending=True).values[: 3 * int(pos.sum())]
        expected_c += ce[pos].sum() + neg_ce.sum()
    n = int((labels > 0).sum())
    torch.testing.assert_close(out.localization, expected_l / n)
    torch.testing.assert_close(out.confidence, expected_c / n)
    torch.testing.assert_close(out.total, (expected_c + expected_l) / n)
    alpha2 = MultiBoxLoss(alpha=2.0)(loc, conf, loc_t, labels)
    torch.testing.assert_close(alpha2.total, (expected_c + 2 * expected_l) / n)


def test_no_positives_gives_zero_and_still_backpropagates():
    loc, conf, loc_t, labels = make_batch(pos_per_image=(0, 0))
    out = MultiBoxLoss()(loc, conf, loc_t, labels)
    assert out.total.item() == 0.0
    assert int(out.num_positives) == 0
    out.total.backward()
    assert torch.isfinite(loc.grad).all()
    assert torch.isfinite(conf.grad).all()


def test_gradients_flow_to_both_heads():
    loc, conf, loc_t, labels = make_batch(pos_per_image=(4, 1))
    MultiBoxLoss()(loc, conf, loc_t, labels).total.backward()
    assert loc.grad.abs().sum() > 0
    assert conf.grad.abs().sum() > 0
    # only positives get a localization gradient
    assert loc.grad[labels == 0].abs().sum() == 0


def test_degenerate_truths_give_a_finite_loss():
    priors = torch.from_numpy(preset("voc").generate())
    gt = torch.tensor([[[0.2, 0.2, 0.2, 0.6], [0.3, 0.3, 0.6, 0.6], [0.5, 0.5, 0.5, 0.5]]])
    labels = torch.tensor([[1, 2, 3]])
    loc_t, lab = encode_targets(
        SSDMatcher(), BoxCoder(), gt, labels, torch.ones(1, 3, dtype=torch.bool), priors
    )
    assert torch.isfinite(loc_t).all()
    assert set(lab.unique().tolist()) == {0, 2}
    loc = torch.zeros(1, len(priors), 4, requires_grad=True)
    conf = torch.zeros(1, len(priors), 4, requires_grad=True)
    out = MultiBoxLoss()(loc, conf, loc_t, lab)
    out.total.backward()
    assert torch.isfinite(out.total)
    assert torch.isfinite(loc.grad).all()
