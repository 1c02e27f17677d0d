"""The training loop: SGD with warm-up and a step or cosine schedule, AMP on CUDA,
DistributedDataParallel under torchrun, checkpoints with exact resume, validation mAP with
a best-weights file, a progress bar, TensorBoard and a NaN/explosion guard.

The options are training.config's TrainConfig; checkpoints and resuming are
training.checkpoint. Over 400 lines on purpose: what is left is one Trainer whose build,
loop, evaluation and distributed plumbing share its state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import TrainingError, load_checkpoint, save_checkpoint
from training.config import TrainConfig, lr_at
from training.errors import ConfigError
from training.fileio import atomic_write_text

# ----------------------------------------------------------------------------- helpers


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")
    return torch.device("cpu")


class _StopRequested(Exception):
    """Raised between steps when a stop was asked for (Ctrl-C, SIGTERM, on any rank)."""


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Runs a TrainConfig. `run()` returns a summary dict.

    Files in cfg.output: last.ckpt (resume), last.safetensors and best.safetensors
    (self-describing weights), config.yaml, log.jsonl (one line per step and per
    evaluation), tb/ (TensorBoard).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool = False,
        on_step: Callable[[dict], None] | None = None,
        quiet: bool = False,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.resume = resume
        self.on_step = on_step
        self.quiet = quiet
        self.rank, self.world, self.local_rank = _dist_info()
        self.main = self.rank == 0
        self.out = Path(cfg.output)
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ setup

    def _log(self, msg: str) -> None:
        if self.main and not self.quiet:
            print(msg, flush=True)

    def _build(self) -> None:
        from training.data import DetectionDataset, check_images
        from training.datasets import load_datasets
        from training.weights import load_detector

        cfg = self.cfg
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = pick_device(cfg.device, self.local_rank)
        self.amp = (self.device.type == "cuda") if cfg.amp is None else bool(cfg.amp)
        if self.amp and self.device.type != "cuda":
            raise ConfigError("mixed precision (--amp) needs a CUDA device")
        torch.manual_seed(cfg.seed)

        # Model first when it fixes the classes, else classes from the data.
        if cfg.weights:
            model = load_detector(cfg.weights)
            class_names = list(model.spec.class_names)
        else:
            model = None
            class_names = None
            if cfg.classes:
                from training.spec import load_class_names

                class_names = load_class_names(cfg.classes)
        train_data = load_datasets(cfg.data, cfg.split, class_names, require_boxes=True)
        workers = cfg.workers if cfg.workers >= 0 else max(0, min(8, (os.cpu_count() or 1) - 1))
        check_images(train_data, workers=max(workers, 2))
        self._log(train_data.report())
        if model is None:
            model = self._new_model(train_data.class_names)
        self.spec = model.spec
        if cfg.freeze_backbone:
            self._freeze(model)
        self.val_data = None
        if cfg.val_data and cfg.eval_every > 0:
            self.val_data = check_images(
                load_datasets(cfg.val_data, cfg.val_split, list(self.spec.class_names)),
                workers=max(workers, 2),
            )
            self._log(self.val_data.report())
        self.train_data = train_data
        self.workers = workers
        if cfg.batch_size % self.world:
            raise ConfigError(
                f"batch size {cfg.batch_size} does not split over {self.world} processes"
            )
        self.batch_per_rank = cfg.batch_size // self.world
        min_batch = 2 if self.spec.backbone != "vgg16" else 1
        if self.batch_per_rank < min_batch:
            raise ConfigError(
                f"{self.spec.backbone} has batch norm: it needs at least 2 images per process "
                f"and step (batch size {cfg.batch_size} over {self.world} process(es))"
            )
        self.min_batch = min_batch
        self.dataset = DetectionDataset(
            train_data,
            train=cfg.augment,
            fill=self.spec.mean,
            seed=cfg.seed,
            keep_difficult=cfg.keep_difficult,
        )
        # Partial labels: per training image, the classes its dataset does not label.
        self.unlabeled = None
        if train_data.partially_labeled:
            every = np.ones(len(self.spec.class_names) + 1, dtype=bool)
            masks = [every if s.labeled is None else s.labeled for s in train_data.samples]
            self.unlabeled = torch.from_numpy(~np.stack(masks)).to(self.device)
        self.repeats = None
        if cfg.repeat_threshold > 0:
            self.repeats = self._repeat_factors(train_data, cfg.repeat_threshold)
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        groups: dict[bool, list] = {}  # no weight decay on biases and norms
        for p in self.model.parameters():
            if p.requires_grad:
                groups.setdefault(p.ndim <= 1, []).append(p)
        self.optimizer = torch.optim.SGD(
            [
                {"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
                for no_decay, params in sorted(groups.items())
            ],
            lr=cfg.lr,
            momentum=cfg.momentum,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        from training.loss import MultiBoxLoss
        from training.matcher import SSDMatcher

        self.loss_fn = MultiBoxLoss()
        self.matcher = SSDMatcher()
        self.steps_per_epoch = len(self._sampler(0))
        self.total_steps = self.steps_per_epoch * cfg.epochs

    def _freeze(self, model) -> None:
        """Freeze the backbone's ImageNet part (--freeze-backbone); validate() made sure it
        holds trained weights: those of --weights, or an ImageNet import."""
        frozen = model.backbone.freeze_pretrained()
        total = sum(p.numel() for p in model.parameters())
        parts = list(model.backbone.pretrained_parts)
        if any(
            isinstance(m, torch.nn.BatchNorm2d)
            for p in parts
            for m in getattr(model.backbone, p).modules()
        ):
            parts.append("batch-norm statistics included")
        self._log(f"frozen backbone: {frozen:,} of {total:,} parameters fixed ({', '.join(parts)})")

    def _repeat_factors(self, data, threshold: float):
        """Per-image repeat factors of the training labels (difficult boxes as trained), logged
        with the epoch's new length and the most repeated classes."""
        from training.data import class_repeat_factors, repeat_factors

        labels = [
            s.labels if self.cfg.keep_difficult else s.labels[~s.difficult] for s in data.samples
        ]
        repeats = repeat_factors(labels, threshold)
        factor = class_repeat_factors(labels, threshold)
        top = sorted((c for c in factor if factor[c] > 1), key=lambda c: -factor[c])
        names = ", ".join(f"{data.class_names[c - 1]} x{factor[c]:.1f}" for c in top[:6])
        more = ", ..." if len(top) > 6 else ""
        self._log(
            f"repeat-factor sampling (threshold {threshold:g}): {round(float(repeats.sum()))} "
            f"images per epoch from {len(labels)}"
            + (f"; classes repeated: {names}{more}" if top else "; no class is rare enough")
        )
        return repeats

    def _sampler(self, epoch: int, start_step: int = 0):
        from training.data import EpochBatchSampler

        return EpochBatchSampler(
            len(self.dataset),
            self.batch_per_rank,
            epoch,
            self.cfg.seed,
            rank=self.rank,
            world_size=self.world,
            start_step=start_step,
            min_batch=self.min_batch,
            repeats=self.repeats,
        )

    def _new_model(self, class_names: list[str]):
        from training.importers import (
            import_torchvision_mobilenet_v2,
            import_torchvision_vgg16,
            mobilenet_v2_imagenet_path,
            read_checkpoint,
        )
        from training.model import SSD
        from training.spec import make_spec

        cfg = self.cfg
        if cfg.pretrained and cfg.backbone == "mobilenet_v2":
            path = cfg.backbone_weights or mobilenet_v2_imagenet_path()
            return import_torchvision_mobilenet_v2(
                read_checkpoint(path),
                class_names,
                cfg.priors,
                source=str(path),
            )
        if cfg.pretrained and cfg.backbone == "vgg16" and cfg.backbone_weights:
            return import_torchvision_vgg16(
                read_checkpoint(cfg.backbone_weights),
                class_names,
                cfg.priors,
                source=cfg.backbone_weights,
            )
        if cfg.pretrained and cfg.backbone == "vgg16":
            self._log("note: VGG16 starts from random weights (no --backbone-weights)")
        return SSD(make_spec(cfg.backbone, class_names, cfg.priors))

    def _checkpoint(self, epoch: int, step_in_epoch: int, global_step: int, best: float) -> None:
        if self.main:
            save_checkpoint(
                self.out / "last.ckpt",
                self.spec,
                self.cfg,
                self.model,
                self.optimizer,
                self.scaler,
                (epoch, step_in_epoch, global_step, best),
                self._totals_now(),
            )
            self._last_checkpoint_time = time.monotonic()

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        from training.evaluate import detect_dataset, voc_evaluate

        dets = detect_dataset(self.model, self.val_data, workers=min(self.workers, 4))
        return voc_evaluate(dets, self.val_data)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        from tqdm import tqdm

        from training.data import make_loader
        from training.matcher import encode_targets
        from training.weights import save_detector

        self._build()
        cfg = self.cfg
        epoch, start_step, global_step, best = 0, 0, 0, -1.0
        # Totals over the whole run, resumed parts included (summary.json covers them all).
        self._totals = {"seconds": 0.0, "images": 0, "step_seconds": 0.0, "wait_seconds": 0.0}
        if self.resume:
            epoch, start_step, global_step, best, totals = load_checkpoint(
                self.out / "last.ckpt", self.spec, self.cfg, self.model, self.optimizer, self.scaler
            )
            self._totals.update(totals)
            if start_step >= self.steps_per_epoch:
                epoch, start_step = epoch + 1, 0
            if epoch >= cfg.epochs:
                return self._finished_already(global_step, best)
            self._log(
                f"resumed from {self.out / 'last.ckpt'}: epoch {epoch + 1}, step {start_step}"
            )
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            import yaml

            (self.out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
        writer = self._tensorboard()
        log = open(self.out / "log.jsonl", "a", encoding="utf-8") if self.main else None  # noqa: SIM115
        self._last_checkpoint_time = time.monotonic()
        recent: list[float] = []
        self._t_start, self._seconds_before = time.monotonic(), self._totals["seconds"]
        totals = self._totals
        last_eval: dict | None = None
        old_handlers = self._install_signal_handlers()
        self.model.train()
        step = start_step  # (epoch, step) is where a checkpoint resumes
        try:
            while epoch < cfg.epochs:
                sampler = self._sampler(epoch, start_step)
                loader = make_loader(
                    self.dataset, sampler, self.workers, pin_memory=self.device.type == "cuda"
                )
                bar = tqdm(
                    total=self.steps_per_epoch,
                    initial=start_step,
                    disable=not self.main or self.quiet,
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    unit="step",
                    dynamic_ncols=True,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0,
                )
                step = start_step
                t_wait = time.perf_counter()
                for images, boxes, labels, valid, indices in loader:
                    t0 = time.perf_counter()
                    wait = t0 - t_wait
                    lr = lr_at(cfg, global_step, self.total_steps)
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    parts = self._step(images, boxes, labels, valid, encode_targets, indices)
                    stop = self._sync(parts)  # all ranks see the same loss and stop request
                    loss = parts["loss"]
                    self._guard(loss, recent, epoch, step, lr)
                    step += 1
                    global_step += 1
                    t_wait = time.perf_counter()
                    dt = t_wait - t0 + wait
                    n = len(images) * self.world
                    totals["images"] += n
                    totals["wait_seconds"] += wait
                    totals["step_seconds"] += dt
                    record = {
                        "epoch": epoch + 1,
                        "step": step,
                        "global_step": global_step,
                        "lr": lr,
                        **parts,
                        "images_per_s": n / dt,
                        "data_wait": wait / dt,
                    }
                    if log:
                        log.write(json.dumps(record) + "\n")
                    if self.on_step:
                        self.on_step(record)
                    bar.set_postfix(
                        loss=f"{loss:.3f}",
                        loc=f"{parts['loc']:.3f}",
                        conf=f"{parts['conf']:.3f}",
                        lr=f"{lr:.2e}",
                        img_s=f"{totals['images'] / max(totals['step_seconds'], 1e-9):.1f}",
                        refresh=False,
                    )
                    bar.update(1)
                    if writer and global_step % cfg.log_every == 0:
                        for k in ("loss", "loc", "conf"):
                            writer.add_scalar(f"train/{k}", parts[k], global_step)
                        writer.add_scalar("train/lr", lr, global_step)
                        writer.add_scalar("train/images_per_s", n / dt, global_step)
                    if stop:
                        raise _StopRequested
                    if time.monotonic() - self._last_checkpoint_time > cfg.checkpoint_minutes * 60:
                        self._checkpoint(epoch, step, global_step, best)
                bar.close()
                epoch_done = epoch + 1
                if self.val_data is not None and (
                    epoch_done % cfg.eval_every == 0 or epoch_done == cfg.epochs
                ):
                    if self.main:
                        last_eval = self.evaluate()
                        m = last_eval["map"]
                        self._log(
                            f"epoch {epoch_done}: validation AP50 (VOC all-point) {m:.4f}, "
                            f"VOC07 11-point {last_eval['map_07']:.4f}"
                        )
                        if log:
                            log.write(json.dumps({"epoch": epoch_done, "eval": last_eval}) + "\n")
                        if writer:
                            writer.add_scalar("val/ap50", m, global_step)
                            writer.add_scalar("val/ap50_voc07", last_eval["map_07"], global_step)
                        if m > best:
                            best = m
                            save_detector(self.model, self.out / "best.safetensors")
                    self._barrier()
                epoch, step, start_step = epoch + 1, 0, 0
                self._checkpoint(epoch, step, global_step, best)
                if log:
                    log.flush()
        except (KeyboardInterrupt, _StopRequested):
            self._checkpoint(epoch, step, global_step, best)
            self._log(
                f"\nstopped at epoch {epoch + 1}, step {step}; checkpoint saved: "
                f"resume with the same command and --resume"
            )
            raise KeyboardInterrupt from None
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if log:
                log.close()
            if writer:
                writer.close()
        if self.main:
            save_detector(self.model, self.out / "last.safetensors")
        totals = self._totals_now()
        summary = self._summary(global_step, best, last_eval, totals)
        if self.main:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
        self._barrier()
        return summary

    def _summary(self, global_step: int, best: float, last_eval, totals: dict) -> dict:
        """summary.json: the whole run, every resumed part included."""
        step_s = max(totals["step_seconds"], 1e-9)
        return {
            "epochs": self.cfg.epochs,
            "steps": global_step,
            "train_seconds": round(totals["seconds"], 1),
            "images_per_s": round(totals["images"] / step_s, 2),
            "data_wait_share": round(totals["wait_seconds"] / step_s, 4),
            "best_ap50": None if best < 0 else round(best, 4),
            "last_eval": last_eval,
            "weights": str(self.out / "last.safetensors"),
            "best_weights": str(self.out / "best.safetensors") if best >= 0 else None,
        }

    def _totals_now(self) -> dict:
        """The run's totals so far: seconds, images, step and data-wait seconds."""
        elapsed = time.monotonic() - self._t_start if hasattr(self, "_t_start") else 0.0
        return {**self._totals, "seconds": self._seconds_before + elapsed}

    def _finished_already(self, global_step: int, best: float) -> dict:
        """--resume of a run that has done all its epochs: says so and changes nothing. A
        kill between the last checkpoint and the end leaves no weights file or summary:
        those are written then, from the checkpoint."""
        from training.weights import save_detector

        last = self.out / "last.safetensors"
        if self.main and not last.is_file():
            save_detector(self.model, last)
        self._log(
            f"{self.out}: this run has already done its {self.cfg.epochs} epochs; nothing to "
            f"resume (its weights: {last}; give a larger --epochs to train on)"
        )
        path = self.out / "summary.json"
        if path.is_file():
            return json.loads(path.read_text())
        summary = self._summary(global_step, best, None, self._totals)
        if self.main:
            atomic_write_text(path, json.dumps(summary, indent=2))
        return summary

    def _step(self, images, boxes, labels, valid, encode_targets, indices=None) -> dict:
        dev = self.device
        images = images.to(dev, non_blocking=True).float()
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        boxes = boxes.to(dev, non_blocking=True)
        labels = labels.to(dev, non_blocking=True)
        valid = valid.to(dev, non_blocking=True)
        with torch.no_grad():
            loc_t, lab_t = encode_targets(
                self.matcher, self.model.coder, boxes, labels, valid, self.model.priors
            )
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.amp):
            loc, conf = self.net(images)
        unlabeled = None
        if self.unlabeled is not None and indices is not None:
            unlabeled = self.unlabeled[indices.to(self.unlabeled.device)]
        parts = self.loss_fn(loc.float(), conf.float(), loc_t, lab_t, unlabeled)
        total = parts.total
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        record = {
            "loss": total.item(),
            "loc": parts.localization.item(),
            "conf": parts.confidence.item(),
            "positives": int(parts.num_positives),
        }
        return record

    def _guard(self, loss: float, recent: list[float], epoch: int, step: int, lr: float) -> None:
        where = f"epoch {epoch + 1}, step {step + 1} (learning rate {lr:.2e})"
        if not math.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss} at {where}. Likely causes: a learning rate too high "
                f"for this batch size (try --lr {lr / 10:.1e} or a longer --warmup-steps), or "
                "broken boxes in the data"
                + ("; with --amp also try --no-amp" if self.amp else "")
                + ". The last checkpoint is intact."
            )
        if recent and loss > self.cfg.explode_factor * statistics.median(recent):
            raise TrainingError(
                f"the loss exploded to {loss:.1f} at {where}, {self.cfg.explode_factor:g}x its "
                f"recent median {statistics.median(recent):.2f}. Likely cause: a learning rate "
                f"too high (try --lr {lr / 10:.1e}). The last checkpoint is intact."
            )
        recent.append(loss)
        del recent[:-100]

    def _tensorboard(self):
        if not self.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._log("note: tensorboard is not installed; no TensorBoard logs")
            return None
        return SummaryWriter(str(self.out / "tb"))

    def _install_signal_handlers(self) -> dict:
        """Ctrl-C and SIGTERM ask for a stop after the current step (checkpoint, then exit);
        a second Ctrl-C stops at once."""

        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            self._log("\nstopping after this step (Ctrl-C again to stop at once)")

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave the defaults
                break
        return old

    def _sync(self, parts: dict) -> bool:
        """Averages the loss parts over the processes (in place) and tells whether any of
        them was asked to stop, so that all ranks take the same decisions."""
        stop = float(self._stop_signal is not None)
        if self.world == 1:
            return bool(stop)
        t = torch.tensor([parts["loss"], parts["loc"], parts["conf"], stop], device=self.device)
        torch.distributed.all_reduce(t)
        parts["loss"], parts["loc"], parts["conf"] = (float(v) / self.world for v in t[:3])
        return bool(t[3] > 0)

    def _barrier(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
