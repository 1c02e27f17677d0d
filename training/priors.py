"""Default boxes (priors) of SSD300.

The generator is plain numpy so that code without torch can rebuild the anchors a model
was trained with. Boxes are (cx, cy, w, h), normalized to the image size.

Order (pretrained weights depend on it, and it matches the Caffe release, ssd.pytorch and
torchvision): feature map by feature map; within a map, cells in row-major order (y outer,
x inner); within a cell, aspect ratio 1 at scale s_k, aspect ratio 1 at s'_k = sqrt(s_k *
s_{k+1}), then for each extra ratio a: (w, h) = (s_k sqrt(a), s_k / sqrt(a)) followed by its
reciprocal. With ratios (2,) that is 1, 1', 2, 1/2; with (2, 3): 1, 1', 2, 1/2, 3, 1/3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from training.errors import ConfigError

SSD300_FEATURE_MAPS = (38, 19, 10, 5, 3, 1)
SSD300_ASPECT_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
SSD300_STEPS = (8, 16, 32, 64, 100, 300)
CLIP_MODES = ("none", "cxcywh", "wh")


def paper_scales(s_min: float = 0.2, s_max: float = 0.9, m: int = 6) -> list[float]:
    """Scales s_1..s_{m+1} of the paper's formula s_k = s_min + (s_max - s_min)(k - 1)/(m - 1).

    The paper leaves s_{m+1} (needed for the last s'_k) undefined; the formula applied at
    k = m + 1 gives s_max + (s_max - s_min)/(m - 1), as Caffe's ssd_pascal.py also does.
    Returns m + 1 floats.
    """
    if m < 2:
        raise ConfigError(f"the scale formula needs at least 2 feature maps, got {m}")
    step = (s_max - s_min) / (m - 1)
    return [s_min + step * k for k in range(m + 1)]


@dataclass(frozen=True)
class DefaultBoxGenerator:
    """Generates the SSD default boxes.

    Args:
        min_sizes: per feature map, the side of the ratio-1 box (s_k), as a fraction of the image.
        max_sizes: per feature map, the second scale used for s'_k = sqrt(min_size * max_size).
        feature_maps: side of each (square) feature map.
        aspect_ratios: per feature map, the ratios besides 1; each adds a box and its reciprocal.
        steps: per feature map, the stride in input pixels; centres are
            (i + 0.5) * step / image_size.
            None places centres at (i + 0.5) / feature_map as the paper's formula does.
        image_size: input side in pixels (only used with steps).
        clip: 'none'; 'cxcywh' clamps all four values to [0, 1] as ssd.pytorch does (this
            also pulls the centres of the 10x10 map's last column, at 9.5 * 32 / 300 > 1,
            back to 1); 'wh' clamps only the sizes, as torchvision's DefaultBoxGenerator does.
        preset: name of the preset this came from, for display only.
    """

    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    feature_maps: tuple[int, ...] = SSD300_FEATURE_MAPS
    aspect_ratios: tuple[tuple[float, ...], ...] = SSD300_ASPECT_RATIOS
    steps: tuple[float, ...] | None = None
    image_size: int = 300
    clip: str = "none"
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        m = len(self.feature_maps)
        lengths = {
            "min_sizes": len(self.min_sizes),
            "max_sizes": len(self.max_sizes),
            "aspect_ratios": len(self.aspect_ratios),
        }
        if self.steps is not None:
            lengths["steps"] = len(self.steps)
        bad = {k: n for k, n in lengths.items() if n != m}
        if bad:
            raise ConfigError(f"default boxes: {m} feature maps but {bad}")
        if any(s <= 0 for s in (*self.min_sizes, *self.max_sizes)):
            raise ConfigError("default boxes: sizes must be positive")
        if any(f < 1 for f in self.feature_maps) or self.image_size < 1:
            raise ConfigError("default boxes: feature maps and image size must be positive")
        if self.steps is not None and any(s <= 0 for s in self.steps):
            raise ConfigError("default boxes: steps must be positive")
        if self.clip not in CLIP_MODES:
            raise ConfigError(f"default boxes: clip must be one of {', '.join(CLIP_MODES)}")
        if any(r <= 0 for ratios in self.aspect_ratios for r in ratios):
            raise ConfigError("default boxes: aspect ratios must be positive")

    @property
    def num_boxes_per_location(self) -> list[int]:
        """Boxes per cell of each map: 2 + 2 * len(ratios), e.g. [4, 6, 6, 6, 4, 4]."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    @property
    def num_boxes(self) -> int:
        return sum(f * f * n for f, n in zip(self.feature_maps, self.num_boxes_per_location))

    def cell_sizes(self, k: int) -> list[tuple[float, float]]:
        """(w, h) of the boxes of one cell of map k, in the order they are generated."""
        s_k = self.min_sizes[k]
        s_prime = math.sqrt(s_k * self.max_sizes[k])
        sizes = [(s_k, s_k), (s_prime, s_prime)]
        for ar in self.aspect_ratios[k]:
            r = math.sqrt(ar)
            sizes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
        return sizes

    def generate(self) -> np.ndarray:
        """Returns float32[num_boxes, 4] boxes as (cx, cy, w, h), computed in float64."""
        maps = []
        for k, f in enumerate(self.feature_maps):
            f_k = self.image_size / self.steps[k] if self.steps is not None else f
            centres = (np.arange(f, dtype=np.float64) + 0.5) / f_k
            cy, cx = np.meshgrid(centres, centres, indexing="ij")  # row-major cells
            wh = np.asarray(self.cell_sizes(k), dtype=np.float64)  # [A, 2]
            cells = np.stack([cx.ravel(), cy.ravel()], axis=1)  # [f*f, 2]
            boxes = np.concatenate(
                [
                    np.repeat(cells, len(wh), axis=0),
                    np.tile(wh, (len(cells), 1)),
                ],
                axis=1,
            )
            maps.append(boxes)
        out = np.concatenate(maps, axis=0)
        if self.clip == "cxcywh":
            out = np.clip(out, 0.0, 1.0)
        elif self.clip == "wh":
            out[:, 2:] = np.clip(out[:, 2:], 0.0, 1.0)
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description that `from_dict` turns back into the same generator."""
        return {
            "preset": self.preset,
            "min_sizes": list(self.min_sizes),
            "max_sizes": list(self.max_sizes),
            "feature_maps": list(self.feature_maps),
            "aspect_ratios": [list(r) for r in self.aspect_ratios],
            "steps": None if self.steps is None else list(self.steps),
            "image_size": self.image_size,
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DefaultBoxGenerator:
        try:
            return cls(
                min_sizes=tuple(float(x) for x in d["min_sizes"]),
                max_sizes=tuple(float(x) for x in d["max_sizes"]),
                feature_maps=tuple(int(x) for x in d["feature_maps"]),
                aspect_ratios=tuple(tuple(float(a) for a in r) for r in d["aspect_ratios"]),
                steps=None if d.get("steps") is None else tuple(float(x) for x in d["steps"]),
                image_size=int(d.get("image_size", 300)),
                clip=str(d.get("clip", "none")),
                preset=str(d.get("preset", "custom")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid default box description: {e!r}") from None


def _from_pixels(
    min_px: Sequence[float],
    max_px: Sequence[float],
    preset: str,
    clip: str = "cxcywh",
    image_size: int = 300,
) -> DefaultBoxGenerator:
    return DefaultBoxGenerator(
        min_sizes=tuple(s / image_size for s in min_px),
        max_sizes=tuple(s / image_size for s in max_px),
        steps=SSD300_STEPS,
        image_size=image_size,
        clip=clip,
        preset=preset,
    )


def _paper() -> DefaultBoxGenerator:
    s = paper_scales(0.2, 0.9, 6)
    return DefaultBoxGenerator(
        min_sizes=tuple(s[:-1]),
        max_sizes=tuple(s[1:]),
        steps=None,
        clip="none",
        preset="paper",
    )


# The Caffe release's ssd_pascal.py / ssd_coco.py sizes, which ssd.pytorch copied
# (data/config.py `voc` and `coco`, clipped in (cx, cy, w, h)). torchvision's ssd300_vgg16
# uses the COCO sizes (its scales [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05] times 300) but
# clips only the sizes.
_VOC_PX = ((30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315))
_COCO_PX = ((21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315))
PRESETS = {
    "paper": _paper,
    "voc": lambda: _from_pixels(*_VOC_PX, "voc"),
    "coco": lambda: _from_pixels(*_COCO_PX, "coco"),
    "torchvision": lambda: _from_pixels(*_COCO_PX, "torchvision", clip="wh"),
}


def preset(name: str, clip: str | None = None) -> DefaultBoxGenerator:
    """The generator for a named preset (see PRESETS); `clip` overrides its clipping mode."""
    try:
        gen = PRESETS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown prior preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None
    if clip is not None and clip != gen.clip:
        gen = replace(gen, clip=clip)
    return gen
