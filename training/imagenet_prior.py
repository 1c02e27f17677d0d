"""ImageNet's classifier as a class prior for SSD300-MobileNetV2 (`train --imagenet-prior`).

MobileNetV2's 10x10x1280 source map is the very feature map its ImageNet classifier pools
and reads with one linear layer. Averaged over a default box instead of the whole image, the
same layer classifies the box into ImageNet's 1000 classes; the layer is linear, so that is
the average of the cells' logits weighted by the area the box covers (`box_pooling`).
Eighteen of the twenty VOC classes are groups of ImageNet classes (dog: the 118 breeds; car:
sports car, cab, jeep, ...); person and diningtable have none (see IMAGENET_GROUPS).

With the prior, the class scores of the default boxes of the 10x10 map and the larger maps
(`PRIOR_TARGETS`: boxes from 0.37 of the image side up) become

    score(class c) = learned(c) + log P_ImageNet(group of c | box)

(a product of experts): ImageNet's softmax summed over each class's group; background gets
the ungrouped rest, and a class without a group (person, diningtable) gets 1: ImageNet
knows nothing of it (or too little), so the prior leaves its score alone. The classifier is
fixed. Training learns the boxes, the small maps, the ungrouped classes' features, and for
the grouped classes on those maps only a bias per default-box shape: their feature weights
there are held at zero (`hold_grouped_weights`), so a handful of training boxes cannot override
ImageNet's view of what a dog looks like. It is a transfer of a classifier's knowledge to a
detector, as LSDA and YOLO9000 do with ImageNet, not more training data.

Two kinds (ModelSpec.class_prior):
- 'imagenet' reads the detector's own 10x10 map. Its features must stay ImageNet's: a frozen
  backbone, or distillation towards ImageNet's network (`ImageNetTeacher`).
- 'imagenet-twin' reads a frozen twin of ImageNet's MobileNetV2 (`ImageNetTwin`). The
  detector's backbone keeps what fine-tuning taught it (person, boxes) while the class
  evidence stays ImageNet's (the shipped file stores it in FP16); the price is a second
  MobileNetV2 pass (1.35 -> 2.04 GMAC at 300x300).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.datasets import CLASS_ALIASES
from training.errors import ConfigError


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


# VOC class -> ImageNet-1k class indices (torchvision's order), names as in ImageNet.
IMAGENET_GROUPS: dict[str, tuple[int, ...]] = {
    "aeroplane": (404, 895, 908),  # airliner, warplane, wing
    "bicycle": (444, 671),  # bicycle-built-for-two, mountain bike
    # cock .. great grey owl, black grouse .. black swan, white stork .. albatross
    "bird": _span(7, 24) + _span(80, 100) + _span(127, 146),
    # canoe, catamaran, container ship, fireboat, gondola, lifeboat, liner, pirate ship,
    # schooner, speedboat, submarine, trimaran, yawl
    "boat": (472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914),
    # beer bottle, pill bottle, pop bottle, water bottle, wine bottle
    "bottle": (440, 720, 737, 898, 907),
    "bus": (654, 779, 874),  # minibus, school bus, trolleybus
    # ambulance, beach wagon, cab, convertible, jeep, limousine, minivan, Model T, pickup,
    # racer, sports car
    "car": (407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817),
    "cat": _span(281, 285),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "chair": (423, 559, 765, 857),  # barber chair, folding chair, rocking chair, throne
    "cow": (345, 346, 347),  # ox, water buffalo, bison
    "dog": _span(151, 268),  # Chihuahua .. Mexican hairless
    # No diningtable: ImageNet's "dining table" (532) is the table alone, while VOC's and
    # COCO's dining tables are mostly set tables seen among their plates and food, which
    # it calls plate, pizza or restaurant. With it as the group, the class's AP50 on
    # coco128's own training images fell from 0.80 to 0.32; without a group the prior
    # leaves its score alone, as it does person's.
    "horse": (339, 603),  # sorrel, horse cart
    "motorbike": (665, 670),  # moped, motor scooter
    "pottedplant": (738,),  # pot (flowerpot)
    "sheep": (348, 349),  # ram, bighorn
    "sofa": (831,),  # studio couch
    # bullet train, electric locomotive, freight car, passenger car, steam locomotive,
    # streetcar
    "train": (466, 547, 565, 705, 820, 829),
    "tvmonitor": (527, 664, 782, 851),  # desktop computer, monitor, screen, television
}
NUM_IMAGENET_CLASSES = 1000
# The source map the classifier reads: MobileNetV2's final 1x1 conv (10x10x1280).
PRIOR_MAP = 2
# The maps whose default boxes get the prior: the source map's and the larger ones (boxes
# from 0.37 of the image side up), which cover enough of the 10x10 map to be classified.
PRIOR_TARGETS = (2, 3, 4, 5)
PRIOR_CHANNELS = 1280


def class_groups(class_names: Sequence[str]) -> dict[int, tuple[int, ...]]:
    """Model class id (1-based; 0 is background) -> ImageNet indices, for the classes that
    have a group under their VOC or COCO name. Background (0) gets every ungrouped index."""
    groups: dict[int, tuple[int, ...]] = {}
    for i, name in enumerate(class_names):
        key = name if name in IMAGENET_GROUPS else CLASS_ALIASES.get(name)
        if key in IMAGENET_GROUPS:
            groups[i + 1] = IMAGENET_GROUPS[key]
    used = {j for g in groups.values() for j in g}
    groups[0] = tuple(j for j in range(NUM_IMAGENET_CLASSES) if j not in used)
    return dict(sorted(groups.items()))


def load_classifier(conv: nn.Conv2d, state: dict[str, Tensor], source: str) -> None:
    """torchvision's MobileNetV2 classifier (`classifier.1`, a linear layer) into a 1x1 conv."""
    try:
        weight, bias = state["classifier.1.weight"], state["classifier.1.bias"]
    except KeyError:
        raise ConfigError(
            f"{source}: no ImageNet classifier (classifier.1.*) for --imagenet-prior"
        ) from None
    with torch.no_grad():
        conv.weight.copy_(weight.view_as(conv.weight))
        conv.bias.copy_(bias)


