"""Atomic file writes: a reader (or a restart after a crash) sees the old file or the new one, never half.

Each writer writes a temporary file beside the target (same filesystem), flushes it to disk and
renames it over the target.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_bytes_atomic(path: str, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (numpy scalars and arrays become numbers and lists)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
