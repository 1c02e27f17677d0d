"""engine.video.filters: the filter stage shared by the GUI and the video command."""

import numpy as np
import pytest

from engine.runtime.detector import Detections
from engine.video.filters import DetectionFilter, filter_detections
from training.boxes import batched_nms


def test_filters_keep_score_class_and_a_stricter_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32),
                      np.array([1, 1, 1, 2], np.int32), ["a", "a", "a", "b"])  # fmt: skip
    # IoU of the first two is 81/119 = 0.68
    assert len(filter_detections(dets, iou=0.7, model_iou=0.75)) == 4
    assert filter_detections(dets, iou=0.6, model_iou=0.75).scores.tolist() == pytest.approx(
        [0.9, 0.7, 0.6]
    )
    assert filter_detections(dets, score=0.75).names == ["a", "a"]
    assert filter_detections(dets, classes=[2]).names == ["b"]
    assert batched_nms(boxes, dets.scores, dets.class_ids, 0.5).tolist() == [0, 2, 3]
    f = DetectionFilter(score=0.65, iou=0.6, classes=(1,), model_iou=0.75)
    assert f.apply(dets).scores.tolist() == pytest.approx([0.9, 0.7])
