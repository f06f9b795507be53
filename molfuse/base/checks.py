"""Value checks for configuration files and tensors: each failure names what is wrong and where.

Workflow and training files are parsed with these: every error is a
:class:`~molfuse.errors.WorkflowError` naming the field path (``methods[2].weights``).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Mapping, Sequence

import torch

from ..errors import NonFiniteError, WorkflowError

__all__ = ["REQUIRED", "at", "fail", "fields", "as_int", "as_float", "as_floats", "as_simplex", "as_name",
           "as_choice", "as_bool", "numeric", "check_finite"]

REQUIRED = object()  # marks a required field in a spec (key -> default or REQUIRED)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def at(path: str, key: Any) -> str:
    """``path.key`` (just ``key`` at the top level)."""
    return f"{path}.{key}" if path else str(key)


def fail(path: str, msg: str) -> None:
    """Raise a WorkflowError ``"<path>: <msg>"``."""
    raise WorkflowError(f"{path or 'workflow'}: {msg}")


def fields(d: Any, path: str, spec: Mapping[str, Any]) -> dict:
    """``d`` checked against ``spec`` (key -> default or REQUIRED); defaults filled in.

    Unknown keys are errors, with the closest allowed key suggested (typos).
    """
    if not isinstance(d, Mapping):
        fail(path, f"expected a mapping, got {type(d).__name__} {d!r}")
    for k in d:
        if k not in spec:
            close = difflib.get_close_matches(str(k), [str(s) for s in spec], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            fail(at(path, k), f"unknown key{hint}; allowed: {', '.join(map(str, spec))}")
    for k, v in spec.items():
        if v is REQUIRED and k not in d:
            fail(at(path, k), "required field is missing")
    return {k: d.get(k, v) for k, v in spec.items()}


def as_int(v: Any, path: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        fail(path, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        fail(path, f"must be >= {lo}; got {v}")
    return v


def as_float(v: Any, path: str, lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> float:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``); numeric strings accepted
    (YAML 1.1 reads ``1e-3`` as text)."""
    try:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError
        f = float(v)
    except ValueError:
        fail(path, f"expected a number, got {v!r}")
    if not math.isfinite(f) or (lo is not None and (f <= lo if open_lo else f < lo)) or (hi is not None and f > hi):
        rng = f"{'(' if open_lo else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        fail(path, f"must be a finite number in {rng}; got {v!r}")
    return f


def as_floats(v: Any, path: str, k: int | None = None) -> list[float]:
    if not isinstance(v, (list, tuple)):
        fail(path, f"expected a list of numbers, got {v!r}")
    if k is not None and len(v) != k:
        fail(path, f"expected {k} numbers (one per model), got {len(v)}")
    return [as_float(x, f"{path}[{i}]") for i, x in enumerate(v)]


def as_simplex(v: Any, path: str, k: int, positive: bool = False) -> list[float]:
    """``k`` weights, each >= 0 (> 0 with ``positive``), summing to 1 within 1e-6."""
    w = as_floats(v, path, k)
    if any(x < 0 or (positive and x == 0) for x in w) or abs(sum(w) - 1.0) > 1e-6:
        need = "> 0" if positive else ">= 0"
        fail(path, f"weights {w} are off the simplex (need each {need} and sum 1; sum is {sum(w):.6g})")
    return w


def as_name(v: Any, path: str) -> str:
    """A name of letters, digits, ``_``, ``.``, ``-`` (safe as a folder name)."""
    if not isinstance(v, str) or not _NAME.match(v):
        fail(path, f"expected a name of letters, digits, '_', '.', '-'; got {v!r}")
    return v


def as_choice(v: Any, path: str, choices: Sequence[str]) -> str:
    if v not in choices:
        fail(path, f"must be one of {', '.join(choices)}; got {v!r}")
    return v


def as_bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        fail(path, f"must be true or false; got {v!r}")
    return v


def numeric(v: Any) -> Any:
    """Nested lists with numeric strings (YAML 1.1 reads ``1e-3`` as text) made numbers."""
    if isinstance(v, (list, tuple)):
        return [numeric(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"expected a number, got {v!r}") from None
    return v


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` unchanged, or a NonFiniteError saying how many entries of how many rows are NaN / inf.

    Args:
        x: a tensor (batch, ...).
        what: names the producer and the moment, e.g. ``"model 'lo' at t=0.53"``.
    """
    if bool(torch.isfinite(x).all()):
        return x
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1) if x.dim() else x.reshape(1, 1))
    rows = int(bad.any(-1).sum())
    kinds = ("NaN" if bool(torch.isnan(x).any()) else "") + ("/inf" if bool(torch.isinf(x).any()) else "")
    raise NonFiniteError(f"{what}: returned {kinds.strip('/')} in {rows} of {bad.shape[0]} samples "
                         f"({int(bad.sum())} values)")
