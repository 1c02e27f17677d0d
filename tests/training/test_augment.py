import numpy as np
import pytest

from training.augment import (
    Canvas,
    Expand,
    HorizontalFlip,
    PhotometricDistort,
    RandomIoUCrop,
    Resize,
    SSDAugmentation,
)
from training.boxes import box_iou


def random_case(rng, n=4, size=(0.05, 0.3)):
    h, w = rng.integers(40, 200, size=2)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    xy = rng.uniform(0, 0.7, size=(n, 2)) * [w, h]
    wh = rng.uniform(*size, size=(n, 2)) * [w, h]
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).astype(np.float32)
    return img, boxes, np.arange(1, n + 1)


def assert_valid(canvas, boxes, labels):
    assert len(boxes) == len(labels)
    assert boxes.dtype == np.float32
    assert (boxes[:, 2] > boxes[:, 0]).all()
    assert (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes >= 0).all()
    assert (boxes[:, 0::2] <= canvas.width + 1e-3).all()
    assert (boxes[:, 1::2] <= canvas.height + 1e-3).all()


@pytest.mark.parametrize(
    "transform",
    [
        PhotometricDistort(),
        Expand(p=1.0),
        RandomIoUCrop(),
        HorizontalFlip(p=1.0),
        Resize(300),
        SSDAugmentation(),
    ],
    ids=lambda t: type(t).__name__,
)
def test_every_augmentation_keeps_boxes_valid_and_inside(transform):
    rng = np.random.default_rng(0)
    for _ in range(60):
        img, boxes, labels = random_case(rng)
        canvas, b, lab = transform(Canvas(img), boxes, labels, rng)
        assert_valid(canvas, b, lab)
        pixels = canvas.render()
        assert pixels.shape == (int(round(canvas.height)), int(round(canvas.width)), 3)
        assert pixels.min() >= 0
        assert pixels.max() <= 255


def test_crop_respects_its_constraints():
    rng = np.random.default_rng(1)
    for min_iou in (0.1, 0.3, 0.5, 0.7, 0.9):
        crop = RandomIoUCrop(min_ious=(min_iou,))
        taken = 0
        for _ in range(40):
            img, boxes, _ = random_case(rng, n=3, size=(0.1, 0.9))
            h, w = img.shape[:2]
            rect, inside = crop.sample(w, h, boxes, rng)
            if rect is None:
                continue
            taken += 1
            pw, ph = rect[2] - rect[0], rect[3] - rect[1]
            assert rect[0] >= 0
            assert rect[2] <= w
            assert rect[1] >= 0
            assert rect[3] <= h
            assert 0.1 * w * h - 2 * (w + h) <= pw * ph <= w * h
            assert 0.5 - 0.05 <= pw / ph <= 2 + 0.05 or pw < 2 or ph < 2
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            in_rect = np.all((centres > rect[:2]) & (centres < rect[2:]), axis=1)
            assert np.array_equal(inside, in_rect)
            assert box_iou(boxes[inside], rect[None]).max() >= min_iou
        assert taken > 0, min_iou


def test_crop_keeps_centred_boxes_clipped_and_shifted():
    img = np.zeros((100, 100, 3), np.uint8)
    boxes = np.float32([[10, 10, 50, 50], [80, 80, 99, 99]])
    rng = np.random.default_rng(3)
    for _ in range(20):
        canvas, b, lab = RandomIoUCrop(min_ious=(0.1,))(Canvas(img), boxes, np.array([1, 2]), rng)
        x0, y0 = canvas.matrix[0, 2], canvas.matrix[1, 2]
        for box, label in zip(b, lab):
            orig = boxes[label - 1]
            expected = np.clip(
                orig, [x0, y0, x0, y0], [x0 + canvas.width, y0 + canvas.height] * 2
            ) - [x0, y0, x0, y0]
            np.testing.assert_allclose(box, expected, atol=1e-4)


def test_flip_is_exact():
    rng = np.random.default_rng(2)
    img, boxes, labels = random_case(rng)
    canvas, b, _ = HorizontalFlip(p=1.0)(Canvas(img), boxes, labels, rng)
    np.testing.assert_array_equal(canvas.render(), img[:, ::-1].astype(np.float32))
    w = img.shape[1]
    np.testing.assert_array_equal(
        b, np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    )


def test_expand_places_the_image_on_a_mean_filled_canvas():
    rng = np.random.default_rng(4)
    img, boxes, labels = random_case(rng)
    canvas, b, _ = Expand(p=1.0)(Canvas(img, fill=(1, 2, 3)), boxes, labels, rng)
    left, top = int(-canvas.matrix[0, 2]), int(-canvas.matrix[1, 2])
    out = canvas.render()
    h, w = img.shape[:2]
    np.testing.assert_array_equal(out[top : top + h, left : left + w], img.astype(np.float32))
    mask = np.ones(out.shape[:2], bool)
    mask[top : top + h, left : left + w] = False
    assert (out[mask] == [1, 2, 3]).all()
    np.testing.assert_allclose(b, boxes + [left, top, left, top])
    assert canvas.width <= 4 * w
    assert canvas.height <= 4 * h


def test_photometric_changes_only_the_image_not_the_filler():
    rng = np.random.default_rng(5)
    img = np.full((20, 20, 3), 128, np.uint8)
    changed = 0
    for _ in range(10):
        c = Canvas(img, fill=(10, 20, 30))
        c, _, _ = PhotometricDistort(p=1.0)(c, np.zeros((0, 4), np.float32), np.zeros(0), rng)
        c.then(1, -20, 1, -20, 60, 60)  # the image in the middle of a 60x60 frame
        out = c.render()
        np.testing.assert_array_equal(out[:20], np.broadcast_to([10, 20, 30], (20, 60, 3)))
        np.testing.assert_array_equal(out[:, :20], np.broadcast_to([10, 20, 30], (60, 20, 3)))
        middle = out[20:40, 20:40]
        assert (middle == middle[0, 0]).all()  # a flat image stays flat
        changed += not np.array_equal(middle[0, 0], [128, 128, 128])
    assert changed >= 8


def test_reproducible_from_a_seed():
    img, boxes, labels = random_case(np.random.default_rng(0))

    def run(seed):
        c, b, lab = SSDAugmentation()(Canvas(img), boxes, labels, np.random.default_rng(seed))
        return c.render(), b, lab

    a, b = run(7), run(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    outs = [run(s)[0] for s in range(5)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_crop_and_resize_keep_pixels_and_boxes_together():
    """A white box on black: after crop and resize its rendered pixels match its new box."""
    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(30):
        img = np.zeros((120, 160, 3), np.uint8)
        x1, y1 = rng.integers(10, 60), rng.integers(10, 40)
        x2, y2 = x1 + rng.integers(40, 90), y1 + rng.integers(30, 70)
        img[y1:y2, x1:x2] = 255
        boxes = np.float32([[x1, y1, x2, y2]])
        c, b, _ = RandomIoUCrop(min_ious=(0.3,))(Canvas(img), boxes, np.array([1]), rng)
        c, b, _ = Resize(300)(c, b, np.array([1]), rng)
        if len(b) == 0:
            continue
        out = c.render()[..., 0]
        ys, xs = np.nonzero(out > 127)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], b[0], atol=2.5)
        checked += 1
    assert checked > 10