class ImageNetTwin(nn.Module):
    """A frozen copy of ImageNet's MobileNetV2 up to its final 1x1 conv: normalized images
    [B, 3, 300, 300] -> the 10x10x1280 map its classifier reads. Always in eval mode (its
    batch-norm statistics are ImageNet's) and never trained."""

    def __init__(self) -> None:
        super().__init__()
        from training.backbones import MobileNetV2Backbone

        self.features = MobileNetV2Backbone().features
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def load_imagenet(self, state: dict[str, Tensor], source: str = "ImageNet weights") -> None:
        features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        try:
            self.features.load_state_dict(features)
        except RuntimeError as e:
            raise ConfigError(f"{source}: not torchvision's MobileNetV2 features ({e})") from None

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def box_pooling(boxes: Tensor, size: int, cell: float) -> Tensor:
    """Weights that average a size x size map over each box.

    Args:
        boxes: [A, 4] (cx, cy, w, h), normalized to the image.
        size: the map's side in cells; cell j spans [j * cell, (j + 1) * cell].
        cell: a cell's side, normalized (SSD's step / image size).

    Returns:
        [A, size * size] (cells row-major): the area of each cell inside the box, each row
        summing to 1, so weights @ map.flatten() is the map's mean over the box.
    """
    edges = torch.arange(size + 1, dtype=torch.float64) * cell
    b = boxes.to(torch.float64)

    def overlap(centre: Tensor, side: Tensor) -> Tensor:  # [A] -> [A, size]
        lo = torch.maximum((centre - side / 2)[:, None], edges[:-1])
        hi = torch.minimum((centre + side / 2)[:, None], edges[1:])
        return (hi - lo).clamp(min=0)

    w = (overlap(b[:, 1], b[:, 3])[:, :, None] * overlap(b[:, 0], b[:, 2])[:, None, :]).flatten(1)
    return (w / w.sum(1, keepdim=True)).float()


class ImageNetClassPrior(nn.Module):
    """log P_ImageNet(group of each class) per default box.

    Holds the classifier as a fixed 1x1 convolution (`classifier`, torchvision's
    `classifier.1`) and the class-to-group membership as a buffer (`groups`, [K, 1000]).
    Each default box is classified as ImageNet classifies an image: its logits are those of
    the source map's features averaged over the box (the classifier is linear, so this is
    the average of the cells' logits, weighted by `pool`).

    Args:
        class_names: the model's foreground classes (VOC or COCO names find their group).
        pool: [default boxes, cells of the source map] weights (`box_pooling`), derived
            from the default boxes, so not part of the state dict.
        in_channels: channels of the source map (MobileNetV2: 1280).
        eps: floor of a group probability, so the prior's veto is at most log(eps) (-9.2)
            and stays finite in FP16.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        pool: Tensor,
        in_channels: int = PRIOR_CHANNELS,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.register_buffer("pool", pool, persistent=False)
        groups = class_groups(class_names)
        k = len(class_names) + 1
        # background: the ImageNet classes of no group; a class without a group (person,
        # diningtable) gets all of them, so P = 1 and the prior leaves its score alone
        member = torch.ones(k, NUM_IMAGENET_CLASSES)
        for c, group in groups.items():
            member[c] = 0.0
            member[c, list(group)] = 1.0
        self.register_buffer("groups", member)
        self.classifier = nn.Conv2d(in_channels, NUM_IMAGENET_CLASSES, 1)
        self.classifier.requires_grad_(False)
        self.eps = eps

    def load_imagenet(self, state: dict[str, Tensor], source: str = "ImageNet weights") -> None:
        """Copies torchvision's MobileNetV2 classifier (`classifier.1.*`) into the prior."""
        load_classifier(self.classifier, state, source)

    def forward(self, features: Tensor) -> Tensor:
        """[B, C, H, W] source-map features -> [B, N, K] log-probabilities of the N pooled
        default boxes, in `pool`'s order (SSDHead's: map by map, cells row-major, the boxes
        of a cell together)."""
        logits = self.classifier(features).flatten(2)  # [B, 1000, H*W]
        if logits.shape[2] != self.pool.shape[1]:
            raise ValueError(
                f"the prior pools {self.pool.shape[1]} cells, the map has {logits.shape[2]}"
            )
        boxes = torch.matmul(logits, self.pool.t().to(logits.dtype))  # [B, 1000, N]
        p = torch.softmax(boxes, dim=1)
        logp = torch.log(torch.matmul(self.groups.to(p.dtype), p).clamp(min=self.eps))
        return logp.transpose(1, 2)  # [B, N, K]


