"""Independent re-implementations of the reference code, written the way the originals are
(module layout, key names, loops), so our code can be checked against them:

- amdegroot/ssd.pytorch: `ssd.py` (vgg, add_extras, multibox, SSD.forward),
  `layers/modules/l2norm.py`, `layers/functions/prior_box.py`;
- torchvision: `models/detection/ssd.py` (SSDFeatureExtractorVGG, SSDHead,
  SSDScoringHead) and `anchor_utils.DefaultBoxGenerator`;
- torchvision's VGG16 classifier layout (`models/vgg.py`).
They are only for tests; none is imported by the product.
"""

from __future__ import annotations

import math
from itertools import product

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- ssd.pytorch

SSDPT_BASE = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
SSDPT_EXTRAS = [256, "S", 512, 128, "S", 256, 128, 256, 128, 256]
SSDPT_MBOX = [4, 6, 6, 6, 4, 4]
SSDPT_VOC = {
    "feature_maps": [38, 19, 10, 5, 3, 1],
    "min_dim": 300,
    "steps": [8, 16, 32, 64, 100, 300],
    "min_sizes": [30, 60, 111, 162, 213, 264],
    "max_sizes": [60, 111, 162, 213, 264, 315],
    "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    "clip": True,
}
SSDPT_COCO = {
    **SSDPT_VOC,
    "min_sizes": [21, 45, 99, 153, 207, 261],
    "max_sizes": [45, 99, 153, 207, 261, 315],
}


def ssdpt_priors(cfg: dict) -> torch.Tensor:
    """ssd.pytorch PriorBox.forward."""
    mean = []
    for k, f in enumerate(cfg["feature_maps"]):
        for i, j in product(range(f), repeat=2):
            f_k = cfg["min_dim"] / cfg["steps"][k]
            cx = (j + 0.5) / f_k
            cy = (i + 0.5) / f_k
            s_k = cfg["min_sizes"][k] / cfg["min_dim"]
            mean += [cx, cy, s_k, s_k]
            s_k_prime = math.sqrt(s_k * (cfg["max_sizes"][k] / cfg["min_dim"]))
            mean += [cx, cy, s_k_prime, s_k_prime]
            for ar in cfg["aspect_ratios"][k]:
                mean += [cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)]
                mean += [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]
    output = torch.Tensor(mean).view(-1, 4)
    if cfg["clip"]:
        output.clamp_(max=1, min=0)
    return output


def _ssdpt_vgg(cfg, i):
    layers = []
    in_channels = i
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        elif v == "C":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    pool5 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6)
    conv7 = nn.Conv2d(1024, 1024, kernel_size=1)
    layers += [pool5, conv6, nn.ReLU(inplace=True), conv7, nn.ReLU(inplace=True)]
    return layers


def _ssdpt_extras(cfg, i):
    layers = []
    in_channels = i
    flag = False
    for k, v in enumerate(cfg):
        if in_channels != "S":
            if v == "S":
                layers += [
                    nn.Conv2d(
                        in_channels, cfg[k + 1], kernel_size=(1, 3)[flag], stride=2, padding=1
                    )
                ]
            else:
                layers += [nn.Conv2d(in_channels, v, kernel_size=(1, 3)[flag])]
            flag = not flag
        in_channels = v
    return layers


class SSDPTL2Norm(nn.Module):
    def __init__(self, n_channels, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.Tensor(n_channels))
        self.eps = 1e-10
        nn.init.constant_(self.weight, scale)

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        x = torch.div(x, norm)
        return self.weight.unsqueeze(0).unsqueeze(2).unsqueeze(3).expand_as(x) * x


class SSDPyTorch(nn.Module):
    """ssd.pytorch's SSD in 'test'-free form: forward returns (loc, conf) as in 'train'."""

    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.num_classes = num_classes
        self.vgg = nn.ModuleList(_ssdpt_vgg(SSDPT_BASE, 3))
        self.L2Norm = SSDPTL2Norm(512, 20)
        self.extras = nn.ModuleList(_ssdpt_extras(SSDPT_EXTRAS, 1024))
        loc_layers, conf_layers = [], []
        for k, v in enumerate([21, -2]):
            c = self.vgg[v].out_channels
            loc_layers += [nn.Conv2d(c, SSDPT_MBOX[k] * 4, kernel_size=3, padding=1)]
            conf_layers += [nn.Conv2d(c, SSDPT_MBOX[k] * num_classes, kernel_size=3, padding=1)]
        for k, v in enumerate(self.extras[1::2], 2):
            loc_layers += [nn.Conv2d(v.out_channels, SSDPT_MBOX[k] * 4, kernel_size=3, padding=1)]
            conf_layers += [
                nn.Conv2d(v.out_channels, SSDPT_MBOX[k] * num_classes, kernel_size=3, padding=1)
            ]
        self.loc = nn.ModuleList(loc_layers)
        self.conf = nn.ModuleList(conf_layers)

    def forward(self, x):
        sources, loc, conf = [], [], []
        for k in range(23):
            x = self.vgg[k](x)
        sources.append(self.L2Norm(x))
        for k in range(23, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = F.relu(v(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        for x, l, c in zip(sources, self.loc, self.conf):  # noqa: E741 (as in the original)
            loc.append(l(x).permute(0, 2, 3, 1).contiguous())
            conf.append(c(x).permute(0, 2, 3, 1).contiguous())
        loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
        conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
        return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, self.num_classes)


# ---------------------------------------------------------------- torchvision


def tv_vgg16_features() -> nn.Sequential:
    """torchvision.models.vgg16().features (cfg 'D', no batch norm)."""
    layers = []
    c = 3
    for v in [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers)


class TVVGG16(nn.Module):
    """torchvision.models.vgg16 layout: features, avgpool, classifier."""

    def __init__(self):
        super().__init__()
        self.features = tv_vgg16_features()
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 1000),
        )


