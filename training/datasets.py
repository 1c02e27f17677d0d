"""Detection datasets: Pascal VOC (devkit layout or a loose folder of XML files), COCO JSON
and YOLO txt labels, read into one in-memory form.

Boxes are kept as float32 (x1, y1, x2, y2) normalized to [0, 1] by the image size. VOC's
1-based inclusive pixel coordinates map to the continuous box [xmin - 1, xmax], so IoUs
computed on it equal the devkit's (xmax - xmin + 1) convention.

Broken data never stops a run silently: every skipped image or box is recorded as a
Problem (file and reason); `DetectionData.report()` summarizes them, and a dataset with
nothing usable left raises a DataError.

The readers of the three formats are in training.dataset_formats; this module holds the
in-memory form, the problem report, and the choice of reader (load_dataset).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import SSDError

# The six Pascal VOC classes that COCO names differently. With a given class list, a box
# whose class is missing from the list under its own name is looked up under the other.
VOC_COCO_NAMES = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}
CLASS_ALIASES = {**VOC_COCO_NAMES, **{coco: voc for voc, coco in VOC_COCO_NAMES.items()}}


class DataError(SSDError):
    """A dataset that cannot be read or has nothing usable in it."""


@dataclass
class Sample:
    """One image and its objects.

    boxes: float32 [G, 4] normalized xyxy; labels: int64 [G], 1..C-1 (0 is background);
    difficult: bool [G] (VOC's flag: ignored by the VOC metric, excluded from training by
    default).
    """

    image: Path
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    width: int = 0
    height: int = 0
    image_id: int | str = ""
    # bool [C + 1]: which classes this image's dataset labels (index 0, background, is
    # True); None: every class. Images of one dataset share one array.
    labeled: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Problem:
    file: str
    reason: str


@dataclass
class DetectionData:
    """Samples with the class list they are labelled with and what was skipped."""

    samples: list[Sample]
    class_names: list[str]
    problems: list[Problem] = field(default_factory=list)
    source: str = ""
    format: str = ""
    # Set for COCO JSON sources: the file, the category id of each label, crowd boxes left out.
    annotation_file: Path | None = None
    category_ids: list[int] | None = None
    crowd_boxes: int = 0
    # With a given class list: boxes of the data's other classes, left out, per class name.
    left_out: Counter = field(default_factory=Counter)
    # The classes of `class_names` this data labels (all of them unless the data's own
    # class list lacks some: then an object of such a class may be in an image unboxed).
    labeled: list[str] | None = None
    # Several datasets merged into one (merge_datasets): the parts, for the report.
    parts: list[DetectionData] = field(default_factory=list)

    @property
    def num_boxes(self) -> int:
        return sum(len(s) for s in self.samples)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(int(label) for s in self.samples for label in s.labels)
        return {name: counts.get(i + 1, 0) for i, name in enumerate(self.class_names)}

    @property
    def labeled_names(self) -> list[str]:
        return list(self.class_names) if self.labeled is None else list(self.labeled)

    @property
    def partially_labeled(self) -> bool:
        return any(s.labeled is not None and not s.labeled.all() for s in self.samples)

    def labels_line(self) -> str:
        """'boxes: person 9044' and which of the classes the data labels."""
        counts = self.class_counts()
        boxes = ", ".join(f"{n} {c}" for n, c in sorted(counts.items(), key=lambda x: -x[1]) if c)
        names = self.labeled_names
        if len(names) == len(self.class_names):
            labels = f"labels all {len(names)} classes"
        else:
            labels = (
                f"labels {len(names)} of the {len(self.class_names)} classes: "
                f"{', '.join(names) or 'none'} (the others may be in its images unboxed)"
            )
        return f"boxes per class: {boxes or 'none'}; {labels}"

    def report(self, limit: int = 10) -> str:
        """A few lines: what was read, and the first `limit` problems with a count."""
        if self.parts:
            lines = [
                f"{len(self.parts)} datasets: {len(self.samples)} images, {self.num_boxes} "
                f"boxes, {len(self.class_names)} classes"
            ]
            for part in self.parts:
                lines += ["- " + part.report(limit).replace("\n", "\n  ")]
            known = sum(len(p.problems) for p in self.parts)
            if len(self.problems) > known:  # found after merging (check_images)
                extra = self.problems[known:]
                lines.append(f"skipped {len(extra)} more item(s):")
                lines += [f"  {q.file}: {q.reason}" for q in extra[:limit]]
                if len(extra) > limit:
                    lines.append(f"  ... and {len(extra) - limit} more")
            return "\n".join(lines)
        lines = [
            f"{self.source}: {len(self.samples)} images, {self.num_boxes} boxes, "
            f"{len(self.class_names)} classes ({self.format})",
            self.labels_line(),
        ]
        if self.left_out:
            common = ", ".join(f"{n} ({c})" for n, c in self.left_out.most_common(8))
            more = ", ..." if len(self.left_out) > 8 else ""
            lines.append(
                f"left out {sum(self.left_out.values())} boxes of "
                f"{len(self.left_out)} classes the model does not have: {common}{more}"
            )
        if self.problems:
            lines.append(f"skipped {len(self.problems)} item(s):")
            lines += [f"  {p.file}: {p.reason}" for p in self.problems[:limit]]
            if len(self.problems) > limit:
                lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def truncated(path: Path) -> bool:
    """Whether a JPEG or PNG file stops before its end marker (a cut-off download or copy:
    OpenCV decodes the rest as grey without an error). Other formats are not checked."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError:
        return False  # unreadable files are reported when they are read
    if head[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in tail
    if head == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in tail[-64:]
    return False


class _Builder:
    """Collects samples, checking each box, and keeps the problems."""

    def __init__(self, class_names: Sequence[str] | None, source: str, fmt: str) -> None:
        self.fixed_classes = class_names is not None
        self.class_names = list(class_names or [])
        self.index = {n: i + 1 for i, n in enumerate(self.class_names)}
        self.samples: list[Sample] = []
        self.problems: list[Problem] = []
        self.left_out: Counter = Counter()
        self.source = source
        self.format = fmt
        # The dataset's own class list (YOLO names, COCO categories); for VOC, which has
        # none, the names its annotations use. None: not known yet (collected from boxes).
        self.named: set[str] | None = None
        self.seen: set[str] = set()

    def label(self, name: str, file: str) -> int | None:
        self.seen.add(name)
        if name not in self.index and self.fixed_classes:
            alias = CLASS_ALIASES.get(name)
            if alias in self.index:
                return self.index[alias]
            self.left_out[name] += 1
            return None
        if name not in self.index:
            self.class_names.append(name)
            self.index[name] = len(self.class_names)
        return self.index[name]

    def add(
        self,
        image: Path,
        boxes: list[tuple[float, float, float, float]],
        names_or_labels: list,
        difficult: list[bool],
        width: float,
        height: float,
        file: str,
        image_id: int | str = "",
        normalized: bool = False,
    ) -> None:
        """Adds one image; boxes in pixels (or normalized) xyxy. Bad boxes are skipped."""
        if not image.is_file():
            self.problems.append(Problem(file, f"image not found: {image}"))
            return
        if truncated(image):
            self.problems.append(Problem(file, f"truncated image (its data ends early): {image}"))
            return
        if not normalized and (width <= 0 or height <= 0):
            self.problems.append(Problem(file, f"invalid image size {width}x{height}"))
            return
        keep_boxes, keep_labels, keep_diff = [], [], []
        problems_before = len(self.problems)
        for k, (box, lab, diff) in enumerate(zip(boxes, names_or_labels, difficult)):
            label = self.label(lab, file) if isinstance(lab, str) else lab
            if label is None:
                continue
            b = np.asarray(box, dtype=np.float64)
            if not normalized:
                b = b / [width, height, width, height]
            if not np.all(np.isfinite(b)):
                self.problems.append(Problem(file, f"box {k}: not a number {box}"))
                continue
            if b[2] <= 0 or b[3] <= 0 or b[0] >= 1 or b[1] >= 1:
                self.problems.append(Problem(file, f"box {k} {list(box)}: outside the image"))
                continue
            b = np.clip(b, 0.0, 1.0)
            if b[2] - b[0] <= 1e-6 or b[3] - b[1] <= 1e-6:
                self.problems.append(Problem(file, f"box {k} {list(box)}: zero area"))
                continue
            keep_boxes.append(b)
            keep_labels.append(label)
            keep_diff.append(bool(diff))
        if not keep_boxes and len(self.problems) > problems_before:
            # Its objects are there but their boxes are broken: as an image without objects
            # it would teach (and score) them as background.
            self.problems.append(Problem(file, "every box is broken: the image is left out"))
            return
        self.samples.append(
            Sample(
                image=image,
                boxes=np.asarray(keep_boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.asarray(keep_labels, dtype=np.int64),
                difficult=np.asarray(keep_diff, dtype=bool),
                width=int(width),
                height=int(height),
                image_id=image_id,
            )
        )

    def finish(self) -> DetectionData:
        if not self.samples:
            if self.problems:
                first = self.problems[0]
                why = f" ({len(self.problems)} problems; first: {first.file}: {first.reason})"
            else:
                why = f" (no {self.format} annotations or images found)"
            raise DataError(f"{self.source}: no usable images{why}")
        if not self.fixed_classes:
            # Classes discovered from the data: a stable, sorted order.
            order = sorted(self.class_names)
            remap = np.zeros(len(order) + 1, dtype=np.int64)
            for new, name in enumerate(order):
                remap[self.index[name]] = new + 1
            for s in self.samples:
                s.labels = remap[s.labels]
            self.class_names = order
        named = self.seen if self.named is None else self.named
        labeled = [n for n in self.class_names if n in named or CLASS_ALIASES.get(n) in named]
        mask = None
        if len(labeled) < len(self.class_names):
            mask = np.array([True] + [n in labeled for n in self.class_names])
            for s in self.samples:
                s.labeled = mask
        return DetectionData(
            self.samples,
            self.class_names,
            self.problems,
            self.source,
            self.format,
            left_out=self.left_out,
            labeled=labeled if mask is not None else None,
        )


# ------------------------------------------------------------------------------ dispatch


def load_dataset(
    path: str | Path, split: str | None = None, class_names: Sequence[str] | None = None
) -> DetectionData:
    """Reads a dataset, recognizing its format:

    - `*.yaml` / `*.yml`: YOLO data.yaml (split: 'train', 'val', ...; default 'val');
    - `*.json`: COCO annotations (split: the image folder, default found from the name);
    - a folder with VOC2007/VOC2012 or Annotations + ImageSets: VOC devkit (split:
      'trainval', 'test', 'VOC2007/trainval+VOC2012/trainval'; default 'trainval');
    - another folder with XML files (or an annotations/ subfolder): loose VOC (split: a
      .txt or .csv list of image names, default every XML file).
    With `class_names`, labels follow that list (COCO's and VOC's names for the same class
    match, see CLASS_ALIASES); boxes of other classes are left out and counted.
    """
    from training.dataset_formats import load_coco, load_voc_devkit, load_voc_folder, load_yolo

    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset not found: {p}")
    names = list(class_names) if class_names is not None else None
    if p.suffix.lower() in (".yaml", ".yml"):
        return load_yolo(p, split or "val", names)
    if p.suffix.lower() == ".json":
        return load_coco(p, Path(split) if split else None, names)
    if p.is_dir():
        is_devkit = (p / "Annotations").is_dir() and (p / "ImageSets").is_dir()
        if is_devkit or any((p / y / "Annotations").is_dir() for y in ("VOC2007", "VOC2012")):
            return load_voc_devkit(p, split or "trainval", names)
        if (p / "data.yaml").is_file():
            return load_yolo(p / "data.yaml", split or "val", names)
        return load_voc_folder(p, split, names)
    raise DataError(f"{p}: not a dataset (expected a folder, a data.yaml or a COCO .json)")


# ------------------------------------------------------------------------------ several


def parse_data_spec(spec: str, default_split: str | None = None) -> tuple[str, str | None]:
    """'PATH' or 'PATH:SPLIT' -> (path, split). A PATH that exists is taken whole (so a
    path with a colon in it still works); otherwise the text after the last ':' is the
    split, when the text before it exists. Without a split, `default_split`."""
    if Path(spec).exists() or ":" not in spec:
        return spec, default_split
    path, split = spec.rsplit(":", 1)
    if not Path(path).exists():
        raise DataError(f"dataset not found: {path if split else spec}")
    return path, split or default_split


def merge_datasets(parts: Sequence[DetectionData]) -> DetectionData:
    """One DetectionData of several read with the same class list. Each image keeps the
    mask of the classes its own dataset labels (Sample.labeled)."""
    names = parts[0].class_names
    for p in parts[1:]:
        if p.class_names != names:
            raise ValueError("datasets to merge must be read with the same class list")
    if len(parts) == 1:
        return parts[0]
    all_labeled = [n for n in names if any(n in p.labeled_names for p in parts)]
    return DetectionData(
        [s for p in parts for s in p.samples],
        list(names),
        [q for p in parts for q in p.problems],
        " + ".join(p.source for p in parts),
        "several",
        left_out=sum((p.left_out for p in parts), Counter()),
        labeled=all_labeled if len(all_labeled) < len(names) else None,
        parts=list(parts),
    )


def load_datasets(
    specs: str | Sequence[str],
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    require_boxes: bool = False,
) -> DetectionData:
    """Reads one or several datasets ('PATH' or 'PATH:SPLIT', see parse_data_spec; `split`
    is the default split) into one DetectionData with one class list: `class_names`, or
    else the union of the datasets' own classes (sorted; a single dataset keeps its own
    order). Each dataset labels exactly the classes it names (see Sample.labeled).

    With `require_boxes` (training data), a dataset with no box of the classes, or data
    with no box at all, is a DataError: it would add nothing to training.
    """
    specs = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not specs:
        raise DataError("no dataset given")
    pairs = [parse_data_spec(str(s), split) for s in specs]
    names = list(class_names) if class_names is not None else None
    if names is None and len(pairs) > 1:
        found: set[str] = set()
        for path, sp in pairs:
            found.update(load_dataset(path, sp).class_names)
        names = sorted(found)
    parts = [load_dataset(path, sp, names) for path, sp in pairs]
    if require_boxes:
        for p in parts:
            if p.num_boxes == 0:
                _no_boxes(p, several=len(parts) > 1)
    return merge_datasets(parts)


def _no_boxes(data: DetectionData, several: bool) -> None:
    if data.left_out:
        had = ", ".join(f"{n} ({c})" for n, c in data.left_out.most_common(5))
        why = f"its {sum(data.left_out.values())} boxes are of other classes: {had}"
    else:
        why = "it has no boxes"
    what = "a dataset must have boxes to train on" if several else "nothing to train on"
    raise DataError(
        f"{data.source}: 0 boxes of the model's {len(data.class_names)} classes in "
        f"{len(data.samples)} images ({why}); {what}"
    )
