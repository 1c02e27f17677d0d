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


def draw_detections(frame: np.ndarray, dets: Detections, show_scores: bool = True) -> np.ndarray:
    """Draws boxes and labels on `frame` in place (BGR uint8) and returns it."""
    h, w = frame.shape[:2]
    scale = max(h, w) / 1000.0
    thickness = max(1, int(round(2 * scale)))
    font_scale = max(0.4, 0.6 * scale)
    for box, score, cid, name in zip(dets.boxes, dets.scores, dets.class_ids, dets.names):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = class_color(int(cid))
        # Axis-aligned lines gain nothing from anti-aliasing, which costs 3x the time.
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, thickness, cv2.LINE_8)
        label = f"{name} {score:.2f}" if show_scores else name
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y1 - th - base - 2)
        cv2.rectangle(frame, (x1, top), (x1 + tw + 2, top + th + base + 2), color, cv2.FILLED)
        cv2.putText(
            frame,
            label,
            (x1 + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            max(1, thickness // 2),
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
    if not parts:
        return frame
    text = "  ".join(parts)
    h, w = frame.shape[:2]
    scale = max(h, w) / 1000.0
    thickness = max(1, int(round(2 * scale)))
    font_scale = max(0.4, 0.6 * scale)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    pad = max(2, int(4 * scale))
    cv2.rectangle(frame, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (32, 32, 32), cv2.FILLED)
    cv2.putText(
        frame,
        text,
        (pad, pad + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return frame
