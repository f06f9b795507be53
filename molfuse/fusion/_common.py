"""Helpers shared by the fusion operators: member validation and score wrapping."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..convert import ScoreFn, resolve_schedule, score_fn
from ..schedules import Schedule
from ..spaces import Space, resolve_space

__all__ = ["check_members", "member_fns", "member_probe", "stack_scores"]


def check_members(models: Sequence[Any], what: str, minimum: int = 2) -> list[Any]:
    """A list of at least ``minimum`` callables, or a clear error naming the operator."""
    models = list(models)
    if len(models) < minimum:
        raise ValueError(f"{what} needs at least {minimum} models; got {len(models)}")
    for i, m in enumerate(models):
        if not callable(m):
            raise TypeError(f"{what}: member {i} ({type(m).__name__}) is not a callable score model")
    return models


def member_fns(models: Sequence[Any], schedule: Schedule | None,
               space: Space | None = None) -> tuple[list[ScoreFn], Schedule | None, Space]:
    """Score functions of every member in one shared convention (MATH §1) and state space (§6).

    Raises ConventionError when members declare different schedules or spaces, or when a
    member predicts eps/x0/v and no schedule is known.
    """
    schedule = resolve_schedule(models, schedule)
    space = resolve_space(models, space)
    return [score_fn(m, schedule, space) for m in models], schedule, space


def stack_scores(fns: Sequence[ScoreFn], x: Tensor, t: Any, cond: Any = None, mask: Tensor | None = None) -> Tensor:
    """Member scores at (x, t) stacked on dim 1: (batch, K, ...)."""
    return torch.stack([f(x, t, cond, mask) for f in fns], dim=1)


def member_probe(schedule: Schedule | None, space: Space, x: Tensor, t: float, cond: Any = None,
                 mask: Tensor | None = None) -> Callable[[Any], Tensor]:
    """``probe(model)``: that model's score at the pre-step point ``(x, t)``, (batch, ...); what
    :func:`~molfuse.sampling.check_state` calls (only when the state failed) to find which member
    inside an operator made it non-finite."""
    return lambda m: score_fn(m, schedule, space)(x, t, cond, mask)
