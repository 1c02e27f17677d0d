"""SSD300: a backbone, the multibox head and the default boxes, wired together."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.backbones import build_backbone
from training.coder import BoxCoder
from training.postprocess import PostProcessor, TensorDetections
from training.spec import ModelSpec


class SSDHead(nn.Module):
    """One 3x3 conv per source map for offsets and one for class logits.

    Outputs are laid out as the default boxes are: map by map, cells row-major, boxes of
    a cell in generator order (the conv's channels are [box][value]).

    Args:
        in_channels: channels of each source map.
        num_anchors: default boxes per cell of each map.
        num_classes: classes including background.
    """

    def __init__(
        self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError("one anchor count per source map is needed")
        self.num_classes = num_classes
        self.loc = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(in_channels, num_anchors)
        )
        self.conf = nn.ModuleList(
            nn.Conv2d(c, a * num_classes, 3, padding=1) for c, a in zip(in_channels, num_anchors)
        )

    @staticmethod
    def _flatten(x: Tensor, k: int) -> Tensor:
        # [B, A*k, H, W] -> [B, H*W*A, k]
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Source maps -> (loc [B, N, 4], conf [B, N, num_classes])."""
        loc = torch.cat([self._flatten(m(f), 4) for m, f in zip(self.loc, feats)], dim=1)
        conf = [self._flatten(m(f), self.num_classes) for m, f in zip(self.conf, feats)]
        return loc, torch.cat(conf, dim=1)


class SSD(nn.Module):
    """SSD300 detector.

    forward(images) takes float RGB pixels in 0..255, [B, 3, 300, 300], normalizes them with
    the spec's mean/std and returns the raw (loc [B, N, 4], conf [B, N, C]) with N = 8732
    for SSD300. `detect` adds the post-processing.

    Args:
        spec: backbone, classes, default boxes and normalization (see ModelSpec).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = build_backbone(spec.backbone)
        self.head = SSDHead(
            self.backbone.out_channels,
            spec.priors.num_boxes_per_location,
            spec.num_classes,
        )
        # Derived from the spec, so not part of the state dict.
        self.register_buffer("priors", torch.from_numpy(spec.priors.generate()), persistent=False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.coder = BoxCoder(spec.variances)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform convolutions with zero bias (as the Caffe release), BN to identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def normalize(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] RGB 0..255 -> normalized network input."""
        return (images - self.mean) / self.std

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        size = self.spec.input_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(
                f"expected images of shape [B, 3, {size}, {size}], got {list(images.shape)}"
            )
        return self.head(self.backbone(self.normalize(images)))

    def detect_postprocessor(self) -> PostProcessor:
        """The paper's evaluation post-processing (score 0.01, NMS 0.45, 200 per image)."""
        return PostProcessor(self.coder)

    @torch.no_grad()
    def detect(
        self, images: Tensor, postprocessor: PostProcessor | None = None
    ) -> list[TensorDetections]:
        """Detections per image (TensorDetections), boxes normalized to [0, 1] xyxy."""
        loc, conf = self(images)
        return (postprocessor or self.detect_postprocessor())(loc, conf, self.priors)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(model: SSD) -> int:
    """Multiply-accumulates of the convolutions for one input image (hooks on a dry run)."""
    total = 0

    def hook(m: nn.Conv2d, _inp, out: Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total += out[0].numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        size = model.spec.input_size
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=model.priors.device))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
