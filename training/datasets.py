"""Detection datasets: Pascal VOC (devkit layout or a loose folder of XML files), COCO JSON
and YOLO txt labels, read into one in-memory form.

Boxes are kept as float32 (x1, y1, x2, y2) normalized to [0, 1] by the image size. VOC's
1-based inclusive pixel coordinates map to the continuous box [xmin - 1, xmax], so IoUs
computed on it equal the devkit's (xmax - xmin + 1) convention.

Broken data never stops a run silently: every skipped image or box is recorded as a
Problem (file and reason); `DetectionData.report()` summarizes them, and a dataset with
nothing usable left raises a DataError.

Over 400 lines on purpose: the three formats' readers fill one in-memory form and one
problem report, and are easiest to keep consistent side by side.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import SSDError
from training.fileio import IMAGE_EXTENSIONS, is_image

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
        if not normalized and (width <= 0 or height <= 0):
            self.problems.append(Problem(file, f"invalid image size {width}x{height}"))
            return
        keep_boxes, keep_labels, keep_diff = [], [], []
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


# ------------------------------------------------------------------------------ VOC


def _voc_objects(xml_path: Path) -> tuple[str, float, float, list, list, list]:
    """filename, width, height, boxes (pixel xyxy, continuous), names, difficult flags."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    w = float(size.findtext("width", "0")) if size is not None else 0.0
    h = float(size.findtext("height", "0")) if size is not None else 0.0
    boxes, names, diff = [], [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip()
        if bb is None:
            continue
        coords = [bb.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        try:
            x1, y1, x2, y2 = (float(c) for c in coords)
        except (TypeError, ValueError):
            x1 = y1 = x2 = y2 = float("nan")
        boxes.append((x1 - 1, y1 - 1, x2, y2))
        names.append(name)
        diff.append((obj.findtext("difficult") or "0").strip() == "1")
    return (root.findtext("filename") or "").strip(), w, h, boxes, names, diff


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from a JPEG's or PNG's header, without decoding; other formats and
    odd files are decoded. (0, 0) when unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head[:2] == b"\xff\xd8":
                f.seek(2)
                while True:
                    marker = f.read(2)
                    if len(marker) < 2 or marker[0] != 0xFF:
                        break
                    kind = marker[1]
                    if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:
                        continue
                    length = int.from_bytes(f.read(2), "big")
                    if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
                        data = f.read(5)
                        return int.from_bytes(data[3:5], "big"), int.from_bytes(data[1:3], "big")
                    f.seek(length - 2, 1)
    except OSError:
        return 0, 0
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return (0, 0) if img is None else (img.shape[1], img.shape[0])


def _add_voc_xml(b: _Builder, xml_path: Path, image_dirs: Sequence[Path], stem: str | None = None):
    try:
        filename, w, h, boxes, names, diff = _voc_objects(xml_path)
    except (ET.ParseError, OSError, ValueError) as e:
        b.problems.append(Problem(str(xml_path), f"unreadable annotation ({e})"))
        return
    candidates = [d / filename for d in image_dirs if filename]
    if stem:
        candidates += [d / (stem + ext) for d in image_dirs for ext in IMAGE_EXTENSIONS]
    image = next((c for c in candidates if c.is_file()), candidates[0] if candidates else None)
    if image is None:
        b.problems.append(Problem(str(xml_path), "no <filename> and no image found"))
        return
    if (w <= 0 or h <= 0) and image.is_file():
        w, h = image_size(image)
    b.add(image, boxes, names, diff, w, h, str(xml_path), image_id=image.stem)


def load_voc_devkit(root: Path, split: str = "trainval", class_names=None) -> DetectionData:
    """VOCdevkit: `root` holds VOC2007/VOC2012 (or is one of them); `split` is 'trainval',
    'test', ... for every year found, or 'VOC2007/trainval+VOC2012/trainval'."""
    years = (
        [root]
        if (root / "Annotations").is_dir()
        else sorted(d for d in root.iterdir() if d.is_dir() and (d / "Annotations").is_dir())
    )
    parts = []
    for item in split.split("+"):
        if "/" in item:
            year, name = item.split("/", 1)
            parts += [(d, name) for d in years if d.name == year]
            if not any(d.name == year for d in years):
                raise DataError(f"{root}: no {year} folder with Annotations")
        else:
            parts += [(d, item) for d in years]
    b = _Builder(class_names, str(root), "VOC devkit")
    for year_dir, name in parts:
        list_file = year_dir / "ImageSets" / "Main" / f"{name}.txt"
        if not list_file.is_file():
            raise DataError(f"split file not found: {list_file}")
        for line in list_file.read_text().split():
            xml = year_dir / "Annotations" / f"{line}.xml"
            if not xml.is_file():
                b.problems.append(Problem(str(xml), "annotation missing"))
                continue
            _add_voc_xml(b, xml, [year_dir / "JPEGImages"], stem=line)
    return b.finish()


def _read_list(path: Path) -> list[str]:
    """Image names from a text file (one per line) or a CSV with a filename/image column."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows:
            return []
        col = next((c for c in ("filename", "file_name", "image", "name") if c in rows[0]), None)
        if col is None:
            raise DataError(f"{path}: no filename column (have: {', '.join(rows[0])})")
        names = [r[col] for r in rows]
    else:
        names = text.split()
    return list(dict.fromkeys(Path(n.strip()).stem for n in names if n.strip()))


def load_voc_folder(root: Path, split: str | None = None, class_names=None) -> DetectionData:
    """A loose folder of VOC XML files (in `root` or `root/annotations`), images beside them
    or in `root/images` / `root/JPEGImages`; `split` is an optional list file (.txt names
    or .csv with a filename column), relative to `root` or absolute."""
    ann_dir = next((d for d in (root / "annotations", root / "Annotations") if d.is_dir()), root)
    image_dirs = [d for d in (root / "images", root / "JPEGImages", ann_dir, root) if d.is_dir()]
    xmls = {p.stem: p for p in sorted(ann_dir.glob("*.xml"))}
    b = _Builder(class_names, str(root), "VOC folder")
    if split:
        list_path = Path(split) if Path(split).is_absolute() else root / split
        if not list_path.is_file():
            raise DataError(f"split list not found: {list_path}")
        stems = _read_list(list_path)
        b.source = f"{root} ({list_path.name})"
    else:
        stems = list(xmls)
    for stem in stems:
        if stem not in xmls:
            b.problems.append(Problem(f"{ann_dir / stem}.xml", "annotation missing"))
            continue
        _add_voc_xml(b, xmls[stem], image_dirs, stem=stem)
    return b.finish()


# ------------------------------------------------------------------------------ COCO


def load_coco(annotations: Path, images: Path | None = None, class_names=None) -> DetectionData:
    """COCO JSON. Category ids map to contiguous labels in id order (or to `class_names` by
    name); crowd boxes are left out. Images are looked up in `images`, or beside the JSON's
    folder (`<root>/<name>`, `<root>/images/<name>` for instances_<name>.json)."""
    try:
        d = json.loads(annotations.read_text(encoding="utf-8"))
        cats = sorted(d["categories"], key=lambda c: c["id"])
        imgs = d["images"]
        anns = d.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{annotations}: not a COCO annotation file ({e!r})") from None
    if images is None:
        split = annotations.stem.split("_", 1)[-1]
        root = annotations.parent.parent
        images = next(
            (p for p in (root / split, root / "images" / split, root / "images") if p.is_dir()),
            root / split,
        )
    names = {c["id"]: c["name"] for c in cats}
    b = _Builder(
        class_names if class_names is not None else [c["name"] for c in cats],
        str(annotations),
        "COCO",
    )
    b.named = set(names.values())
    by_image: dict[int, list[dict]] = {}
    crowd = 0
    for a in anns:
        if not isinstance(a, dict) or "image_id" not in a:
            continue
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    for img in imgs:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            b.problems.append(Problem(str(annotations), f"malformed image entry {img!r:.60}"))
            continue
        objs = by_image.get(img["id"], [])
        boxes, labels = [], []
        for a in objs:
            try:
                x, y, w, h = (float(v) for v in a["bbox"])
                cat = a["category_id"]
            except (KeyError, TypeError, ValueError):
                b.problems.append(
                    Problem(img.get("file_name", "?"), f"malformed annotation {a.get('id')}")
                )
                continue
            boxes.append((x, y, x + w, y + h))
            labels.append(names.get(cat, f"category {cat}"))
        b.add(
            images / img["file_name"],
            boxes,
            labels,
            [False] * len(boxes),
            img.get("width", 0),
            img.get("height", 0),
            img["file_name"],
            image_id=img["id"],
        )
    data = b.finish()
    data.crowd_boxes = crowd
    data.annotation_file = annotations
    # COCO category id of each label, for scoring against the original file.
    by_name = {c["name"]: c["id"] for c in cats}
    data.category_ids = [
        by_name.get(n, by_name.get(CLASS_ALIASES.get(n, ""), 0)) for n in data.class_names
    ]
    return data


# ------------------------------------------------------------------------------ YOLO


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: expected a mapping with names: and the split folders")
    return cfg


def _yolo_names(cfg: dict, path: Path) -> list[str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise DataError(f"{path}: no 'names' class list")


def yolo_label_dir(image_dir: Path) -> Path:
    """Ultralytics' rule: the last 'images' folder of the path becomes 'labels'."""
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return image_dir


def load_yolo(data_yaml: Path, split: str = "val", class_names=None) -> DetectionData:
    """YOLO layout: `data_yaml` names the classes and the image folder of each split
    (`train:`, `val:`, relative to its `path:`); labels are in the folder where the last
    `images` of that path becomes `labels`, one `class cx cy w h` (normalized) line per box.
    Images without a label file have no objects."""
    cfg = _read_yaml(data_yaml)
    yolo_names = _yolo_names(cfg, data_yaml)
    if split not in cfg:
        raise DataError(f"{data_yaml}: no split {split!r} (have: {', '.join(map(str, cfg))})")
    base = Path(cfg.get("path") or ".")
    base = base if base.is_absolute() else data_yaml.parent / base
    image_dir = base / str(cfg[split])
    if not image_dir.is_dir():
        raise DataError(f"{data_yaml}: image folder of split {split!r} not found: {image_dir}")
    b = _Builder(
        class_names if class_names is not None else yolo_names, f"{data_yaml} ({split})", "YOLO"
    )
    b.named = set(yolo_names)
    label_dir = yolo_label_dir(image_dir)
    images = sorted(p for p in image_dir.iterdir() if is_image(p))
    if images and not any((label_dir / (p.stem + ".txt")).is_file() for p in images):
        raise DataError(f"{data_yaml}: no label files for split {split!r} in {label_dir}")
    for image in images:
        label_file = label_dir / (image.stem + ".txt")
        boxes, labels = [], []
        if label_file.is_file():
            for n, line in enumerate(label_file.read_text().splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    if len(fields) < 5:
                        raise ValueError
                    cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:5])
                except ValueError:
                    b.problems.append(Problem(f"{label_file}:{n}", f"malformed line {line!r}"))
                    continue
                if not 0 <= cls < len(yolo_names):
                    b.problems.append(
                        Problem(f"{label_file}:{n}", f"class id {cls} not in data.yaml")
                    )
                    continue
                boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
                labels.append(yolo_names[cls])
        width, height = image_size(image)
        if width <= 0:
            b.problems.append(Problem(str(image), "unreadable image"))
            continue
        b.add(
            image,
            boxes,
            labels,
            [False] * len(boxes),
            width,
            height,
            str(label_file),
            image_id=image.stem,
            normalized=True,
        )
    return b.finish()


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
