"""Backbones of SSD300: each returns the six source feature maps (38, 19, 10, 5, 3, 1).

- `vgg16`: the paper's VGG16 base with reduced fc6/fc7 and L2-normalized conv4_3.
- `vgg16_bn`: the same with batch norm after every convolution, trainable from scratch.
- `mobilenet_v2`: SSD300 on MobileNetV2 for Jetson-class devices. The module layout of
  `features` is torchvision's, so its ImageNet weights load by name.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from training.errors import ConfigError

# (name, out_channels) of each VGG16 stage; "pool" entries are 2x2 max pools.
VGG16_CONVS = [
    ["conv1_1", "conv1_2"],
    ["conv2_1", "conv2_2"],
    ["conv3_1", "conv3_2", "conv3_3"],
    ["conv4_1", "conv4_2", "conv4_3"],
    ["conv5_1", "conv5_2", "conv5_3"],
]
_VGG16_WIDTHS = [64, 128, 256, 512, 512]


class L2Norm(nn.Module):
    """Channel-wise L2 normalization with a learned per-channel scale (ParseNet), init 20.

    Computed in float32 whatever the input dtype: the sum of squares of conv4_3
    overflows FP16.
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        # max(norm, eps), as torchvision's F.normalize: an all-zero pixel gives 0, not 0/0
        # (ssd.pytorch adds eps; the two differ only below 1e-10)
        norm = xf.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=self.eps)
        return (self.weight.float()[None, :, None, None] * xf / norm).to(x.dtype)


class FreezableBackbone(nn.Module):
    """A backbone whose ImageNet-initialized part (`pretrained_parts`) can be frozen.

    Frozen parts keep their weights (no gradients) and their batch-norm statistics: they
    stay in eval mode whatever `train()` is called with, as detectron2's frozen stages do.
    The extra layers after them, and the heads, keep training.
    """

    pretrained_parts: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.frozen = False

    def freeze_pretrained(self) -> int:
        """Freeze the pretrained parts; returns how many parameters were frozen."""
        count = 0
        for part in self.pretrained_parts:
            for p in getattr(self, part).parameters():
                p.requires_grad_(False)
                count += p.numel()
        self.frozen = True
        self.train(self.training)
        return count

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            for part in self.pretrained_parts:
                getattr(self, part).eval()
        return self


def _conv_block(name: str, cin: int, cout: int, bn: bool, **conv_kw) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = [(name, nn.Conv2d(cin, cout, bias=not bn, **conv_kw))]
    if bn:
        layers.append((name.replace("conv", "bn", 1), nn.BatchNorm2d(cout)))
    layers.append((name.replace("conv", "relu", 1), nn.ReLU(inplace=True)))
    return layers


def _extras(cin: int, bn: bool) -> nn.ModuleList:
    """conv8..conv11 of the paper: 1x1 bottleneck then 3x3 (stride 2, or valid) per map."""
    spec = [  # name, in, mid, out, stride, padding
        ("8", cin, 256, 512, 2, 1),
        ("9", 512, 128, 256, 2, 1),
        ("10", 256, 128, 256, 1, 0),
        ("11", 256, 128, 256, 1, 0),
    ]
    blocks = []
    for n, c_in, mid, out, stride, pad in spec:
        layers: list[tuple[str, nn.Module]] = []
        for suffix, a, b, k, s, p in (
            (1, c_in, mid, 1, 1, 0),
            (2, mid, out, 3, stride, pad),
        ):
            layers.append(
                (
                    f"conv{n}_{suffix}",
                    nn.Conv2d(a, b, k, stride=s, padding=p, bias=not bn),
                )
            )
            if bn:
                layers.append((f"bn{n}_{suffix}", nn.BatchNorm2d(b)))
            layers.append((f"relu{n}_{suffix}", nn.ReLU(inplace=True)))
        blocks.append(nn.Sequential(OrderedDict(layers)))
    return nn.ModuleList(blocks)


