"""From DetectionData to training batches: image decoding, augmentation, a deterministic
(and distributed) sampler, and the padded collate.

Randomness is a function of (seed, epoch, index) only, so an epoch is the same whatever the
number of workers, and a resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch import Tensor

from training.augment import Canvas, Resize, SSDAugmentation
from training.datasets import DataError, DetectionData, Problem

# Decoding at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) is much faster for large photos.
_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def read_rgb(path, width: int = 0, height: int = 0, min_side: int = 0) -> np.ndarray:
    """uint8 [H, W, 3] RGB. With the annotated size and `min_side`, decodes at the largest
    reduction that keeps the short side >= min_side."""
    flag = cv2.IMREAD_COLOR
    short = min(width, height)
    if min_side and short > 1:
        for r in (8, 4, 2):
            if short // r >= min_side:
                flag = _REDUCED[r]
                break
    img = cv2.imread(str(path), flag)
    if img is None:
        raise DataError(f"{path}: unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_images(data: DetectionData, workers: int = 8, progress=None) -> DetectionData:
    """Drops the samples whose image does not decode, recording why (a fast 1/8-scale
    decode per image, in threads). Returns `data`, changed in place."""

    def ok(sample) -> bool:
        return cv2.imread(str(sample.image), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(ok, data.samples)
        if progress is not None:
            results = progress(results, total=len(data.samples))
        flags = list(results)
    bad = [s for s, good in zip(data.samples, flags) if not good]
    data.problems += [Problem(str(s.image), "unreadable image (skipped)") for s in bad]
    data.samples = [s for s, good in zip(data.samples, flags) if good]
    if not data.samples:
        raise DataError(f"{data.source}: none of the images can be read")
    return data


class DetectionDataset(torch.utils.data.Dataset):
    """Yields (image uint8 [3, S, S] RGB, boxes float32 [G, 4] normalized xyxy, labels int64
    [G], key) for a key (epoch, index) or (epoch, index, copy); the augmentation RNG is
    seeded with (seed, epoch, index[, copy]).

    Args:
        data: the samples.
        train: the paper's augmentation if True, else a plain resize.
        size: output side.
        fill: colour of expand's canvas (the model's mean).
        keep_difficult: keep VOC 'difficult' boxes for training (dropped by default).
    """

    def __init__(
        self,
        data: DetectionData,
        train: bool = True,
        size: int = 300,
        fill=(123.0, 117.0, 104.0),
        seed: int = 0,
        keep_difficult: bool = False,
    ) -> None:
        self.samples = data.samples
        self.transform = SSDAugmentation(size) if train else Resize(size)
        self.size = size
        self.fill = fill
        self.seed = seed
        self.keep_difficult = keep_difficult
        # Zoom-in crops need more pixels than a plain resize.
        self.min_side = 1000 if train else size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, ...] | int):
        """key: index, (epoch, index) or (epoch, index, copy) for the copy-th repeat (copy > 0)
        of an image in one epoch (repeat-factor sampling)."""
        epoch, index, *copy = key if isinstance(key, tuple) else (0, key)
        s = self.samples[index]
        img = read_rgb(s.image, s.width, s.height, self.min_side)
        h, w = img.shape[:2]
        keep = np.ones(len(s), dtype=bool) if self.keep_difficult else ~s.difficult
        boxes = s.boxes[keep] * np.float32([w, h, w, h])
        labels = s.labels[keep]
        rng = np.random.default_rng([self.seed, epoch, index, *copy])
        canvas, boxes, labels = self.transform(Canvas(img, self.fill), boxes, labels, rng)
        pixels = canvas.render()
        image = torch.from_numpy(np.rint(pixels).astype(np.uint8)).permute(2, 0, 1)
        boxes = torch.from_numpy(np.asarray(boxes, dtype=np.float32) / self.size)
        return image, boxes, torch.from_numpy(np.asarray(labels, dtype=np.int64)), index


def collate(batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Stacks images and pads boxes.

    Returns images uint8 [B, 3, S, S] in channels-last memory (the rendered HWC pixels,
    no transposing copy), boxes float32 [B, G, 4], labels int64 [B, G], valid bool [B, G]
    (False for padding), indices int64 [B].
    """
    images, boxes, labels, indices = zip(*batch)
    stacked = torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)
    b, g = len(images), max((len(x) for x in labels), default=0)
    out_boxes = torch.zeros(b, g, 4)
    out_labels = torch.zeros(b, g, dtype=torch.int64)
    valid = torch.zeros(b, g, dtype=torch.bool)
    for i, (bx, lb) in enumerate(zip(boxes, labels)):
        out_boxes[i, : len(lb)] = bx
        out_labels[i, : len(lb)] = lb
        valid[i, : len(lb)] = True
    return stacked, out_boxes, out_labels, valid, torch.tensor(indices)


