#!/usr/bin/env python3
"""Latency of the SSD300 forward pass and of the post-processing, per backbone.

    .venv/bin/python scripts/bench_model.py [--device cpu|cuda] [--runs 10] [--batch 1]

Random weights: the post-processing then sees many candidates (the slow case). Prints a
Markdown table; the figures go into docs/benchmarks.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from training.model import SSD, count_macs, count_parameters  # noqa: E402
from training.postprocess import PostProcessor  # noqa: E402
from training.spec import make_spec  # noqa: E402


def timed(fn, device: str, runs: int) -> float:
    """Median milliseconds of fn() over `runs` calls after two warm-up calls."""
    times = []
    for i in range(runs + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backbones", nargs="+", default=["vgg16", "vgg16_bn", "mobilenet_v2"])
    args = ap.parse_args()
    dev = args.device
    cpu = platform.processor() or platform.machine()
    print(
        f"# {time.strftime('%Y-%m-%d')}, {dev}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs ({cpu}), {torch.get_num_threads()} threads, batch {args.batch}"
        + (f", {torch.cuda.get_device_name()}" if dev == "cuda" else "")
    )
    print("| backbone | params | GMAC | forward ms | post-process ms | candidates/class |")
    print("|---|---|---|---|---|---|")
    torch.manual_seed(0)
    for name in args.backbones:
        model = SSD(make_spec(name, "voc", "voc")).to(dev).eval()
        x = torch.rand(args.batch, 3, 300, 300, device=dev) * 255
        post = PostProcessor(model.coder)
        with torch.inference_mode():
            fwd = timed(lambda m=model, x=x: m(x), dev, args.runs)
            loc, conf = model(x)
            pp = timed(lambda m=model, lc=(loc, conf), p=post: p(*lc, m.priors), dev, args.runs)
            cand = int(
                (conf.softmax(-1)[0, :, 1:] > post.score_threshold)
                .sum(0)
                .clamp(max=400)
                .float()
                .mean()
            )
        print(
            f"| {name} | {count_parameters(model) / 1e6:.2f} M | {count_macs(model) / 1e9:.2f} "
            f"| {fwd:.1f} | {pp:.1f} | {cand} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
