"""The video view: the frame scaled to the widget with its aspect ratio kept, and the boxes,
labels and scores painted by QPainter at display resolution (crisp at any zoom)."""

from __future__ import annotations

import cv2
import numpy as np
from PyQt5.QtCore import QRectF, Qt
from PyQt5.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen
from PyQt5.QtWidgets import QSizePolicy, QWidget

from engine.runtime.detector import Detections
from engine.video.overlay import class_color, place_labels


def to_qimage(frame: np.ndarray) -> QImage:
    """A QImage over a BGR uint8 frame [H, W, 3] (shares its memory: keep the frame)."""
    h, w = frame.shape[:2]
    if _BGR888 is None:  # Qt < 5.14 (JetPack 5's PyQt5): convert, and keep the copy alive
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        img = QImage(rgb.data, w, h, rgb.strides[0], QImage.Format_RGB888)
        img._keep = rgb  # the QImage shares rgb's memory
        return img
    return QImage(frame.data, w, h, frame.strides[0], _BGR888)


_BGR888 = getattr(QImage, "Format_BGR888", None)


def fit_rect(img_w: int, img_h: int, area_w: int, area_h: int) -> QRectF:
    """The largest rectangle of the image's aspect ratio centred in the area."""
    scale = min(area_w / img_w, area_h / img_h)
    w, h = img_w * scale, img_h * scale
    return QRectF((area_w - w) / 2, (area_h - h) / 2, w, h)


class VideoView(QWidget):
    """Shows one frame and its (already filtered) detections; paints nothing else."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(320, 180)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self.frame: np.ndarray | None = None
        self.image: QImage | None = None
        self.dets = Detections.empty()
        self.stats_lines: list[str] = []  # the figures, one per line
        self.show_stats = False
        self.paints = 0

    def set_frame(self, frame: np.ndarray | None, dets: Detections) -> None:
        self.frame = frame
        self.image = None if frame is None else to_qimage(frame)
        self.dets = dets
        self.update()

    def set_detections(self, dets: Detections) -> None:
        self.dets = dets
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.black)
        if self.image is not None:
            p.setRenderHint(QPainter.SmoothPixmapTransform)
            target = fit_rect(self.image.width(), self.image.height(), self.width(), self.height())
            p.drawImage(target, self.image)
            self._paint_boxes(p, target, self.image.width() and target.width() / self.image.width())
        if self.show_stats and self.stats_lines:
            self._paint_lines(p, self.stats_lines)
        p.end()
        self.paints += 1

    def _paint_boxes(self, p: QPainter, target: QRectF, scale: float) -> None:
        p.setRenderHint(QPainter.Antialiasing)
        font = self._label_font()
        m = QFontMetricsF(font)
        texts, sizes, colors = [], [], []
        for box, score, cid, name in zip(
            self.dets.boxes, self.dets.scores, self.dets.class_ids, self.dets.names
        ):
            b, g, r = class_color(int(cid))
            color = QColor(r, g, b)
            x1, y1, x2, y2 = (float(v) * scale for v in box)
            rect = QRectF(target.x() + x1, target.y() + y1, x2 - x1, y2 - y1)
            pen = QPen(color, 2)
            pen.setCosmetic(True)
            p.setPen(pen)
            p.setBrush(Qt.NoBrush)
            p.drawRect(rect)
            text = f"{name} {score:.2f}"
            texts.append(text)
            sizes.append((m.horizontalAdvance(text) + 6, m.height() + 2))
            colors.append(color)
        # Labels after every box, placed so that none covers another (as in the videos).
        corners = place_labels(self.dets.boxes * scale, sizes, target.width(), target.height())
        for text, (x, y), color in zip(texts, corners, colors):
            self._paint_label(p, target.x() + x, target.y() + y, text, color, Qt.black, True)

    def _label_font(self) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, min(14.0, self.height() / 50)))
        return font

    def _paint_label(self, p, x, y, text, bg, fg, anchor_top=False) -> None:
        font = self._label_font()
        p.setFont(font)
        m = QFontMetricsF(font)
        w, h = m.horizontalAdvance(text) + 6, m.height() + 2
        top = y if anchor_top else max(0.0, y - h)
        p.fillRect(QRectF(x, top, w, h), bg)
        p.setPen(QPen(QColor(fg)))
        p.drawText(QRectF(x + 3, top, w, h), Qt.AlignVCenter | Qt.AlignLeft, text)

    def _paint_lines(self, p, lines: list[str]) -> None:
        """The figures, one per line, top left (short lines, so they stay inside the view)."""
        font = self._label_font()
        p.setFont(font)
        m = QFontMetricsF(font)
        h = m.height() + 2
        w = max(m.horizontalAdvance(t) for t in lines) + 6
        p.fillRect(QRectF(6, 6, w, h * len(lines)), QColor(32, 32, 32, 220))
        p.setPen(QPen(QColor(Qt.white)))
        for i, text in enumerate(lines):
            p.drawText(QRectF(9, 6 + i * h, w, h), Qt.AlignVCenter | Qt.AlignLeft, text)