def class_repeat_factors(labels: list[np.ndarray], threshold: float) -> dict[int, float]:
    """Repeat factor of each class (LVIS, Gupta et al. 2019): a class seen in a fraction f_c of
    the images gets r_c = max(1, sqrt(threshold / f_c)).

    Args:
        labels: per image, int [G] class ids (0 objects is fine).
        threshold: t > 0; classes in more than this fraction of the images are not repeated.
    Returns:
        {class id: r_c >= 1} for the classes present.
    """
    if threshold <= 0:
        raise ValueError(f"repeat threshold must be > 0, got {threshold}")
    n = len(labels)
    seen: dict[int, int] = {}
    for lb in labels:
        for c in np.unique(lb).tolist():
            seen[c] = seen.get(c, 0) + 1
    return {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in seen.items()}


def repeat_factors(labels: list[np.ndarray], threshold: float) -> np.ndarray:
    """Repeat-factor sampling: how often each image is shown per epoch, the largest
    class_repeat_factors() of its classes (1 for an image without objects).

    labels: per image, int [G]. Returns float64 [N], each >= 1.
    """
    r_class = class_repeat_factors(labels, threshold)
    return np.array(
        [max((r_class[c] for c in np.unique(lb).tolist()), default=1.0) for lb in labels],
        dtype=np.float64,
    )


