"""Field checks for workflow parsing: each failure is a WorkflowError naming the field path."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Mapping, Sequence

from ..errors import WorkflowError

REQUIRED = object()  # marks a required field in register_model_kind / register_operator specs
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _at(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _fail(path: str, msg: str) -> None:
    raise WorkflowError(f"{path or 'workflow'}: {msg}")


def _fields(d: Any, path: str, spec: Mapping[str, Any]) -> dict:
    """``d`` checked against ``spec`` (key -> default or REQUIRED); defaults filled in."""
    if not isinstance(d, Mapping):
        _fail(path, f"expected a mapping, got {type(d).__name__} {d!r}")
    for k in d:
        if k not in spec:
            close = difflib.get_close_matches(str(k), [str(s) for s in spec], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            _fail(_at(path, k), f"unknown key{hint}; allowed: {', '.join(map(str, spec))}")
    for k, v in spec.items():
        if v is REQUIRED and k not in d:
            _fail(_at(path, k), "required field is missing")
    return {k: d.get(k, v) for k, v in spec.items()}


def _int(v: Any, path: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        _fail(path, f"must be >= {lo}; got {v}")
    return v


def _float(v: Any, path: str, lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> float:
    try:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError
        f = float(v)
    except ValueError:
        _fail(path, f"expected a number, got {v!r}")
    if not math.isfinite(f) or (lo is not None and (f <= lo if open_lo else f < lo)) or (hi is not None and f > hi):
        rng = f"{'(' if open_lo else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        _fail(path, f"must be a finite number in {rng}; got {v!r}")
    return f


def _floats(v: Any, path: str, k: int | None = None) -> list[float]:
    if not isinstance(v, (list, tuple)):
        _fail(path, f"expected a list of numbers, got {v!r}")
    if k is not None and len(v) != k:
        _fail(path, f"expected {k} numbers (one per model), got {len(v)}")
    return [_float(x, f"{path}[{i}]") for i, x in enumerate(v)]


def _simplex(v: Any, path: str, k: int, positive: bool = False) -> list[float]:
    w = _floats(v, path, k)
    if any(x < 0 or (positive and x == 0) for x in w) or abs(sum(w) - 1.0) > 1e-6:
        need = "> 0" if positive else ">= 0"
        _fail(path, f"weights {w} are off the simplex (need each {need} and sum 1; sum is {sum(w):.6g})")
    return w


def _name(v: Any, path: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        _fail(path, f"expected a name of letters, digits, '_', '.', '-'; got {v!r}")
    return v


def _choice(v: Any, path: str, choices: Sequence[str]) -> str:
    if v not in choices:
        _fail(path, f"must be one of {', '.join(choices)}; got {v!r}")
    return v
