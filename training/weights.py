"""Self-describing weights files: safetensors tensors plus the ModelSpec as metadata.

`load_detector(path)` rebuilds the exact detector from a file. Files are written
atomically (temporary file, fsync, rename), so an interrupted save never leaves a
truncated file in place of a good one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from training.errors import ConfigError, WeightsError
from training.fileio import atomic_write
from training.model import SSD
from training.spec import ModelSpec

FORMAT_NAME = "ssd300-detector"
FORMAT_VERSION = "1"


def save_detector(model: SSD, path: str | Path) -> Path:
    """Writes the model's weights and spec to a .safetensors file; returns the path."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "spec": model.spec.to_json(),
    }
    try:
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    except SafetensorError as e:  # safetensors' own error for a failed write (a full disk)
        raise WeightsError(f"{path}: the weights could not be written ({e})") from None
    return Path(path)


def read_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec stored in a weights file, without loading the tensors."""
    with _open(path) as f:
        return _spec_from_metadata(path, f.metadata())


def load_detector(
    path: str | Path, num_classes: int | None = None, device: str | torch.device = "cpu"
) -> SSD:
    """Rebuilds the detector stored in `path` (in eval mode).

    Args:
        num_classes: if given, the number of classes (with background) the caller expects;
            a file made for another count is refused.
    """
    with _open(path) as f:
        spec = _spec_from_metadata(path, f.metadata())
        if num_classes is not None and num_classes != spec.num_classes:
            raise WeightsError(
                f"{path}: has {spec.num_classes} classes (with background), expected {num_classes}"
            )
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = SSD(spec)
    load_state(model, state, str(path))
    return model.to(device).eval()


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with a one-line error naming what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
    if problems:
        raise WeightsError(f"{source}: tensors do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state)


def _open(path: str | Path):
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        return safe_open(str(p), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{p}: not a readable safetensors weights file ({e})") from None


def _spec_from_metadata(path: str | Path, meta: dict[str, str] | None) -> ModelSpec:
    meta = meta or {}
    if meta.get("format") != FORMAT_NAME:
        raise WeightsError(
            f"{path}: a safetensors file but not an SSD300 weights file of this project "
            "(no detector metadata); convert checkpoints with `main.py import`"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{path}: weights format version {meta.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    try:
        return ModelSpec.from_json(meta.get("spec", ""))
    except ConfigError as e:
        raise WeightsError(f"{path}: {e}") from None
