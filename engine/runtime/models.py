"""Which model a command runs when none is given, and model names.

The shipped default is SSD300-MobileNetV2 for the 20 Pascal VOC classes in assets/models/
(its model card: assets/models/README.md): the ONNX export when it is there (no PyTorch
needed: the deploy path and Jetsons), else the weights file. `-m NAME` also finds a
checkpoint that `main.py weights get NAME` downloaded and converted. Python 3.8, no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.runtime.detector import EngineError
from training.fileio import cache_dir

MODELS_DIR = Path(__file__).resolve().parents[2] / "assets" / "models"
DEFAULT_NAME = "ssd300_mobilenet_v2_voc"
DEFAULT_WEIGHTS = MODELS_DIR / f"{DEFAULT_NAME}.safetensors"
DEFAULT_ONNX = MODELS_DIR / f"{DEFAULT_NAME}.onnx"
MODEL_SUFFIXES = (".onnx", ".safetensors", ".engine", ".plan")


def weights_cache() -> Path:
    """Where `main.py weights get` puts converted checkpoints: $SSD300_CACHE/weights, else
    ~/.cache/ssd300/weights (training.fileio.cache_dir, the one cache rule)."""
    return cache_dir("weights")


def default_model() -> Path:
    """The shipped model: its ONNX, else its weights; EngineError if neither is there."""
    for path in (DEFAULT_ONNX, DEFAULT_WEIGHTS):
        if path.is_file():
            return path
    raise EngineError(
        f"the default model is missing from {MODELS_DIR} (a partial checkout?); pass one "
        "with -m MODEL"
    )


def resolve_model(text: str | Path | None) -> Path:
    """A model file from -m: None is the default model; an existing path is itself; a bare
    name (no folder, no suffix) is the default's name or a downloaded checkpoint
    (`main.py weights get NAME`). Anything else is an EngineError saying what was tried."""
    if text is None:
        return default_model()
    path = Path(text)
    if path.exists():
        return path
    name = str(text)
    if path.suffix not in MODEL_SUFFIXES and "/" not in name and os.sep not in name:
        if name == DEFAULT_NAME:
            return default_model()
        for suffix in (".onnx", ".safetensors"):
            found = weights_cache() / f"{name}{suffix}"
            if found.is_file():
                return found
        raise EngineError(
            f"model not found: {name} is neither a file nor a downloaded checkpoint in "
            f"{weights_cache()} (`main.py weights list` shows them; `main.py weights get "
            f"{name}` downloads one)"
        )
    raise EngineError(f"model not found: {path}")
