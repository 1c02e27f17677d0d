"""The SSD paper's data augmentation, in numpy/OpenCV, reproducible from a seed.

Every transform is a small class called as t(image, boxes, labels, rng) with
    image: a Canvas (or an [H, W, 3] RGB array, which is wrapped in one);
    boxes: float32 [G, 4] xyxy in pixels of the current frame (continuous coordinates:
        pixel i spans [i, i + 1));
    labels: int64 [G];
    rng: numpy.random.Generator (all randomness comes from it);
and returns the new (canvas, boxes, labels). `render()` on the result gives the pixels.

The geometric steps (expand, crop, flip, resize) only compose an affine map on the Canvas;
the pixels are produced once, by a single cv2.warpAffine straight to the output size, so
zooming out 4x never allocates a 4x canvas. Photometric changes are pixel-wise and are
applied to the rendered output, where the expand filler stays the plain mean colour as if
they had been applied first (the paper's order).
"""

from __future__ import annotations

import cv2
import numpy as np

from training.boxes import box_iou


class Canvas:
    """A source image seen through an affine map, rendered on demand.

    Attributes:
        source: uint8 [H, W, 3] RGB.
        matrix: float64 [2, 3], maps frame coordinates to source coordinates (continuous).
        width, height: size of the current frame.
        fill: RGB colour of frame areas outside the source.
    """

    def __init__(self, source: np.ndarray, fill=(123.0, 117.0, 104.0)) -> None:
        self.source = source
        self.height, self.width = source.shape[:2]
        self.matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        self.fill = tuple(float(f) for f in fill)
        self.pixel_ops: list = []

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def then(self, a: float, b: float, c: float, d: float, width: float, height: float):
        """New frame whose point (x, y) is (a x + b, c y + d) of the current frame."""
        step = np.array([[a, 0.0, b], [0.0, c, d], [0.0, 0.0, 1.0]])
        self.matrix = self.matrix @ step
        self.width, self.height = width, height
        return self

    def render(self) -> np.ndarray:
        """float32 [height, width, 3] RGB pixels of the current frame, 0..255."""
        w, h = int(round(self.width)), int(round(self.height))
        m = self.matrix
        # cv2 maps pixel indices (centres at integers): src_i = M dst_i + M*0.5 - 0.5
        shift = m[:, :2] @ [0.5, 0.5] + m[:, 2] - 0.5
        m_idx = np.hstack([m[:, :2], shift[:, None]])
        src = self.source
        out = cv2.warpAffine(
            src,
            m_idx,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=self.fill,
        )
        out = out.astype(np.float32)
        if self.pixel_ops:
            inside = self._source_mask(w, h)
            distorted = out
            for op in self.pixel_ops:
                distorted = op(distorted)
            out = np.where(inside[..., None], distorted, np.float32(self.fill))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _source_mask(self, w: int, h: int) -> np.ndarray:
        """bool [h, w]: frame pixels whose centre maps inside the source image."""
        m = self.matrix
        sh, sw = self.source.shape[:2]
        xs = m[0, 0] * (np.arange(w) + 0.5) + m[0, 2]
        ys = m[1, 1] * (np.arange(h) + 0.5) + m[1, 2]
        return ((ys >= 0) & (ys < sh))[:, None] & ((xs >= 0) & (xs < sw))[None, :]


def _as_canvas(image) -> Canvas:
    if isinstance(image, Canvas):
        return image
    return Canvas(np.ascontiguousarray(image))


class PhotometricDistort:
    """Brightness (+-32), contrast (x0.5..1.5), saturation (x0.5..1.5), hue (+-18 degrees)
    and a random channel order, each with probability 0.5; contrast comes either before or
    after the HSV changes (as in the Caffe release / ssd.pytorch)."""

    def __init__(
        self,
        brightness: float = 32.0,
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue: float = 18.0,
        p: float = 0.5,
    ) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue, self.p = hue, p

    def sample(self, rng: np.random.Generator):
        """The random choices, as a function on float32 RGB pixels."""
        p = self.p
        delta = rng.uniform(-self.brightness, self.brightness) if rng.random() < p else 0.0
        contrast_first = rng.random() < 0.5
        c = rng.uniform(*self.contrast) if rng.random() < p else 1.0
        sat = rng.uniform(*self.saturation) if rng.random() < p else None
        hue = rng.uniform(-self.hue, self.hue) if rng.random() < p else None
        perm = rng.permutation(3) if rng.random() < p else None

        def apply(img: np.ndarray) -> np.ndarray:
            img = img + np.float32(delta)
            if contrast_first:
                img = img * np.float32(c)
            if sat is not None or hue is not None:
                hsv = cv2.cvtColor(np.clip(img, 0, 255) * np.float32(1 / 255), cv2.COLOR_RGB2HSV)
                if sat is not None:
                    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(sat), 0, 1)
                if hue is not None:
                    hsv[..., 0] = (hsv[..., 0] + np.float32(hue)) % 360.0
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255)
            if not contrast_first:
                img = img * np.float32(c)
            if perm is not None:
                img = img[..., perm]
            return np.clip(img, 0, 255)

        return apply

    def __call__(self, image, boxes, labels, rng):
        canvas = _as_canvas(image)
        canvas.pixel_ops.append(self.sample(rng))
        return canvas, boxes, labels


