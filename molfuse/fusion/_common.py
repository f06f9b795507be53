"""Helpers shared by the fusion operators: member validation, score wrapping, weights."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..convert import ScoreFn, resolve_schedule, score_fn
from ..errors import WeightsError
from ..schedules import Schedule

__all__ = ["check_members", "member_fns", "as_weights", "stack_scores"]


def check_members(models: Sequence[Any], what: str, minimum: int = 2) -> list[Any]:
    """A list of at least ``minimum`` callables, or a clear error naming the operator."""
    models = list(models)
    if len(models) < minimum:
        raise ValueError(f"{what} needs at least {minimum} models; got {len(models)}")
    for i, m in enumerate(models):
        if not callable(m):
            raise TypeError(f"{what}: member {i} ({type(m).__name__}) is not a callable score model")
    return models


def member_fns(models: Sequence[Any], schedule: Schedule | None) -> tuple[list[ScoreFn], Schedule | None]:
    """Score functions of every member in one shared convention (MATH §1).

    Raises ConventionError when members declare different schedules, or when a member
    predicts eps/x0/v and no schedule is known.
    """
    schedule = resolve_schedule(models, schedule)
    return [score_fn(m, schedule) for m in models], schedule


def as_weights(weights: Any, k: int, what: str, simplex: bool = True, atol: float = 1e-6) -> Tensor:
    """(k,) float64 weights; on the simplex unless ``simplex=False`` (then only finite)."""
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() != k:
        raise WeightsError(f"{what}: {w.numel()} weights for {k} models")
    if not torch.isfinite(w).all():
        raise WeightsError(f"{what}: weights must be finite; got {w.tolist()}")
    if simplex and ((w < -atol).any() or abs(float(w.sum()) - 1.0) > atol):
        raise WeightsError(
            f"{what}: weights {[round(v, 6) for v in w.tolist()]} are off the simplex "
            f"(need >= 0 and sum 1, sum is {float(w.sum()):.6g})"
        )
    return w


def stack_scores(fns: Sequence[ScoreFn], x: Tensor, t: Any, cond: Any = None) -> Tensor:
    """Member scores at (x, t) stacked on dim 1: (batch, K, ...)."""
    return torch.stack([f(x, t, cond) for f in fns], dim=1)
