import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from training.datasets import DetectionData, Sample, load_dataset
from training.evaluate import ImageDetections, coco_evaluate, voc_ap, voc_evaluate


def sample(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    diff = np.zeros(n, bool) if difficult is None else np.asarray(difficult, bool)
    return Sample(Path("x.jpg"), boxes, np.asarray(labels, np.int64), diff, 100, 100)


def dets(boxes, scores, labels):
    return ImageDetections(
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(labels)
    )


A = [0.1, 0.1, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]
FAR = [0.0, 0.6, 0.1, 0.7]


def test_ap_on_a_hand_made_curve():
    # Two objects; detections by score: hit, miss, hit.
    data = DetectionData([sample([A, B], [1, 1])], ["thing"])
    r = voc_evaluate([dets([A, FAR, B], [0.9, 0.8, 0.7], [1, 1, 1])], data)
    c = r["per_class"][0]
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert c["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert c["ap_07"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert r["map"] == pytest.approx(c["ap"])


def test_perfect_and_empty_detections():
    data = DetectionData([sample([A], [1]), sample([B], [2])], ["a", "b"])
    perfect = voc_evaluate([dets([A], [1.0], [1]), dets([B], [1.0], [2])], data)
    assert perfect["map"] == 1.0
    assert perfect["map_07"] == 1.0
    nothing = voc_evaluate([dets([], [], []), dets([], [], [])], data)
    assert nothing["map"] == 0.0


def test_duplicates_are_false_positives():
    data = DetectionData([sample([A], [1])], ["a"])
    r = voc_evaluate([dets([A, A], [0.9, 0.8], [1, 1])], data)
    # hit then duplicate: precision 1 then 1/2 at recall 1 -> AP 1 (the envelope), but the
    # duplicate ranked first costs precision:
    assert r["map"] == pytest.approx(1.0)
    worse = voc_evaluate([dets([FAR, A, A], [0.95, 0.9, 0.8], [1, 1, 1])], data)
    assert worse["map"] == pytest.approx(0.5)


def test_difficult_objects_are_ignored():
    data = DetectionData([sample([A, B], [1, 1], difficult=[False, True])], ["a"])
    # Hitting the difficult one is neither right nor wrong; it does not count in recall.
    r = voc_evaluate([dets([B, A], [0.9, 0.8], [1, 1])], data)
    c = r["per_class"][0]
    assert c["ground_truths"] == 1
    assert c["ap"] == pytest.approx(1.0)
    # Missing it costs nothing either.
    assert voc_evaluate([dets([A], [0.9], [1])], data)["map"] == pytest.approx(1.0)


def test_iou_threshold_is_strict_and_classes_are_separate():
    data = DetectionData([sample([[0, 0, 1, 1]], [1])], ["a", "b"])
    half = [0, 0, 0.5, 1]  # IoU exactly 0.5: not a hit, as in the devkit (ovmax > 0.5)
    assert voc_evaluate([dets([half], [0.9], [1])], data)["map"] == 0.0
    r = voc_evaluate([dets([[0, 0, 1, 1]], [0.9], [2])], data)  # right box, wrong class
    assert r["per_class"][0]["ap"] == 0.0
    assert np.isnan(r["per_class"][1]["ap"])  # no objects of class b: left out of the mean
    assert r["map"] == 0.0


def test_voc_ap_11_point_matches_the_devkit_definition():
    rec = np.array([0.2, 0.4, 0.4, 0.8])
    prec = np.array([1.0, 0.8, 0.6, 0.5])
    # max precision at recall >= t for t = 0, 0.1, ..., 1.0
    expected = np.mean([1.0, 1.0, 1.0, 0.8, 0.8, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(expected)


def test_coco_path_agrees_with_pycocotools_on_real_annotations(shared_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = shared_data / "coco128" / "annotations" / "instances_train2017.json"
    data = load_dataset(ann)
    data.samples = data.samples[:24]
    rng = np.random.default_rng(0)
    detections, results = [], []
    for s in data.samples:  # jittered truths, dropped ones and false positives
        keep = rng.random(len(s)) < 0.8
        boxes = np.clip(s.boxes[keep] + rng.normal(0, 0.02, (keep.sum(), 4)), 0, 1)
        labels = s.labels[keep]
        fp = rng.uniform(0, 0.5, (2, 2))
        boxes = np.concatenate([boxes, np.hstack([fp, fp + 0.3])]).astype(np.float32)
        labels = np.concatenate([labels, rng.integers(1, 81, 2)])
        scores = rng.random(len(labels))
        detections.append(ImageDetections(boxes, scores, labels))
        for b, sc, lab in zip(boxes * ([s.width, s.height] * 2), scores, labels):
            results.append(
                {
                    "image_id": s.image_id,
                    "category_id": data.category_ids[lab - 1],
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                    "score": float(sc),
                }
            )
    ours = coco_evaluate(detections, data)
    res_file = tmp_path / "results.json"
    res_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), "bbox")
        ev.params.imgIds = [s.image_id for s in data.samples]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.05 < ours["AP"] < 0.95
    np.testing.assert_allclose(list(ours.values()), ev.stats, atol=1e-9)


def test_coco_path_on_non_coco_data():
    data = DetectionData([sample([A], [1]), sample([B], [2])], ["a", "b"])
    r = coco_evaluate([dets([A], [1.0], [1]), dets([B], [1.0], [2])], data)
    assert r["AP"] == pytest.approx(1.0)
    assert r["AP50"] == pytest.approx(1.0)


def test_operating_points_tell_what_a_threshold_shows():
    from training.evaluate import operating_points

    # class 1: scores 0.9 (right), 0.6 (wrong), 0.3 (right); class 2: 0.8 (right)
    outcomes = [
        (np.array([0.9, 0.6, 0.3]), np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])),
        (np.array([0.8]), np.array([1.0]), np.array([0.0])),
    ]
    points = operating_points(outcomes, num_objects=5, num_images=2, thresholds=(0.5, 0.2, 0.95))
    assert points[0] == {
        "score_threshold": 0.5,
        "precision": 2 / 3,
        "recall": 2 / 5,
        "boxes_per_image": 1.5,
    }
    assert points[1]["precision"] == 3 / 4
    assert points[1]["recall"] == 3 / 5
    assert np.isnan(points[2]["precision"])
    assert points[2]["boxes_per_image"] == 0
