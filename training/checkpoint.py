"""Training checkpoints: what `last.ckpt` holds, written atomically, and an exact resume
(model, optimizer, AMP scaler, position in the epoch, best mAP and every random state),
refused when the command's options would not continue the same run.

Read with torch.load(weights_only=True): tensors, numbers, strings and lists only.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import torch

from training.config import TrainConfig, as_option
from training.errors import SSDError
from training.fileio import atomic_write

CHECKPOINT_FORMAT = "ssd300-train-checkpoint-1"

# Options that fix which parameters train and what a step and an epoch are: resuming
# with other values would not continue the run (or not load it at all).
RESUME_FIXED = {
    "batch_size": "--batch-size",
    "repeat_threshold": "--repeat-threshold",
    "freeze_backbone": "--freeze-backbone",
    "keep_difficult": "--keep-difficult",
    "seed": "--seed",
}


class TrainingError(SSDError):
    """Training cannot go on (diverged loss, incompatible checkpoint, ...)."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def save_checkpoint(
    path: Path, spec, cfg: TrainConfig, model, optimizer, scaler, position, totals=None
) -> None:
    """Writes the run's state; position = (epoch, step in the epoch, global step, best mAP),
    totals = the run's figures so far ({name: number}: seconds, images, ...). A failed
    write (a full disk) is a TrainingError; the previous checkpoint is kept."""
    epoch, step_in_epoch, global_step, best = position
    state = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_json(),
        "config": json.dumps(dataclasses.asdict(cfg)),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "best_map": best,
        "rng": rng_state(),
        "totals": {k: float(v) for k, v in (totals or {}).items()},
    }
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        # torch's message ends with what failed ("... file write failed")
        reason = reason.strip().splitlines()[-1] if reason.strip() else type(e).__name__
        raise TrainingError(
            f"{path}: the checkpoint could not be written ({reason}); the previous one is kept"
        ) from None


def load_checkpoint(
    path: Path, spec, cfg: TrainConfig, model, optimizer, scaler
) -> tuple[int, int, int, float, dict]:
    """Restores a run's state into model, optimizer, scaler and the random generators;
    returns (epoch, step in the epoch, global step, best mAP, the run's totals so far, {}
    for checkpoints written before they were kept). TrainingError when the file
    is missing or unreadable, or belongs to another model or other fixed options."""
    if not path.is_file():
        raise TrainingError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable checkpoint gets one clear message
        raise TrainingError(f"{path}: unreadable checkpoint ({e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a checkpoint of this trainer")
    if state["spec"] != spec.to_json():
        raise TrainingError(
            f"{path}: the checkpoint's model differs from this run's (other classes, "
            "backbone or default boxes); resume with the options of the original run"
        )
    check_resumed_config(path, json.loads(state["config"]), cfg)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    totals = {k: float(v) for k, v in state.get("totals", {}).items()}
    position = (state["epoch"], state["step_in_epoch"], state["global_step"], state["best_map"])
    return (*position, totals)


def check_resumed_config(path: Path, saved: dict, cfg: TrainConfig) -> None:
    """TrainingError when `cfg` changes an option the saved run fixed (RESUME_FIXED)."""
    defaults = TrainConfig()
    if saved.get("imagenet_prior") or saved.get("backbone_lr_scale", 1.0) != 1.0:
        raise TrainingError(
            f"{path}: the run used the ImageNet class prior or --backbone-lr-scale, which "
            "this version no longer has; start a new run"
        )
    for name, flag in RESUME_FIXED.items():
        was = saved.get(name, getattr(defaults, name))
        now = getattr(cfg, name)
        if was != now:
            raise TrainingError(
                f"{path}: the run was started with {as_option(flag, was)}, this command "
                f"gives {as_option(flag, now)}; resume with the options of the original run"
            )
