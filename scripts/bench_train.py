#!/usr/bin/env python3
"""Training throughput: augmentation speed, and the whole training loop against a
straightforward loop in the style of ssd.pytorch, side by side on the same machine.

    .venv/bin/python scripts/bench_train.py [--data ../shared/data/raccoon]
        [--split splits/train_labels.csv] [--backbone mobilenet_v2] [--batch-size 16]
        [--steps 10] [--rounds 3] [--workers 1] [--device auto] [--frozen]

1. augmentation: images/s of one worker (decode, the paper's augmentation, render);
2. ours: DataLoader workers, pinned memory, uint8 channels-last batches, channels-last
   convolutions, batched matching on the device;
3. baseline: images loaded and augmented in the main process (no workers), float batches,
   matching image by image with ssd.pytorch's match() loop, targets moved afterwards.
4. with --frozen, also ours with the backbone's ImageNet layers frozen (train
   --freeze-backbone): no gradients through the backbone.
All loops run the same model, batch, augmentation, loss and optimizer; it reports images/s
and the share of step time spent waiting for data. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from training.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh  # noqa: E402
from training.data import DetectionDataset, EpochBatchSampler, make_loader  # noqa: E402
from training.datasets import load_dataset  # noqa: E402
from training.importers import (  # noqa: E402
    import_torchvision_mobilenet_v2,
    mobilenet_v2_imagenet_path,
    read_checkpoint,
)
from training.loss import MultiBoxLoss  # noqa: E402
from training.matcher import SSDMatcher, encode_targets  # noqa: E402
from training.model import SSD  # noqa: E402
from training.spec import make_spec  # noqa: E402


def ssd_pytorch_match(truths, labels, priors, coder, threshold=0.5):
    """ssd.pytorch layers/box_utils.py match() for one image: (loc_t [N, 4], conf_t [N])."""
    overlaps = box_iou(truths, cxcywh_to_xyxy(priors))
    _, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx]
    conf[best_truth_overlap < threshold] = 0
    return coder.encode(xyxy_to_cxcywh(matches), priors), conf


def build_model(backbone: str, classes: list[str]) -> SSD:
    if backbone == "mobilenet_v2":
        path = mobilenet_v2_imagenet_path()
        return import_torchvision_mobilenet_v2(read_checkpoint(path), classes, "voc")
    return SSD(make_spec(backbone, classes, "voc"))


def train_steps(model, batches, device, steps, per_image_matching: bool):
    """Runs `steps` steps; returns (images/s, data-wait share)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    loss_fn, matcher = MultiBoxLoss(), SSDMatcher()
    model.train()
    n = wait = total = 0.0
    it = iter(batches)
    for step in range(steps + 2):  # two warm-up steps are not counted
        t0 = time.perf_counter()
        if per_image_matching:
            images, loc_t, lab_t = next(it)
            images, loc_t, lab_t = images.to(device), loc_t.to(device), lab_t.to(device)
        else:
            images, boxes, labels, valid, _ = next(it)
            images = images.to(device, non_blocking=True).float()
            images = images.contiguous(memory_format=torch.channels_last)
            boxes, labels = (
                boxes.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )
            valid = valid.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        if not per_image_matching:
            with torch.no_grad():
                loc_t, lab_t = encode_targets(
                    matcher, model.coder, boxes, labels, valid, model.priors
                )
        loc, conf = model(images)
        parts = loss_fn(loc, conf, loc_t, lab_t)
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step >= 2:
            n += len(images)
            wait += t1 - t0
            total += t2 - t0
    return n / total, wait / total


def baseline_batches(dataset, batch_size, model, epochs=1000):
    """ssd.pytorch-style: main-process loading, float images, per-image matching."""
    for epoch in range(epochs):
        sampler = EpochBatchSampler(len(dataset), batch_size, epoch, min_batch=2)
        for keys in sampler:
            images, locs, labs = [], [], []
            for key in keys:
                img, boxes, labels, _ = dataset[key]
                images.append(img.float())
                loc_t, lab_t = ssd_pytorch_match(boxes, labels, model.priors, model.coder)
                locs.append(loc_t)
                labs.append(lab_t)
            yield torch.stack(images), torch.stack(locs), torch.stack(labs)


def our_batches(dataset, batch_size, workers, pin, epochs=1000):
    for epoch in range(epochs):
        sampler = EpochBatchSampler(len(dataset), batch_size, epoch, min_batch=2)
        yield from make_loader(dataset, sampler, workers, pin_memory=pin)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).parents[2] / "shared/data/raccoon"))
    ap.add_argument("--split", default="splits/train_labels.csv")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per loop")
    ap.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--frozen", action="store_true", help="also time ours with --freeze-backbone's model"
    )
    args = ap.parse_args()
    dev = torch.device(args.device)
    data = load_dataset(args.data, args.split)
    torch.manual_seed(0)
    model = build_model(args.backbone, data.class_names).to(dev)
    dataset = DetectionDataset(data, train=True, fill=model.spec.mean)

    t = time.perf_counter()
    count = 0
    for i in range(len(dataset)):
        dataset[(0, i)]
        count += 1
    aug_rate = count / (time.perf_counter() - t)

    # Alternate the two loops (ours, baseline, ours, baseline, ...) from the same weights
    # and keep each one's median round, so drifts of a shared machine hit both alike.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = ("ours", "base", "frozen") if args.frozen else ("ours", "base")
    results = {name: [] for name in names}
    frozen = None
    if args.frozen:
        frozen = build_model(args.backbone, data.class_names).to(dev)
        frozen.backbone.freeze_pretrained()
    for _ in range(args.rounds):
        for name in names:
            net = frozen if name == "frozen" else model
            net.load_state_dict(state)
            # ours trains in channels-last memory; the baseline in PyTorch's default layout
            fmt = torch.contiguous_format if name == "base" else torch.channels_last
            net.to(memory_format=fmt)
            if name == "base":
                batches = baseline_batches(dataset, args.batch_size, net)
            else:
                batches = our_batches(dataset, args.batch_size, args.workers, dev.type == "cuda")
            results[name].append(train_steps(net, batches, dev, args.steps, name == "base"))
    ours, base = (sorted(results[k])[len(results[k]) // 2] for k in ("ours", "base"))
    gpu = f", {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""
    print(
        f"# {time.strftime('%Y-%m-%d')}, {dev.type}{gpu}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), torch {torch.__version__}, {args.backbone}, batch "
        f"{args.batch_size}, median of {args.rounds} alternating rounds of {args.steps} steps "
        f"(2 warm-up steps each), data {args.data}"
    )
    print(f"augmentation (decode + augment + render, 1 worker): {aug_rate:.1f} images/s")
    print("| loop | workers | images/s | data wait share |")
    print("|---|---|---|---|")
    print(f"| ours | {args.workers} | {ours[0]:.2f} | {ours[1]:.1%} |")
    print(f"| ssd.pytorch style | 0 | {base[0]:.2f} | {base[1]:.1%} |")
    if frozen is not None:
        fr = sorted(results["frozen"])[len(results["frozen"]) // 2]
        print(f"| ours, frozen backbone | {args.workers} | {fr[0]:.2f} | {fr[1]:.1%} |")
    print(f"speed-up: {ours[0] / base[0]:.2f}x")
    if frozen is not None:
        print(f"frozen backbone vs ours: {fr[0] / ours[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
