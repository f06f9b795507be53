"""Rank agreement between two sequences of scores (is a cheap proxy ordering candidates as a metric
does?): Spearman's ρ with average ranks for ties, Kendall's τ_b."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["rank_correlation", "kendall_tau"]


def _copy(a: Any) -> Any:
    """A writable copy of array-likes (read-only NumPy views, pandas columns) before torch reads them."""
    import numpy as np

    return np.array(a, dtype=np.float64) if not isinstance(a, Tensor) else a


def _pair(a: Sequence[float], b: Sequence[float], what: str) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(_copy(a), dtype=torch.float64).flatten()
    y = torch.as_tensor(_copy(b), dtype=torch.float64).flatten()
    if x.numel() != y.numel():
        raise ValueError(f"{what}: the two sequences have different lengths ({x.numel()} vs {y.numel()})")
    if x.numel() < 3:
        raise ValueError(f"{what}: needs at least 3 pairs; got {x.numel()}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"{what}: values must be finite")
    return x, y


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    order = torch.argsort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    avg = counts.cumsum(0).double() - (counts.double() - 1.0) / 2.0
    ranks = torch.empty_like(x)
    ranks[order] = avg[inverse]
    return ranks


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of average ranks (ties share their mean rank).

    Returns:
        ρ in [-1, 1]; NaN when either sequence is constant (like scipy.stats.spearmanr).

    Raises:
        ValueError: different lengths, fewer than 3 pairs, or non-finite values.
    """
    x, y = (r - r.mean() for r in map(_average_ranks, _pair(a, b, "rank_correlation")))
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else math.nan


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ_b ``(P − Q) / sqrt((n0 − n_x)(n0 − n_y))`` (ties in x, y: n_x, n_y pairs).

    O(n²) memory (pairwise signs); NaN when either sequence is constant.

    Raises:
        ValueError: different lengths, fewer than 3 pairs, or non-finite values.
    """
    x, y = _pair(a, b, "kendall_tau")
    iu = torch.triu_indices(x.numel(), x.numel(), 1)
    dx = torch.sign(x[:, None] - x[None, :])[iu[0], iu[1]]
    dy = torch.sign(y[:, None] - y[None, :])[iu[0], iu[1]]
    n0 = float(dx.numel())
    den = math.sqrt((n0 - float((dx == 0).sum())) * (n0 - float((dy == 0).sum())))
    return float((dx * dy).sum()) / den if den > 0 else math.nan