def repeat_pool(repeats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image indices of one epoch: image i floor(r_i) times, plus one extra copy with
    probability p_i, where p_i is r_i - floor(r_i) scaled so that the extras fill the epoch
    to exactly round(sum(r)) images (systematic sampling over a random order, so each image
    is picked with exactly its p_i and at most once). Image i thus appears r_i times on
    average, up to that rounding of the epoch length.

    repeats: float [N] >= 1. Returns int64 [round(sum(repeats))], in index order.
    """
    whole = np.floor(repeats).astype(np.int64)
    frac = repeats - whole
    pool = np.repeat(np.arange(len(repeats)), whole)
    extra = int(round(float(repeats.sum()))) - len(pool)  # <= count of nonzero fractions
    if extra <= 0:
        return pool
    p = frac * (extra / frac.sum())
    while np.any(p > 1 + 1e-12):  # rounding up can push a large fraction over 1: cap it
        full = p >= 1
        p[full] = 1.0
        rest = ~full & (p > 0)
        if rest.any():
            p[rest] *= (extra - full.sum()) / p[rest].sum()
    order = rng.permutation(len(repeats))
    edges = np.floor(np.concatenate([[0.0], np.cumsum(p[order])]) - rng.random())
    picked = order[np.diff(edges) > 0]
    return np.sort(np.concatenate([pool, picked]))


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of (epoch, index) keys: a permutation seeded by (seed, epoch), split between
    distributed ranks (each rank gets the same number of samples), cut into batches. With
    repeat factors, the k-th copy (k > 0) of an image in the epoch has the key
    (epoch, index, k), numbered over all ranks, so every copy is augmented differently.

    Args:
        start_step: skip this many batches of the first epoch (resuming mid-epoch).
        min_batch: a last batch smaller than this is dropped (batch norm cannot train on
            one image: the 1x1 feature map would have a single value per channel).
        repeats: float [n] >= 1 from repeat_factors(): image i is shown r_i times per epoch
            on average (see repeat_pool); None: each image once.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        epoch: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        min_batch: int = 1,
        repeats: np.ndarray | None = None,
    ) -> None:
        if repeats is not None:
            if len(repeats) != n:
                raise ValueError(f"{len(repeats)} repeat factors for {n} images")
            if np.any(repeats < 1):
                raise ValueError("repeat factors must be >= 1")
            n = int(round(float(repeats.sum())))  # the epoch's length: copies included
        self.repeats = repeats
        if n < world_size:
            raise DataError(f"{n} images cannot be split between {world_size} processes")
        self.n, self.batch_size, self.epoch, self.seed = n, batch_size, epoch, seed
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.start_step = start_step
        self.min_batch = min_batch

    def _order(self) -> np.ndarray:
        """The epoch's image indices for all ranks together, int [n]."""
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        if self.repeats is not None:
            pool = repeat_pool(self.repeats, rng)
            order = rng.permutation(pool) if self.shuffle else pool
        elif self.shuffle:
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        return order

    def _mine(self) -> slice:
        per_rank = self.n // self.world_size
        return slice(self.rank, per_rank * self.world_size, self.world_size)

    def indices(self) -> np.ndarray:
        """This rank's image indices of the epoch, int [n // world_size]."""
        return self._order()[self._mine()]

    def __len__(self) -> int:
        full, rest = divmod(self.n // self.world_size, self.batch_size)
        return full + (rest >= self.min_batch and rest > 0)

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        order = self._order()
        if self.repeats is None:
            keys = [(self.epoch, int(i)) for i in order[self._mine()]]
        else:  # copies numbered over all ranks: each gets its own augmentation
            seen: dict[int, int] = {}
            every = []
            for i in order.tolist():
                k = seen.get(i, 0)
                seen[i] = k + 1
                every.append((self.epoch, i, k) if k else (self.epoch, i))
            keys = every[self._mine()]
        keys = keys[: len(self) * self.batch_size]
        for start in range(self.start_step * self.batch_size, len(keys), self.batch_size):
            yield keys[start : start + self.batch_size]


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _ignore_stop_signals(worker_id: int) -> None:
    """A data-loading worker leaves SIGTERM and SIGINT to the main process.

    `kill -- -PGID`, systemd and `docker stop` signal every process of the group, and Ctrl-C
    reaches the whole foreground group. A worker killed by SIGTERM makes the DataLoader raise
    in the main process, which then cannot finish its step and write a checkpoint. Ignoring
    the signals here lets the main process stop cleanly; the DataLoader ends its workers
    through its queues, and a worker whose parent died exits on its own.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Workers start with both blocked (stop_signals_held), so one sent before this point
    # waits; ignored now, it is dropped when unblocked.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_held(context=None):
    """SIGTERM and SIGINT wait (blocked, not lost) while data-loading workers start.

    A worker inherits the blocked mask (fork; exec keeps it for spawn and forkserver) and
    unblocks only once it ignores them (`_ignore_stop_signals`), so a stop signal to the
    whole process group as an epoch or a validation begins cannot kill a worker that has
    not set up yet. The main process handles such a signal no later than the end of the
    block. Python's resource tracker, which spawn and forkserver start with the first
    worker, unblocks the signals when it starts: it is started before the block.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to hold
        yield
        return
    method = (context or multiprocessing.get_context()).get_start_method()
    if method != "fork":
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _StopSafeLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers start with the stop signals held (stop_signals_held)."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        with stop_signals_held(self.multiprocessing_context):
            return super().__iter__()


def make_loader(
    dataset: DetectionDataset,
    sampler: EpochBatchSampler,
    workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    return _StopSafeLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_ignore_stop_signals if workers else None,
    )