class VGG16Backbone(FreezableBackbone):
    """VGG16 base as in the paper (and ssd.pytorch / torchvision's ssd300_vgg16).

    conv1_1..conv4_3 (pool3 with ceil mode so 75 -> 38), L2Norm on conv4_3 (38x38x512),
    pool4, conv5_1..conv5_3, pool5 3x3 stride 1, fc6 as a 3x3 conv with 1024 channels and
    dilation 6, fc7 as a 1x1 conv with 1024 channels (19x19x1024), then conv8_2 (10x10x512),
    conv9_2 (5x5x256), conv10_2 (3x3x256), conv11_2 (1x1x256).

    Args:
        batch_norm: BatchNorm after every convolution (the `vgg16_bn` backbone).
    """

    out_channels = (512, 1024, 512, 256, 256, 256)
    # conv1_1 .. conv5_3 and fc6/fc7 come from ImageNet; L2Norm and the extras do not.
    pretrained_parts = ("stage1", "stage2")

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        stage1: list[tuple[str, nn.Module]] = []
        stage2: list[tuple[str, nn.Module]] = []
        cin = 3
        for i, (names, width) in enumerate(zip(VGG16_CONVS, _VGG16_WIDTHS)):
            target = stage1 if i < 4 else stage2
            if i > 0:
                # pool3 uses ceil mode (75 -> 38), as in Caffe's SSD; pool4 follows conv4_3.
                target.append((f"pool{i}", nn.MaxPool2d(2, 2, ceil_mode=(i == 3))))
            for name in names:
                target += _conv_block(name, cin, width, batch_norm, kernel_size=3, padding=1)
                cin = width
        stage2.append(("pool5", nn.MaxPool2d(3, 1, padding=1)))
        stage2 += _conv_block("conv6", 512, 1024, batch_norm, kernel_size=3, padding=6, dilation=6)
        stage2 += _conv_block("conv7", 1024, 1024, batch_norm, kernel_size=1)
        self.stage1 = nn.Sequential(OrderedDict(stage1))  # conv1_1 .. relu4_3
        self.l2norm = L2Norm(512)
        self.stage2 = nn.Sequential(OrderedDict(stage2))  # pool4 .. relu7 (fc7)
        self.extras = _extras(1024, batch_norm)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stage1(x)
        feats = [self.l2norm(x)]
        x = self.stage2(x)
        feats.append(x)
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return feats


def _conv_bn_relu6(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    # torchvision's Conv2dNormActivation layout: 0 conv, 1 bn, 2 relu6.
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block, with torchvision's submodule names (`conv.0`, `conv.1`, ...)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, k=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Backbone(FreezableBackbone):
    """SSD300 sources on MobileNetV2 (width 1.0), ImageNet layout of torchvision.

    Sources: the expansion output of block 7 (38x38x192, stride 8) and of block 14
    (19x19x576, stride 16) - the points where the next block would downsample, as in
    SSDLite - then the final 1x1 conv (10x10x1280), then three extra blocks with batch
    norm and ReLU6 (5x5x512, 3x3x256, 1x1x256).
    """

    out_channels = (192, 576, 1280, 512, 256, 256)
    pretrained_parts = ("features",)
    # t (expansion), c (channels), n (repeats), s (first stride): torchvision's table.
    _SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in self._SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, k=1))
        self.features = nn.Sequential(*layers)
        spec = [(1280, 256, 512, 1), (512, 128, 256, 1), (256, 128, 256, 0)]
        self.extras = nn.ModuleList(
            nn.Sequential(
                _conv_bn_relu6(cin_, mid, k=1),
                nn.Sequential(
                    nn.Conv2d(mid, out, 3, stride=2 if pad else 1, padding=pad, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU6(inplace=True),
                ),
            )
            for cin_, mid, out, pad in spec
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i, block in enumerate(self.features):
            if i in (7, 14):
                expanded = block.conv[0](x)
                feats.append(expanded)
                x = block.conv[1:](expanded)  # no residual: these blocks downsample
            else:
                x = block(x)
        feats.append(x)
        for block in self.extras:
            x = block(x)
            feats.append(x)
        return feats


BACKBONES = {
    "vgg16": lambda: VGG16Backbone(batch_norm=False),
    "vgg16_bn": lambda: VGG16Backbone(batch_norm=True),
    "mobilenet_v2": MobileNetV2Backbone,
}


def build_backbone(name: str) -> nn.Module:
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        ) from None
    return factory()
