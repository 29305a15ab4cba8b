"""Waiting on observable state, never on elapsed time: a shared CI machine may be slow at any moment."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, timeout: float = 300, every: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail naming ``what`` after
    ``timeout`` seconds. The timeout only bounds a hang: it is never part of what a test checks."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last seen: {value!r})")
        time.sleep(every)