def grouped_channels(model, k: int = PRIOR_MAP) -> list[int]:
    """Channels of map k's class convolution that belong to grouped classes (background
    excluded): the ones `hold_grouped_weights` keeps at zero."""
    n = model.num_classes
    ids = [c for c in class_groups(model.spec.class_names) if c != 0]
    anchors = model.head.conf[k].out_channels // n
    return sorted(a * n + c for a in range(anchors) for c in ids)


def hold_grouped_weights(model) -> int:
    """Zeroes the grouped classes' class-convolution weights on the maps with the prior and
    keeps them at zero in training (their gradient is masked; SGD's weight decay of a zero
    is zero). Their biases, and the ungrouped classes' weights, train. Returns the channels
    held."""
    held = 0
    for k in model.head.prior_maps:
        conv = model.head.conf[k]
        rows = grouped_channels(model, k)
        mask = torch.ones(conv.out_channels, 1, 1, 1, device=conv.weight.device)
        mask[rows] = 0.0
        with torch.no_grad():
            conv.weight.mul_(mask)
        conv.weight.register_hook(lambda g, mask=mask: g * mask.to(g.device, g.dtype))
        held += len(rows)
    return held


def with_imagenet_prior(model, imagenet: dict[str, Tensor], kind: str = "imagenet"):
    """The same MobileNetV2 detector with the ImageNet class prior `kind` ('imagenet' or
    'imagenet-twin') added: its weights kept, the classifier (and the twin) from `imagenet`,
    torchvision's MobileNetV2 state dict."""
    import dataclasses

    from training.model import SSD

    if model.spec.backbone != "mobilenet_v2":
        raise ConfigError(f"--imagenet-prior needs a mobilenet_v2 model, not {model.spec.backbone}")
    new = SSD(dataclasses.replace(model.spec, class_prior=kind))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("head.prior.", "prior_twin.")) for k in missing), missing
    new.head.prior.load_imagenet(imagenet)
    if new.prior_twin is not None:
        new.prior_twin.load_imagenet(imagenet)
    return new


class ImageNetTeacher(nn.Module):
    """Learning without Forgetting (Li and Hoiem, 2016) for the prior map: while the
    backbone trains, `loss` is the distillation loss between the ImageNet class scores the
    fixed classifier reads from the student's prior map and those it reads from the original
    ImageNet MobileNetV2 (soft targets at `temperature`, KL x temperature^2, per cell), so
    the features keep ImageNet's meaning and the prior stays valid.

    Args:
        imagenet: torchvision's MobileNetV2 state dict (features.* and classifier.1.*).
        temperature: softening of both distributions (Hinton et al.: 2).
    """

    def __init__(self, imagenet: dict[str, Tensor], temperature: float = 2.0) -> None:
        super().__init__()
        self.backbone = ImageNetTwin()
        self.backbone.load_imagenet(imagenet)
        self.classifier = nn.Conv2d(PRIOR_CHANNELS, NUM_IMAGENET_CLASSES, 1)
        load_classifier(self.classifier, imagenet, "ImageNet weights")
        self.requires_grad_(False)
        self.eval()
        self.temperature = temperature
        self._student: Tensor | None = None
        self._hooked: set[int] = set()

    def train(self, mode: bool = True):
        return super().train(False)  # always the ImageNet network as it was

    def _keep(self, _module, _inputs, outputs) -> None:
        self._student = outputs[PRIOR_MAP]

    def loss(self, model, images: Tensor) -> Tensor:
        """After model(images): the distillation loss of that forward pass's prior map."""
        if id(model) not in self._hooked:
            raise RuntimeError("call watch(model) before its forward pass")
        t = self.temperature
        student = model.head.prior.classifier(self._student)
        with torch.no_grad():
            teacher = self.classifier(self.backbone(model.normalize(images)))
        kl = F.kl_div(
            F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="none"
        )
        return kl.sum(1).mean() * t * t

    def watch(self, model) -> None:
        """Keeps the prior map of every forward pass of `model`'s backbone for `loss`."""
        model.backbone.register_forward_hook(self._keep)
        self._hooked.add(id(model))