class TVSSDFeatureExtractorVGG(nn.Module):
    def __init__(self, backbone: nn.Sequential):
        super().__init__()
        _, _, maxpool3_pos, maxpool4_pos, _ = (
            i for i, layer in enumerate(backbone) if isinstance(layer, nn.MaxPool2d)
        )
        backbone[maxpool3_pos].ceil_mode = True
        self.scale_weight = nn.Parameter(torch.ones(512) * 20)
        self.features = nn.Sequential(*backbone[:maxpool4_pos])
        extra = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(1024, 256, kernel_size=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(256, 512, kernel_size=3, padding=1, stride=2),
                    nn.ReLU(inplace=True),
                ),
                nn.Sequential(
                    nn.Conv2d(512, 128, kernel_size=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(128, 256, kernel_size=3, padding=1, stride=2),
                    nn.ReLU(inplace=True),
                ),
                nn.Sequential(
                    nn.Conv2d(256, 128, kernel_size=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(128, 256, kernel_size=3),
                    nn.ReLU(inplace=True),
                ),
                nn.Sequential(
                    nn.Conv2d(256, 128, kernel_size=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(128, 256, kernel_size=3),
                    nn.ReLU(inplace=True),
                ),
            ]
        )
        fc = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=False),
            nn.Conv2d(in_channels=512, out_channels=1024, kernel_size=3, padding=6, dilation=6),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels=1024, out_channels=1024, kernel_size=1),
            nn.ReLU(inplace=True),
        )
        extra.insert(0, nn.Sequential(*backbone[maxpool4_pos:-1], fc))
        self.extra = extra

    def forward(self, x):
        x = self.features(x)
        rescaled = self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)
        output = [rescaled]
        for block in self.extra:
            x = block(x)
            output.append(x)
        return output


class TVScoringHead(nn.Module):
    def __init__(self, module_list: nn.ModuleList, num_columns: int):
        super().__init__()
        self.module_list = module_list
        self.num_columns = num_columns

    def forward(self, x):
        all_results = []
        for i, features in enumerate(x):
            results = self.module_list[i](features)
            n, _, h, w = results.shape
            results = results.view(n, -1, self.num_columns, h, w)
            results = results.permute(0, 3, 4, 1, 2)
            results = results.reshape(n, -1, self.num_columns)
            all_results.append(results)
        return torch.cat(all_results, dim=1)


class TVSSDHead(nn.Module):
    def __init__(self, in_channels, num_anchors, num_classes):
        super().__init__()
        cls = nn.ModuleList(
            nn.Conv2d(c, num_classes * a, kernel_size=3, padding=1)
            for c, a in zip(in_channels, num_anchors)
        )
        reg = nn.ModuleList(
            nn.Conv2d(c, 4 * a, kernel_size=3, padding=1) for c, a in zip(in_channels, num_anchors)
        )
        self.classification_head = TVScoringHead(cls, num_classes)
        self.regression_head = TVScoringHead(reg, 4)

    def forward(self, x):
        return {
            "bbox_regression": self.regression_head(x),
            "cls_logits": self.classification_head(x),
        }


class TVSSD300VGG16(nn.Module):
    """torchvision ssd300_vgg16 (backbone + head; transform and post-processing left out)."""

    image_mean = [0.48235, 0.45882, 0.40784]
    image_std = [1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0]

    def __init__(self, num_classes: int = 91):
        super().__init__()
        self.backbone = TVSSDFeatureExtractorVGG(tv_vgg16_features())
        self.head = TVSSDHead([512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4], num_classes)

    def normalize(self, image_0_1: torch.Tensor) -> torch.Tensor:
        """GeneralizedRCNNTransform.normalize on an RGB image in 0..1."""
        mean = torch.tensor(self.image_mean)[:, None, None]
        std = torch.tensor(self.image_std)[:, None, None]
        return (image_0_1 - mean) / std

    def forward(self, x):
        return self.head(self.backbone(x))


def tv_default_boxes(
    aspect_ratios, scales, steps, feature_maps=(38, 19, 10, 5, 3, 1), image=300, clip=True
) -> torch.Tensor:
    """torchvision DefaultBoxGenerator._grid_default_boxes (normalized cxcywh)."""
    wh_all = []
    for k in range(len(aspect_ratios)):
        s_k = scales[k]
        s_prime_k = math.sqrt(scales[k] * scales[k + 1])
        wh_pairs = [[s_k, s_k], [s_prime_k, s_prime_k]]
        for ar in aspect_ratios[k]:
            sq_ar = math.sqrt(ar)
            w = scales[k] * sq_ar
            h = scales[k] / sq_ar
            wh_pairs.extend([[w, h], [h, w]])
        wh_all.append(torch.as_tensor(wh_pairs))
    default_boxes = []
    for k, f_k in enumerate(feature_maps):
        x_f = y_f = image / steps[k]
        shifts_x = ((torch.arange(0, f_k) + 0.5) / x_f).to(dtype=torch.float32)
        shifts_y = ((torch.arange(0, f_k) + 0.5) / y_f).to(dtype=torch.float32)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x = shift_x.reshape(-1)
        shift_y = shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y) * len(wh_all[k]), dim=-1).reshape(-1, 2)
        wh = wh_all[k].clamp(min=0, max=1) if clip else wh_all[k]
        wh_pairs = wh.repeat((f_k * f_k), 1)
        default_boxes.append(torch.cat((shifts, wh_pairs.float()), dim=1))
    return torch.cat(default_boxes, dim=0)
