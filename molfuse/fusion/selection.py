"""Choosing among candidate models (merges, soups, fine-tunes) by held-out denoising loss (MATH §2, §6),
on common random numbers so that differences between candidates carry none of the noise's variance."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..base.seeds import seeded_generator
from ..losses import dsm_loss
from ..schedules import Schedule
from ..spaces import Space, resolve_space

__all__ = ["heldout_losses", "heldout_dsm", "choose_by_heldout"]


def _named(models: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    if isinstance(models, Mapping):
        return dict(models)
    out = {}
    for i, m in enumerate(models):
        name = getattr(m, "name", None) or f"model {i}"
        if name in out:
            raise ValueError(f"two candidates are named {name!r}; pass a mapping name -> model")
        out[name] = m
    return out


@torch.no_grad()
def heldout_losses(models: Mapping[str, Any] | Sequence[Any], x0: Tensor, schedule: Schedule, n_t: int = 4,
                   seed: int = 0, cond: Tensor | None = None, mask: Tensor | None = None, space: Space | None = None,
                   batch_size: int = 256, t_min: float = 1e-3) -> dict[str, Tensor]:
    """Per-sample σ²-weighted DSM loss per degree of freedom (MATH §2, §6) of each candidate.

    Common random numbers: for each repetition j < n_t and batch starting at sample s, one
    generator seeded with ``derive_seed(seed, "heldout_dsm", j, s)`` draws ``t = t_min +
    (1 − t_min) u`` and ``ε ~ space.noise``; every candidate sees the same (t, ε), so their
    differences carry none of the noise's variance. The draws depend only on (seed, n_t,
    batch_size, x0), so calls for one candidate at a time (large nets, built one by one) share
    them too.

    Args:
        models: name -> score model, or a sequence (named by ``.name``, else ``"model i"``).
        x0: held-out data in model space (n, ...).
        schedule: the noising convention of every candidate.
        n_t: (t, ε) draws per sample.
        seed: integer seed; the draws also depend on ``batch_size``, never on the candidates.
        cond: per-sample conditions (n, ...) or None (bind fixed conditions with molfuse.bind).
        mask, space: node mask (n, N) and state space of point clouds (MATH §6).
        batch_size: samples per model call.
        t_min: lower end of the time window.

    Returns:
        name -> (n,) float64: ``mean_j dsm_loss / dof``.
    """
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (n_t, batch_size)):
        raise ValueError(f"n_t and batch_size must be integers >= 1; got n_t={n_t!r}, batch_size={batch_size!r}")
    models, n = _named(models), x0.shape[0]
    space = resolve_space(list(models.values()), space)
    out = {name: torch.zeros(n, dtype=torch.float64) for name in models}
    for j in range(n_t):
        for s in range(0, n, batch_size):
            sl = slice(s, min(n, s + batch_size))
            xb, mb, cb = x0[sl], None if mask is None else mask[sl], None if cond is None else cond[sl]
            g = seeded_generator(seed, "heldout_dsm", j, s)
            t = t_min + (1.0 - t_min) * torch.rand(xb.shape[0], generator=g, dtype=torch.float64)
            eps = space.noise(xb.shape, mb, g, x0.device, x0.dtype)
            dof = space.dof(xb.shape, mb).cpu()
            for name, m in models.items():
                loss = dsm_loss(m, xb, schedule, t.to(x0), eps, cond=cb, mask=mb, space=space)
                out[name][sl] += loss.detach().double().cpu() / dof / n_t
    return out


def heldout_dsm(models: Mapping[str, Any] | Sequence[Any], x0: Tensor, schedule: Schedule,
                **kwargs: Any) -> dict[str, tuple[float, float]]:
    """Held-out DSM per degree of freedom of each candidate: name -> (mean, standard error).

    Same arguments as :func:`heldout_losses` (common random numbers across candidates). The
    standard error is each candidate's own, over samples; differences between candidates are
    much more precise than it suggests because the draws are shared.
    """
    table = {}
    for name, v in heldout_losses(models, x0, schedule, **kwargs).items():
        se = float(v.std(correction=1) / math.sqrt(v.numel())) if v.numel() > 1 else math.nan
        table[name] = (float(v.mean()), se)
    return table


def choose_by_heldout(models: Mapping[str, Any] | Sequence[Any], x0: Tensor, schedule: Schedule,
                      **kwargs: Any) -> tuple[str, dict[str, tuple[float, float]]]:
    """The candidate with the lowest :func:`heldout_dsm` mean (NaN counts as worst; the first
    listed wins a tie), and the whole table."""
    table = heldout_dsm(models, x0, schedule, **kwargs)
    best = min(table, key=lambda k: table[k][0] if math.isfinite(table[k][0]) else math.inf)
    return best, table
