"""Atomic writes (temporary name, then ``os.replace``) and plain-JSON conversion."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch


def _atomic(path: Path, write: Callable[[Any], None], text: bool = False) -> None:
    """Write through a temporary name in the same folder, then ``os.replace`` (RESULTS.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, content: str) -> None:
    _atomic(path, lambda fh: fh.write(content), text=True)


def _jsonable(v: Any) -> Any:
    """Plain JSON values (NaN / inf -> None, numpy and torch scalars -> Python)."""
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.generic, torch.Tensor)):
        v = v.item() if getattr(v, "ndim", 0) == 0 else v.tolist()
        return _jsonable(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)

