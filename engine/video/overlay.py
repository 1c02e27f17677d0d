"""Drawing detections on frames: a stable colour per class, labels with scores, line widths
and fonts that scale with the frame. numpy and OpenCV only."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from engine.runtime.detector import Detections


def class_color(class_id: int) -> tuple[int, int, int]:
    """A BGR colour that is always the same for a class id, well spread over the hues."""
    hue = (class_id * 0.618033988749895) % 1.0  # golden-ratio steps
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def place_labels(
    boxes: np.ndarray, sizes: list[tuple[float, float]], width: float, height: float
) -> list[tuple[float, float]]:
    """Top-left corners for the labels of boxes, so that no label covers another.

    boxes: [N, 4] xyxy in pixels, in drawing order (the most confident first: it gets the
    best place); sizes: N (label width, label height); width, height: the frame's. Each
    label goes above its box, else inside its top edge, else below it, else inside its
    bottom edge, whichever first is free of the labels already placed (kept in the frame);
    when none is, the first free place further down the box (up to 8 label heights);
    failing that, the place that overlaps least. Returns N (x, y). Only the labels already
    placed in the same columns are compared, so 100 labels cost a few ms a frame.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    placed = np.zeros((len(boxes), 4))  # x1, y1, x2, y2 of the labels placed so far
    out = []
    for i, ((x1, y1, _, y2), (lw, lh)) in enumerate(zip(boxes.tolist(), sizes)):
        x = min(max(0.0, x1), max(0.0, width - lw))
        ys = [y1 - lh, y1, y2, y2 - lh]
        down = y1 + lh
        while len(ys) < 12 and down + lh <= min(y2, height):  # further down the box
            ys.append(down)
            down += lh
        top = max(0.0, height - lh)
        ys = [min(max(0.0, y), top) for y in ys]
        # Only labels in the same columns can be in the way (one numpy step, then Python).
        p = placed[:i]
        near = p[(p[:, 0] < x + lw) & (p[:, 2] > x)].tolist() if i else []
        best, least = ys[0], None
        for y in ys:
            cover = sum(
                (min(x + lw, q[2]) - max(x, q[0])) * (min(y + lh, q[3]) - max(y, q[1]))
                for q in near
                if q[1] < y + lh and q[3] > y
            )
            if cover <= 0:
                best = y
                break
            if least is None or cover < least:
                best, least = y, cover
        placed[i] = (x, best, x + lw, best + lh)
        out.append((float(x), float(best)))
    return out


def draw_detections(frame: np.ndarray, dets: Detections, show_scores: bool = True) -> np.ndarray:
    """Draws boxes, then their labels (placed so that none covers another: place_labels),
    on `frame` in place (BGR uint8) and returns it."""
    h, w = frame.shape[:2]
    font_scale, thickness, _ = _text_style(frame, 0.6, 2)
    labels, sizes = [], []
    for box, score, cid, name in zip(dets.boxes, dets.scores, dets.class_ids, dets.names):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        # Axis-aligned lines gain nothing from anti-aliasing, which costs 3x the time.
        cv2.rectangle(frame, (x1, y1), (x2, y2), class_color(int(cid)), thickness, cv2.LINE_8)
        label = f"{name} {score:.2f}" if show_scores else name
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        labels.append((label, th))
        sizes.append((tw + 2, th + base + 2))
    corners = place_labels(dets.boxes, sizes, w, h)
    for (label, th), (lw, lh), (x, y), cid in zip(labels, sizes, corners, dets.class_ids):
        x, y = int(round(x)), int(round(y))
        cv2.rectangle(frame, (x, y), (x + lw, y + lh), class_color(int(cid)), cv2.FILLED)
        cv2.putText(
            frame,
            label,
            (x + 1, y + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    return frame


def _text_style(frame: np.ndarray, size: float, weight: float) -> tuple[float, int, int]:
    """(font scale, thickness, padding) for text on this frame: it grows with the frame
    (1000 px = 1x), `size` and `weight` being the font scale and stroke at 1x."""
    h, w = frame.shape[:2]
    scale = max(h, w) / 1000.0
    return max(0.4, size * scale), max(1, int(round(weight * scale))), max(2, int(4 * scale))


def draw_lines(
    frame: np.ndarray, lines: list[str], size: float = 0.5, weight: float = 1.5
) -> np.ndarray:
    """Writes text lines in the top-left corner, white on a dark band, scaled with the
    frame like the labels (the GUI's figures in snapshots and recordings); returns it."""
    if not lines:
        return frame
    font_scale, thickness, pad = _text_style(frame, size, weight)
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness) for t in lines]
    line_h = max(th + base for (_, th), base in sizes) + pad
    width = max(tw for (tw, _), _ in sizes) + 2 * pad
    cv2.rectangle(frame, (0, 0), (width, line_h * len(lines) + pad), (32, 32, 32), cv2.FILLED)
    for i, (text, ((_, th), _)) in enumerate(zip(lines, sizes)):
        cv2.putText(
            frame,
            text,
            (pad, pad + i * line_h + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return frame


def draw_status(
    frame: np.ndarray, fps: float | None = None, frame_index: int | None = None
) -> np.ndarray:
    """Writes 'FPS 12.3  frame 456' in the top-left corner (white on a dark band), scaled
    with the frame like the labels; returns the frame."""
    parts = []
    if fps is not None:
        parts.append(f"FPS {fps:.1f}")
    if frame_index is not None:
        parts.append(f"frame {frame_index}")
    return draw_lines(frame, ["  ".join(parts)], size=0.6, weight=2) if parts else frame
