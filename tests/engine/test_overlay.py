"""engine.video.overlay: labels that stay readable in busy scenes."""

import numpy as np

from engine.runtime.detector import Detections
from engine.video.overlay import draw_detections, place_labels


def rects(corners, sizes):
    return [(x, y, w, h) for (x, y), (w, h) in zip(corners, sizes)]


def overlaps(a, b) -> bool:
    return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(
        a[1], b[1]
    )


def test_labels_of_a_crowd_never_cover_each_other():
    """Eight people side by side with their tops at one height (a queue, a team photo):
    above the box, inside it, below it, further down: no label covers another."""
    boxes = np.array([[40 + 30 * i, 100, 150 + 30 * i, 400] for i in range(8)], np.float32)
    sizes = [(95.0, 18.0)] * 8
    corners = place_labels(boxes, sizes, 640, 480)
    placed = rects(corners, sizes)
    for i in range(8):
        for j in range(i):
            assert not overlaps(placed[i], placed[j]), (i, j, placed[i], placed[j])
        x, y, w, h = placed[i]
        assert 0 <= x <= 640 - w
        assert 0 <= y <= 480 - h
        assert boxes[i][0] - 1 <= x  # at its own box's left edge (kept in the frame)
    assert corners[0] == (40.0, 82.0)  # the most confident: above its box


def test_a_label_at_the_top_edge_goes_inside_and_one_at_the_bottom_stays_in():
    sizes = [(60.0, 20.0), (60.0, 20.0)]
    corners = place_labels(np.array([[10, 0, 100, 50], [10, 460, 100, 480]]), sizes, 200, 480)
    assert corners[0] == (10.0, 0.0)  # no room above: inside its top edge
    assert corners[1] == (10.0, 440.0)  # above its box


def test_videos_draw_their_labels_where_place_labels_says(monkeypatch):
    import engine.video.overlay as overlay

    seen = []

    def spy(boxes, sizes, width, height):
        corners = place_labels(boxes, sizes, width, height)
        seen.append((sizes, corners))
        return corners

    monkeypatch.setattr(overlay, "place_labels", spy)
    frame = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[40 + 30 * i, 100, 150 + 30 * i, 400] for i in range(6)], np.float32)
    dets = Detections(boxes, np.linspace(0.9, 0.4, 6).astype(np.float32),
                      np.full(6, 15, np.int32), ["person"] * 6)  # fmt: skip
    drawn = draw_detections(frame.copy(), dets)
    ((sizes, corners),) = seen
    placed = rects(corners, sizes)
    assert not any(overlaps(a, b) for i, a in enumerate(placed) for b in placed[:i])
    for x, y, _, _ in placed:  # each label's band is filled where it was placed
        assert drawn[int(y) + 1, int(x) + 1].any()
