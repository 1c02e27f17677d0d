"""The training run's configuration: every option with its default, read from YAML and the
command line by name and checked, and the learning-rate schedule it describes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything a run depends on; a YAML file and the command line set these by name."""

    # One dataset, or several (a list; each 'PATH' or 'PATH:SPLIT'), merged by class name.
    data: str | list[str] = ""
    split: str | None = None
    val_data: str | list[str] | None = None
    val_split: str | None = None
    output: str = "runs/train"
    # The model: a weights file to start from, or a new one (see `main.py create`).
    weights: str | None = None
    backbone: str = "mobilenet_v2"
    classes: str | None = None  # default: the classes of the training data
    priors: str = "voc"
    backbone_weights: str | None = None
    pretrained: bool = True
    # Keep the backbone's ImageNet layers fixed (weights and batch-norm statistics); the
    # extra layers and the heads train. For small data: less to overfit, faster steps.
    freeze_backbone: bool = False
    # Optimization (the paper's SGD).
    epochs: int = 120
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 500
    warmup_factor: float = 1 / 3
    schedule: str = "step"  # 'step' or 'cosine'
    milestones: list[float] = field(default_factory=lambda: [2 / 3, 5 / 6])  # of the epochs
    gamma: float = 0.1
    # Runtime.
    device: str = "auto"
    amp: bool | None = None  # default: on for CUDA
    workers: int = -1  # -1: min(8, CPUs - 1)
    seed: int = 0
    keep_difficult: bool = False
    # Repeat-factor sampling (LVIS): images of classes seen in fewer than this fraction of the
    # images are shown more often per epoch; 0 (default) shows each image once.
    repeat_threshold: float = 0.0
    augment: bool = True  # the paper's augmentation; off: plain resize (for debugging)
    channels_last: bool = True  # NHWC memory: faster convolutions on CPUs and tensor cores
    eval_every: int = 1  # epochs; 0 turns validation off
    checkpoint_minutes: float = 10.0  # also at every epoch end and on Ctrl-C / SIGTERM
    log_every: int = 10  # steps between TensorBoard points
    explode_factor: float = 100.0  # loss over this x its recent median stops the run

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        try:
            d = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping of option: value")
        return cls().updated(d, source=str(path))

    def updated(self, values: dict[str, Any], source: str = "options") -> TrainConfig:
        names = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
        checked = {k: _checked(k, v, names[k].type, source) for k, v in values.items()}
        return dataclasses.replace(self, **checked)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("no training data: give --data (a folder, data.yaml or COCO .json)")
        if self.schedule not in ("step", "cosine"):
            raise ConfigError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("lr must be positive")
        checks = [
            ("workers", self.workers >= -1, "at least 0 (or -1: CPUs - 1, at most 8)"),
            ("warmup_steps", self.warmup_steps >= 0, "at least 0"),
            ("eval_every", self.eval_every >= 0, "at least 0 (0: never)"),
            ("log_every", self.log_every >= 1, "at least 1"),
            ("checkpoint_minutes", self.checkpoint_minutes > 0, "positive"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "at least 0"),
            ("seed", 0 <= self.seed < 2**63, "between 0 and 2**63 - 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}, got {getattr(self, name)}")
        if not 0 <= self.repeat_threshold <= 1:
            raise ConfigError(
                f"repeat threshold must be between 0 (off) and 1, got {self.repeat_threshold}"
            )
        if self.freeze_backbone and not self.weights:
            self._check_freezable()

    def _check_freezable(self) -> None:
        """--freeze-backbone on a new model needs its backbone's ImageNet import."""
        if self.backbone == "vgg16_bn":
            hint = "give --weights (there is no ImageNet import for vgg16_bn)"
        elif self.backbone == "vgg16" and not self.backbone_weights:
            hint = "give --backbone-weights (torchvision's VGG16) or --weights"
        elif not self.pretrained:
            hint = "drop --no-pretrained or give --weights"
        else:
            return
        raise ConfigError(
            f"--freeze-backbone keeps trained backbone weights fixed, but this new "
            f"{self.backbone} model's backbone would be random: {hint}"
        )


def as_option(flag: str, value: Any) -> str:
    """How a value reads on the command line: '--seed 1', '--freeze-backbone', 'no --amp'."""
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def _checked(name: str, value: Any, annotation: str, source: str) -> Any:
    """The value if it fits the field's annotation (ints pass for floats), else ConfigError."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: option {name} needs a value")
    if annotation.startswith("str | list[str]"):  # one text or a list of texts
        ok = isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        )
        kind = "text or a list of texts"
    elif annotation.startswith("list"):
        ok = isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
        kind = "a list of numbers"
    elif annotation.startswith("bool"):
        ok, kind = isinstance(value, bool), "true or false"
    elif annotation.startswith("int"):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif annotation.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        kind = "a number"
        value = float(value) if ok else value
    else:
        ok, kind = isinstance(value, str), "text"
    if not ok:
        raise ConfigError(f"{source}: option {name} must be {kind}, got {value!r}")
    return value


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of a global step: linear warm-up from warmup_factor x lr, then
    step decay (x gamma at each milestone fraction) or a cosine to zero."""
    warm = 1.0
    if step < cfg.warmup_steps:
        a = step / max(cfg.warmup_steps, 1)
        warm = cfg.warmup_factor * (1 - a) + a
    progress = step / max(total_steps, 1)
    if cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    else:
        decay = cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    return cfg.lr * warm * decay
