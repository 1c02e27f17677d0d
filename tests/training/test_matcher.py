import torch

from training.boxes import box_iou, xyxy_to_cxcywh
from training.coder import BoxCoder
from training.matcher import SSDMatcher, encode_targets


def priors_from_xyxy(boxes):
    return xyxy_to_cxcywh(torch.tensor(boxes, dtype=torch.float32))


def match(gts, priors, valid=None):
    gt = torch.tensor(gts, dtype=torch.float32)[None]
    v = torch.ones(gt.shape[:2], dtype=torch.bool) if valid is None else torch.tensor([valid])
    return SSDMatcher(0.5)(gt, v, priors_from_xyxy(priors))[0].tolist()


def test_forced_match_wins_over_threshold():
    priors = [[0, 0, 1, 1], [0.1, 0, 1.1, 1], [5, 5, 6, 6]]
    a = [0, 0, 0.4, 1]  # best prior P0 at IoU 0.4 (< 0.5)
    b = [0.1, 0, 1.1, 1]  # IoU 1 with P1, 0.82 with P0
    assert match([a, b], priors) == [0, 1, -1]


def test_default_box_overlapping_two_truths_goes_to_the_higher_iou():
    c = [0, 0, 0.9, 1]
    d = [0.2, 0, 1, 1]
    priors = [c, d, [0, 0, 1, 1]]  # P0 = C, P1 = D; P2 has IoU 0.9 with C, 0.8 with D
    assert match([c, d], priors) == [0, 1, 0]
    assert match([d, c], priors) == [1, 0, 1]


def test_two_truths_with_the_same_best_default_box():
    priors = [[0, 0, 1, 1], [3, 3, 4, 4]]
    c = [0, 0, 0.9, 1]  # IoU 0.9
    d = [0.2, 0, 1, 1]  # IoU 0.8
    assert match([d, c], priors) == [1, -1]


def test_low_iou_default_boxes_are_background_and_padding_is_ignored():
    priors = [[0, 0, 1, 1], [0, 0, 0.6, 1], [0, 0, 0.4, 1]]
    gt = [[0, 0, 1, 1], [0, 0, 0.6, 1]]
    assert match(gt, priors) == [0, 1, 1]  # P2: IoU 0.67 with the second truth
    assert match(gt, priors, valid=[True, False]) == [0, 0, -1]  # P1 IoU 0.6, P2 0.4


def test_zero_area_truths_are_ignored():
    priors = [[0, 0, 1, 1], [2, 2, 3, 3]]
    assert match([[0.5, 0.5, 0.5, 0.9], [2, 2, 3, 3]], priors) == [-1, 1]


def ssd_pytorch_match(truths, priors_cxcywh, threshold):
    """ssd.pytorch layers/box_utils.py match(), index output only."""
    from training.boxes import cxcywh_to_xyxy

    overlaps = box_iou(truths, cxcywh_to_xyxy(priors_cxcywh))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    best_truth_idx[best_truth_overlap < threshold] = -1
    return best_truth_idx


def test_batched_matching_agrees_with_ssd_pytorch():
    from training.priors import preset

    priors = torch.from_numpy(preset("voc").generate())
    g = torch.Generator().manual_seed(0)
    b, n_gt = 4, 6
    xy = torch.rand(b, n_gt, 2, generator=g) * 0.6
    gt = torch.cat([xy, xy + 0.05 + torch.rand(b, n_gt, 2, generator=g) * 0.35], dim=2)
    valid = torch.ones(b, n_gt, dtype=torch.bool)
    valid[1, 4:] = False
    got = SSDMatcher(0.5)(gt, valid, priors)
    for i in range(b):
        ref = ssd_pytorch_match(gt[i][valid[i]], priors, 0.5)
        assert torch.equal(got[i], ref)


def test_encode_targets_labels_and_offsets():
    priors = priors_from_xyxy([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]])
    gt = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]]])
    labels = torch.tensor([[3, 7]])
    loc_t, lab = encode_targets(
        SSDMatcher(), BoxCoder(), gt, labels, torch.ones(1, 2, dtype=torch.bool), priors
    )
    assert lab.tolist() == [[3, 7, 0]]
    torch.testing.assert_close(loc_t[0, 0], torch.zeros(4))
    decoded = BoxCoder().decode(loc_t[0, 1], priors[1])
    torch.testing.assert_close(decoded, xyxy_to_cxcywh(gt[0, 1]))


def test_equal_claims_on_one_default_box_go_to_the_lowest_index():
    priors = [[0, 0, 1, 1], [3, 3, 4, 4]]
    c = [0, 0, 0.9, 1]
    assert match([c, c], priors) == [0, -1]


def test_truths_overlapping_no_default_box_are_not_forced():
    priors = [[0, 0, 0.1, 0.1], [0.5, 0.5, 1, 1]]
    assert match([[0.2, 0.2, 0.3, 0.3]], priors) == [-1, -1]


def test_batch_without_any_ground_truth():
    priors = priors_from_xyxy([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])
    loc_t, labels = encode_targets(
        SSDMatcher(),
        BoxCoder(),
        torch.zeros(3, 0, 4),
        torch.zeros(3, 0, dtype=torch.long),
        torch.zeros(3, 0, dtype=torch.bool),
        priors,
    )
    assert loc_t.shape == (3, 2, 4)
    assert labels.tolist() == [[0, 0]] * 3
