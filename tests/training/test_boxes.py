import torch

from training.boxes import (
    batched_nms,
    box_iou,
    cxcywh_to_xyxy,
    nms,
    xyxy_to_cxcywh,
)


def brute_force_nms(boxes, scores, thr):
    """The textbook loop: take the best remaining box, drop everything overlapping it."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if _iou(boxes[i], boxes[j]) <= thr]
    return keep


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(n, g=None):
    xy = torch.rand(n, 2, generator=g) * 0.8
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.01
    return torch.cat([xy, xy + wh], dim=1)


def test_iou_hand_made():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))
    # zero-area boxes give 0, not NaN
    z = torch.zeros(1, 4)
    assert box_iou(z, z).item() == 0.0


def test_iou_agrees_with_scalar_formula_and_broadcasts():
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(7, g), random_boxes(5, g)
    expected = torch.tensor([[_iou(x.tolist(), y.tolist()) for y in b] for x in a])
    torch.testing.assert_close(box_iou(a, b), expected)
    batched = box_iou(torch.stack([a, a]), b[None])
    assert batched.shape == (2, 7, 5)
    torch.testing.assert_close(batched[1], expected)


def test_conversions_round_trip():
    b = random_boxes(10)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)


def test_nms_agrees_with_brute_force_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(0, 120, (1,), generator=g))
        boxes = random_boxes(n, g)
        scores = torch.rand(n, generator=g)
        if trial % 5 == 0 and n:  # ties must be broken by input order
            scores = (scores * 4).round() / 4
        thr = [0.3, 0.45, 0.5, 0.7][trial % 4]
        got = nms(boxes, scores, thr).tolist()
        assert got == brute_force_nms(boxes.tolist(), scores.tolist(), thr), trial


def test_batched_nms_agrees_with_per_class_brute_force():
    g = torch.Generator().manual_seed(3)
    for _ in range(30):
        n = int(torch.randint(1, 150, (1,), generator=g))
        boxes = random_boxes(n, g)
        scores = torch.rand(n, generator=g)
        labels = torch.randint(0, 5, (n,), generator=g)
        got = batched_nms(boxes, scores, labels, 0.45)
        expected = []
        for c in labels.unique().tolist():
            idx = (labels == c).nonzero().flatten()
            kept = brute_force_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.45)
            expected += idx[kept].tolist()
        assert sorted(got.tolist()) == sorted(expected)
        assert torch.all(scores[got][:-1] >= scores[got][1:])  # by descending score


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([1, 2]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([1, 1]), 0.5).tolist() == [0]
    assert batched_nms(boxes[:0], scores[:0], torch.tensor([], dtype=torch.long), 0.5).numel() == 0


def test_numpy_arrays_get_the_same_results_as_tensors():
    """One implementation for both: the deploy side passes numpy arrays, training tensors."""
    import numpy as np

    from training.boxes import box_area, clip_boxes

    g = torch.Generator().manual_seed(5)
    for trial in range(20):
        n = int(torch.randint(0, 60, (1,), generator=g))
        boxes, scores = random_boxes(n, g), torch.rand(n, generator=g)
        if trial % 4 == 0:
            scores = (scores * 4).round() / 4  # ties
        labels = torch.randint(0, 4, (n,), generator=g)
        b, s, c = boxes.numpy(), scores.numpy(), labels.numpy()
        assert nms(b, s, 0.45).tolist() == nms(boxes, scores, 0.45).tolist()
        expected = batched_nms(boxes, scores, labels, 0.5).tolist()
        assert batched_nms(b, s, c, 0.5).tolist() == expected
        np.testing.assert_allclose(box_iou(b, b[:5]), box_iou(boxes, boxes[:5]).numpy(), atol=1e-6)
        np.testing.assert_allclose(xyxy_to_cxcywh(b), xyxy_to_cxcywh(boxes).numpy(), atol=1e-6)
        np.testing.assert_allclose(cxcywh_to_xyxy(b), cxcywh_to_xyxy(boxes).numpy(), atol=1e-6)
        np.testing.assert_allclose(box_area(b), box_area(boxes).numpy(), atol=1e-6)
        np.testing.assert_allclose(clip_boxes(b * 2), clip_boxes(boxes * 2).numpy())
    assert isinstance(nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5), np.ndarray)
    assert box_iou(np.zeros((1, 4)), np.zeros((1, 4))).tolist() == [[0.0]]  # not NaN
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5).dtype == np.int64
