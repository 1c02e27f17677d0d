import torch

from tests.training.test_boxes import brute_force_nms
from training.boxes import cxcywh_to_xyxy
from training.coder import BoxCoder
from training.postprocess import PostProcessor
from training.priors import preset


def reference(loc, conf, priors, score_thr, nms_thr, top_k, cand):
    """Per class: threshold, best `cand`, greedy NMS; then best top_k overall."""
    boxes = cxcywh_to_xyxy(BoxCoder().decode(loc, priors)).clamp(0, 1)
    probs = conf.softmax(-1)
    dets = []
    for c in range(1, conf.shape[-1]):
        s = probs[:, c]
        idx = [
            i for i in s.argsort(descending=True, stable=True).tolist()[:cand] if s[i] > score_thr
        ]
        kept = brute_force_nms(boxes[idx].tolist(), s[idx].tolist(), nms_thr)
        dets += [(float(s[idx[k]]), c, idx[k]) for k in kept]
    dets.sort(key=lambda d: -d[0])
    return dets[:top_k], boxes


def test_postprocessing_agrees_with_a_brute_force_reference():
    priors = torch.from_numpy(preset("voc").generate())
    g = torch.Generator().manual_seed(0)
    for trial in range(4):
        loc = torch.randn(2, len(priors), 4, generator=g) * 0.5
        conf = torch.randn(2, len(priors), 4, generator=g) * 3
        post = PostProcessor(
            score_threshold=0.3,
            nms_threshold=0.45,
            top_k=50,
            candidates_per_class=100 + 100 * trial,
        )
        out = post(loc, conf, priors)
        for i in range(2):
            ref, boxes = reference(
                loc[i], conf[i], priors, 0.3, 0.45, 50, post.candidates_per_class
            )
            assert out[i].labels.tolist() == [d[1] for d in ref]
            torch.testing.assert_close(out[i].scores, torch.tensor([d[0] for d in ref]))
            torch.testing.assert_close(out[i].boxes, boxes[[d[2] for d in ref]])


def test_a_confident_box_comes_out_decoded_and_duplicates_are_suppressed():
    priors = torch.from_numpy(preset("voc").generate())
    n, t = len(priors), 5000
    coder = BoxCoder()
    loc = torch.zeros(1, n, 4)
    loc[0, t] = torch.tensor([1.0, -0.5, 0.3, 0.2])
    # default box t + 1 predicts exactly the box of t, with a lower score
    loc[0, t + 1] = coder.encode(coder.decode(loc[0, t], priors[t]), priors[t + 1])
    conf = torch.zeros(1, n, 3)
    conf[0, :, 0] = 10.0  # background everywhere except at t and t + 1
    conf[0, t, 0] = conf[0, t + 1, 0] = 0.0
    conf[0, t, 2], conf[0, t + 1, 2] = 10.0, 9.0
    det = PostProcessor(score_threshold=0.5)(loc, conf, priors)[0]
    assert det.labels.tolist() == [2]
    expected = cxcywh_to_xyxy(coder.decode(loc[0, t], priors[t])).clamp(0, 1)
    torch.testing.assert_close(det.boxes[0], expected)
    assert det.scores[0] > 0.99


def test_empty_when_nothing_passes_the_threshold():
    priors = torch.from_numpy(preset("voc").generate())
    conf = torch.zeros(1, len(priors), 21)
    conf[..., 0] = 20
    det = PostProcessor()(torch.zeros(1, len(priors), 4), conf, priors)[0]
    assert det.boxes.shape == (0, 4)
    assert det.scores.numel() == 0
    assert det.labels.numel() == 0