class Expand:
    """Zoom out: with probability p, put the image at a random spot of a canvas up to
    `max_ratio` times larger per side, filled with the mean colour."""

    def __init__(self, max_ratio: float = 4.0, p: float = 0.5) -> None:
        self.max_ratio, self.p = max_ratio, p

    def __call__(self, image, boxes, labels, rng):
        canvas = _as_canvas(image)
        if rng.random() >= self.p:
            return canvas, boxes, labels
        w, h = canvas.width, canvas.height
        ratio = rng.uniform(1.0, self.max_ratio)
        cw, ch = float(int(w * ratio)), float(int(h * ratio))
        left, top = float(int(rng.uniform(0, cw - w))), float(int(rng.uniform(0, ch - h)))
        canvas.then(1, -left, 1, -top, cw, ch)
        return canvas, boxes + np.float32([left, top, left, top]), labels


class RandomIoUCrop:
    """The paper's patch sampling.

    Draws a minimum IoU from `min_ious` (None keeps the whole image), then up to `trials`
    patches with an area of `area` of the image (sides of about 0.3 to 1, as ssd.pytorch and
    torchvision sample) and an aspect ratio (w/h) in `aspect`. A patch is taken when it
    overlaps at least one object whose centre it contains with IoU >= the minimum; the
    objects whose centres fall inside are kept, clipped to it. If no patch works the image
    stays whole.
    """

    def __init__(
        self,
        min_ious=(None, 0.1, 0.3, 0.5, 0.7, 0.9),
        area: tuple[float, float] = (0.1, 1.0),
        aspect: tuple[float, float] = (0.5, 2.0),
        trials: int = 50,
    ) -> None:
        self.min_ious, self.area, self.aspect, self.trials = min_ious, area, aspect, trials

    def sample(self, w: float, h: float, boxes: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        """(rect [4] xyxy, kept-mask [G]) of an accepted patch, or (None, None)."""
        min_iou = self.min_ious[rng.integers(len(self.min_ious))]
        if min_iou is None or len(boxes) == 0:
            return None, None
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        log_lo, log_hi = np.log(self.aspect[0]), np.log(self.aspect[1])
        for _ in range(self.trials):
            area = rng.uniform(*self.area) * w * h
            ratio = np.exp(rng.uniform(log_lo, log_hi))
            pw, ph = np.floor(np.sqrt(area * ratio)), np.floor(np.sqrt(area / ratio))
            if pw > w or ph > h or pw < 1 or ph < 1:
                continue
            x0, y0 = np.floor(rng.uniform(0, w - pw + 1)), np.floor(rng.uniform(0, h - ph + 1))
            rect = np.array([x0, y0, x0 + pw, y0 + ph])
            inside = np.all((centres > rect[:2]) & (centres < rect[2:]), axis=1)
            if inside.any() and box_iou(boxes[inside], rect[None]).max() >= min_iou:
                return rect, inside
        return None, None

    def __call__(self, image, boxes, labels, rng):
        canvas = _as_canvas(image)
        rect, inside = self.sample(canvas.width, canvas.height, boxes, rng)
        if rect is None:
            return canvas, boxes, labels
        x0, y0, x1, y1 = rect
        kept = np.clip(boxes[inside], [x0, y0, x0, y0], [x1, y1, x1, y1]) - [x0, y0, x0, y0]
        canvas.then(1, x0, 1, y0, x1 - x0, y1 - y0)
        return canvas, kept.astype(np.float32), labels[inside]


class HorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, boxes, labels, rng):
        canvas = _as_canvas(image)
        if rng.random() >= self.p:
            return canvas, boxes, labels
        w = canvas.width
        flipped = boxes.copy()
        flipped[:, 0], flipped[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
        canvas.then(-1, w, 1, 0, w, canvas.height)
        return canvas, flipped, labels


class Resize:
    """Resize to size x size (aspect ratio not kept, as in the paper)."""

    def __init__(self, size: int = 300) -> None:
        self.size = size

    def __call__(self, image, boxes, labels, rng=None):
        canvas = _as_canvas(image)
        sx, sy = canvas.width / self.size, canvas.height / self.size
        canvas.then(sx, 0, sy, 0, self.size, self.size)
        resized = np.clip(boxes / np.float32([sx, sy, sx, sy]), 0, self.size)
        return canvas, resized.astype(np.float32), labels


class Compose:
    def __init__(self, *transforms) -> None:
        self.transforms = transforms

    def __call__(self, image, boxes, labels, rng):
        for t in self.transforms:
            image, boxes, labels = t(image, boxes, labels, rng)
        return image, boxes, labels


class SSDAugmentation(Compose):
    """Photometric distortion, expand (zoom out), IoU crop (zoom in), flip, resize."""

    def __init__(self, size: int = 300, max_expand: float = 4.0) -> None:
        super().__init__(
            PhotometricDistort(),
            Expand(max_expand),
            RandomIoUCrop(),
            HorizontalFlip(),
            Resize(size),
        )
