"""Still images through the detector, for `main.py detect`: per image an annotated copy and
one line in the run's images.jsonl (the schema of a video frame's line, plus the image's
path and size), and optionally YOLO label files and a COCO results JSON, so detections can
be evaluated or used as labels. Every file is written under a temporary name and renamed
when complete. numpy and OpenCV only (the deploy path).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import cv2

from engine.runtime.detector import Detections, Detector
from engine.video.filters import DetectionFilter
from engine.video.options import InputResult, failure_message
from engine.video.overlay import draw_detections
from engine.video.sources import Source
from engine.video.writers import DetectionLog
from training.fileio import atomic_write_bytes, atomic_write_text, finalize, unique_partial_path


def yolo_lines(dets: Detections, width: int, height: int, scores: bool = False) -> list[str]:
    """YOLO label lines for detections in pixels: 'class cx cy w h' normalized by the image
    size, class 0-based (the model's class id - 1), six decimals; `scores` adds the score."""
    lines = []
    for (x1, y1, x2, y2), score, cls in zip(dets.boxes, dets.scores, dets.class_ids):
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        line = f"{int(cls) - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
        lines.append(line + (f" {float(score):.4f}" if scores else ""))
    return lines


def coco_records(dets: Detections, image_id: int | str) -> list[dict]:
    """COCO results entries ({image_id, category_id, bbox [x, y, w, h] in pixels, score});
    category_id is the model's class id (COCO's own ids for the torchvision COCO model)."""
    return [
        {
            "image_id": image_id,
            "category_id": int(cls),
            "category_name": name,
            "bbox": [
                round(float(x1), 2),
                round(float(y1), 2),
                round(float(x2 - x1), 2),
                round(float(y2 - y1), 2),
            ],  # fmt: skip
            "score": round(float(score), 4),
        }
        for (x1, y1, x2, y2), score, cls, name in zip(
            dets.boxes, dets.scores, dets.class_ids, dets.names
        )
    ]


def coco_image_id(path: Path) -> int | str:
    """COCO's id for an image file: the number its name is (000000139.jpg -> 139), else
    the file name."""
    return int(path.stem) if path.stem.isdigit() else path.name


class ImageRun:
    """The images of one `detect` run: process(source, plan) per image, close() at the end
    (finalizes images.jsonl and the COCO JSON; returns their paths)."""

    def __init__(
        self,
        detector: Detector,
        out_dir: Path,
        filter: DetectionFilter,
        write_images: bool = True,
        save_txt: bool = False,
        save_conf: bool = False,
        coco_json: bool = False,
    ) -> None:
        self.det, self.out_dir, self.filter = detector, Path(out_dir), filter
        self.write_images, self.save_txt, self.save_conf = write_images, save_txt, save_conf
        self.coco: list[dict] | None = [] if coco_json else None
        self.log_path = self.out_dir / "images.jsonl"
        self._coco_ids: set = set()
        self._log = None
        self._log_tmp: Path | None = None
        self.count = 0

    def _log_file(self):
        if self._log is None:
            self._log_tmp = unique_partial_path(self.log_path)
            self._log = open(self._log_tmp, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        return self._log

    def process(self, src: Source, plan: dict[str, Path]) -> InputResult:
        """Detects in one image; never raises for a bad image or a failed write (the result
        says), only KeyboardInterrupt."""
        res = InputResult(src.display, kind="image")
        path = Path(str(src.target))
        t0 = time.perf_counter()
        try:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                res.status, res.message = "failed", "not a readable image"
                return res
            dets = self.filter.apply(self.det.detect(frame))
            h, w = frame.shape[:2]
            if self.write_images:
                image = draw_detections(frame, dets)
                ok, data = cv2.imencode(plan["image"].suffix or ".jpg", image)
                if not ok:
                    raise OSError(f"cannot encode {plan['image'].suffix} images")
                res.outputs["image"] = str(atomic_write_bytes(plan["image"], data.tobytes()))
            line = {"image": str(path), "width": w, "height": h, "frame": 0, "time": 0.0}
            line["detections"] = DetectionLog.records(dets)
            self._log_file().write(json.dumps(line) + "\n")
            if self.save_txt:
                rel = plan["image"].relative_to(self.out_dir).with_suffix(".txt")
                labels = self.out_dir / "labels" / rel
                text = "".join(f"{x}\n" for x in yolo_lines(dets, w, h, self.save_conf))
                res.outputs["labels"] = str(atomic_write_text(labels, text))
            if self.coco is not None:
                image_id = coco_image_id(path)
                if image_id in self._coco_ids:  # 0001.jpg in two folders: ids stay unique
                    image_id = str(plan["image"].relative_to(self.out_dir))
                self._coco_ids.add(image_id)
                self.coco.extend(coco_records(dets, image_id))
            res.frames = res.inferred = 1
            res.detections = dict(Counter(dets.names).most_common())
            self.count += 1
        except Exception as e:  # an OSError, a backend error: go on with the rest
            res.status, res.message = "failed", failure_message(e)
        finally:
            res.seconds = time.perf_counter() - t0
        return res

    def close(self) -> dict[str, str]:
        """Finalizes the run-wide files; {kind: path} of those written."""
        outputs = {}
        if self._log is not None:
            self._log.close()
            outputs["images_jsonl"] = str(finalize(self._log_tmp, self.log_path))
            self._log = None
        if self.coco is not None and self.count:
            path = self.out_dir / "detections_coco.json"
            outputs["coco_json"] = str(atomic_write_text(path, json.dumps(self.coco)))
        return outputs
