"""The readers of the three dataset formats: Pascal VOC (devkit layout or a loose folder
of XML files), COCO JSON and YOLO txt labels. Each fills training.datasets' in-memory
form through its _Builder, recording every skipped image or box as a Problem.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from training.datasets import CLASS_ALIASES, DataError, DetectionData, Problem, _Builder
from training.fileio import IMAGE_EXTENSIONS, is_image

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
