"""The argparse value types of every command, in one style: a wrong value is a usage error
(exit 2) that says what is expected and what was given ("must be ..., got TEXT").

Standard library only (main.py builds its parser on a Jetson without torch, Python 3.8).
"""

from __future__ import annotations

import argparse
import re


def int_in_range(low: int, high: int | None = None, high_text: str | None = None):
    """A type: a whole number >= low (and <= high; `high_text` shows a long bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text}") from None
        if high is not None and not low <= value <= high:
            upper = high_text or str(high)
            raise argparse.ArgumentTypeError(f"must be between {low} and {upper}, got {text}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


positive_int = int_in_range(1)
seed = int_in_range(0, 2**63 - 1, "2**63 - 1")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text}") from None
    if value != value:  # NaN
        raise argparse.ArgumentTypeError(f"must be a number, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A type: a number between 0 and 1 (scores, IoU thresholds)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A type: a number > 0 (and finite)."""
    value = _number(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def seconds(text: str) -> float:
    """A type: seconds from '90', '90.5', '1:30' or '1:02:03.5'."""
    if not re.fullmatch(r"\d+(\.\d*)?|(\d+:){1,2}\d+(\.\d*)?", text.strip()):
        raise argparse.ArgumentTypeError(
            f"must be seconds (90, 12.5) or [HH:]MM:SS[.ms], got {text}"
        )
    value = 0.0
    for part in text.strip().split(":"):
        value = value * 60 + float(part)
    return value


def sha256(text: str) -> str:
    """A type: a SHA-256 in hex, or a prefix of at least 8 digits (lower-cased)."""
    s = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", s):
        raise argparse.ArgumentTypeError(
            f"must be a SHA-256 (64 hex digits, or a prefix of at least 8), got {text}"
        )
    return s
