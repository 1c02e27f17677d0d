"""What a detector is, independent of its weights: the metadata of a weights file.

A ModelSpec plus a state dict rebuilds the exact detector (see training.weights).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import ConfigError
from training.priors import SSD300_FEATURE_MAPS, DefaultBoxGenerator
from training.priors import preset as prior_preset

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CLASS_LISTS = {
    "voc": ASSETS / "classes" / "voc.txt",
    "coco": ASSETS / "classes" / "coco.txt",
}
BACKBONE_NAMES = ("vgg16", "vgg16_bn", "mobilenet_v2")

# Input normalization for RGB pixels in 0..255: ImageNet statistics (torchvision's
# classifiers, so also our VGG16 and MobileNetV2 starting points), and Caffe's per-channel
# mean with unit std (the SSD weights of the Caffe release, ssd.pytorch and torchvision's
# ssd300_vgg16, whose (0.48235, 0.45882, 0.40784) x 255 is this mean).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
CAFFE_MEAN = (123.0, 117.0, 104.0)
CAFFE_STD = (1.0, 1.0, 1.0)


def load_class_names(source: str | Sequence[str]) -> list[str]:
    """Foreground class names (background is implicit at index 0).

    `source` is a list of names, 'voc' or 'coco', a text file with one name per line,
    or a comma-separated list.
    """
    if not isinstance(source, str):
        names = [str(n).strip() for n in source]
    elif source in CLASS_LISTS:
        names = CLASS_LISTS[source].read_text(encoding="utf-8").splitlines()
    elif Path(source).is_file():
        try:
            names = Path(source).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read class list {source}: {e}") from None
    elif "," in source:
        names = source.split(",")
    elif source.endswith((".txt", ".names")) or "/" in source:
        raise ConfigError(f"class list file not found: {source}")
    else:
        raise ConfigError(
            f"unknown class list {source!r}: give {' or '.join(CLASS_LISTS)}, a file, or "
            f"comma-separated names (one class: '{source},')"
        )
    names = [n.strip() for n in names if n.strip()]
    return validate_class_names(names)


def validate_class_names(names: Sequence[str]) -> list[str]:
    names = list(names)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError("class names must be non-empty strings")
    if not names:
        raise ConfigError("the class list is empty")
    dupes = sorted({n for n in names if names.count(n) > 1 and n != "N/A"})
    if dupes:
        raise ConfigError(f"duplicate class names: {', '.join(dupes)}")
    if names[0].lower() in ("background", "__background__"):
        raise ConfigError("do not list the background class: index 0 is reserved for it")
    return names


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a detector besides its weights.

    Args:
        backbone: 'vgg16', 'vgg16_bn' or 'mobilenet_v2'.
        class_names: foreground classes; class id i + 1 is class_names[i], 0 is background.
        priors: the default box generator.
        input_size: the square input side in pixels (300 for SSD300).
        mean, std: per-channel normalization of RGB pixels in 0..255.
        variances: the box coder's variances.
        extra: free-form provenance (importer, training command, ...), JSON-safe.
    """

    backbone: str
    class_names: tuple[str, ...]
    priors: DefaultBoxGenerator
    input_size: int = 300
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_NAMES:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONE_NAMES)}"
            )
        object.__setattr__(self, "class_names", tuple(validate_class_names(self.class_names)))
        if self.input_size != 300:
            raise ConfigError(f"only 300x300 input is supported, got {self.input_size}")
        if self.priors.image_size != self.input_size:
            raise ConfigError("the default boxes were made for another input size")
        if self.priors.feature_maps != SSD300_FEATURE_MAPS:
            raise ConfigError(
                f"SSD300 has feature maps {list(SSD300_FEATURE_MAPS)}, "
                f"the default boxes were made for {list(self.priors.feature_maps)}"
            )
        if len(self.variances) != 4 or any(v <= 0 for v in self.variances):
            raise ConfigError(f"variances must be four positive numbers, got {self.variances}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("mean and std need three values each, std positive")

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names) + 1

    def to_json(self) -> str:
        d = {
            "backbone": self.backbone,
            "class_names": list(self.class_names),
            "priors": self.priors.to_dict(),
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "variances": list(self.variances),
            "extra": self.extra,
        }
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            d = json.loads(text)
            if d.get("class_prior"):
                raise ConfigError(
                    f"a model with the ImageNet class prior ({d['class_prior']}), which this "
                    "version no longer runs (removed after it lost on held-out data; see "
                    "assets/models/README.md); use the shipped model or retrain"
                )
            return cls(
                backbone=d["backbone"],
                class_names=tuple(d["class_names"]),
                priors=DefaultBoxGenerator.from_dict(d["priors"]),
                input_size=int(d["input_size"]),
                mean=tuple(float(x) for x in d["mean"]),
                std=tuple(float(x) for x in d["std"]),
                variances=tuple(float(x) for x in d["variances"]),
                extra=dict(d.get("extra") or {}),
            )
        except ConfigError:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
        ) as e:  # JSONDecodeError is a ValueError
            raise ConfigError(f"invalid model description: {e!r}") from None


def make_spec(
    backbone: str = "vgg16",
    classes: str | Sequence[str] = "voc",
    priors: str = "voc",
    clip: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **extra: Any,
) -> ModelSpec:
    """A spec from names: backbone, class list source and prior preset."""
    return ModelSpec(
        backbone=backbone,
        class_names=tuple(load_class_names(classes)),
        priors=prior_preset(priors, clip=clip),
        mean=tuple(mean or IMAGENET_MEAN),
        std=tuple(std or IMAGENET_STD),
        extra=extra,
    )
