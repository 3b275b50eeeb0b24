"""Numbers read from a config or a manifest, each checked against its range
(docs/guides/operating.md#host-config): a value out of range is an error naming its key at
startup, never an overflow later (a timeout past what a thread can wait, a
count past what SQLite stores)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_AMOUNT",
    "MAX_BYTES",
    "MAX_COUNT",
    "MAX_SECONDS",
    "Fail",
    "amount",
    "positive",
    "whole",
]

MAX_SECONDS = 10 * 365 * 86400.0  # ten years: longer is "never", and overflows a wait
MAX_COUNT = 10**9
MAX_BYTES = 2**30  # one frame, one body, one result
MAX_AMOUNT = 1e6  # CPUs, GPUs, megabytes of an object store

Fail = Callable[[str, str], Exception]  # (key, message) -> the error to raise


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def positive(value: Any, key: str, fail: Fail, *, high: float = MAX_SECONDS) -> float:
    """A number > 0 and <= ``high`` (seconds, unless said otherwise)."""
    if not _number(value) or not 0 < value <= high:
        raise fail(key, f"expected a positive number up to {high:g}, got {value!r}")
    return float(value)


def amount(value: Any, key: str, fail: Fail, *, high: float = MAX_AMOUNT) -> float:
    """A resource amount: a number >= 0 (Ray's fractions allowed)."""
    if not _number(value) or not 0 <= value <= high:
        raise fail(key, f"expected a number from 0 to {high:g}, got {value!r}")
    return float(value)


def whole(value: Any, key: str, fail: Fail, *, low: int = 1, high: int = MAX_COUNT) -> int:
    """An integer from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(key, f"expected a whole number from {low} to {high}, got {value!r}")
    return value
