"""Per-sample and per-method metrics for vector samples (toy / tabular data): pure functions.

Every function takes arrays and models and returns a DataFrame (one row per sample) or a
dict (one row per method). Log-densities are in nats. An invalid sample (non-finite
coordinates) is a row with ``valid = False``, a reason and NaN metrics, never an exception.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["coordinates", "exact_log_q", "per_sample_table", "method_metrics"]


def coordinates(x: np.ndarray, max_dim: int = 3) -> pd.DataFrame:
    """Columns ``x0 .. x{D-1}`` for samples (n, D) with D <= ``max_dim``; else no columns."""
    flat = x.reshape(len(x), -1)
    if flat.shape[1] > max_dim:
        return pd.DataFrame(index=range(len(x)))
    return pd.DataFrame({f"x{j}": flat[:, j].astype(np.float64) for j in range(flat.shape[1])})


def exact_log_q(x: np.ndarray, models: Mapping[str, Any], t: float, valid: np.ndarray | None = None,
                batch_size: int = 4096) -> pd.DataFrame:
    """Exact ``log q_t(x)`` in nats under every model that has ``.log_prob(x, t)``.

    Args:
        x: samples (n, D).
        models: column name -> model; models without ``log_prob`` are skipped.
        t: the time at which the density is evaluated (the sampler's ``t_end``).
        valid: (n,) bool; invalid rows get NaN.

    Returns:
        One float64 column per model, named by its key (n rows).
    """
    valid = np.ones(len(x), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    rows = np.flatnonzero(valid)
    cols: dict[str, np.ndarray] = {}
    for name, model in models.items():
        if not hasattr(model, "log_prob"):
            continue
        out = np.full(len(x), np.nan)
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            xb = torch.as_tensor(x[idx], dtype=torch.float64)
            with torch.no_grad():
                out[idx] = model.log_prob(xb, t).cpu().numpy()
        cols[name] = out
    return pd.DataFrame(cols, index=range(len(x)))


def per_sample_table(x: np.ndarray, members: Sequence[str], log_q_models: Mapping[str, Any], t_end: float,
                     valid: np.ndarray, target: Any = None) -> pd.DataFrame:
    """Vector columns of one method's ``per_sample.csv`` (RESULTS.md), one row per sample.

    Columns: coordinates ``x0..`` (D <= 3), ``log_q_nats_<m>`` (exact, members with
    ``log_prob``) and ``log_q_nats_target`` (exact, under ``target``); all at ``t_end``, nats.

    Args:
        x: samples (n, ...).
        members: the method's member model names, in operator order.
        log_q_models: member name -> model, for exact log q.
        valid: (n,) bool; invalid rows get NaN.
    """
    n = len(x)
    flat = x.reshape(n, -1)
    valid = np.asarray(valid, dtype=bool)
    parts = [coordinates(x)]
    exact = exact_log_q(flat, {m: log_q_models[m] for m in members}, t_end, valid)
    parts.append(exact.add_prefix("log_q_nats_"))
    if target is not None and "target" not in exact:  # a member named "target" is the target
        parts.append(exact_log_q(flat, {"target": target}, t_end, valid).add_prefix("log_q_nats_"))
    return pd.concat(parts, axis=1)


def _mean(v: pd.Series) -> float:
    v = v.dropna()
    return float(v.mean()) if len(v) else math.nan


def method_metrics(table: pd.DataFrame, members: Sequence[str]) -> dict:
    """Summary of one method's :func:`per_sample_table` (one row of ``metrics.csv``).

    Means are over valid samples, shares over all ``n`` samples.
    - ``mean_log_q_nats_target``: mean exact log-density under the target.
    - ``share_<m>``: share of samples whose highest exact density is member ``m``'s.
    - ``ito_abs_err_nats_<m>``: mean |Itô estimate − exact| where both exist.
    - ``mean_abs_log_q_gap_nats``: mean |log q_a − log q_b| (two-member methods).
    """
    n = len(table)
    row: dict[str, Any] = {}
    if "log_q_nats_target" in table:
        row["mean_log_q_nats_target"] = _mean(table["log_q_nats_target"])
    exact_cols = [f"log_q_nats_{m}" for m in members]
    if all(c in table for c in exact_cols):
        lq = table[exact_cols].to_numpy()
        full = np.isfinite(lq).all(axis=1)
        best = np.argmax(np.where(full[:, None], lq, -np.inf), axis=1)
        for k, m in enumerate(members):
            row[f"share_{m}"] = float(((best == k) & full).sum() / n) if n else math.nan
        if len(members) == 2:
            row["mean_abs_log_q_gap_nats"] = _mean((table[exact_cols[0]] - table[exact_cols[1]]).abs())
    for m in members:
        ito, exact = f"ito_log_q_nats_{m}", f"log_q_nats_{m}"
        if ito in table and exact in table:
            row[f"ito_abs_err_nats_{m}"] = _mean((table[ito] - table[exact]).abs())
    return row


def set_distance(ctx: Any, a: Any, b: Any) -> dict:
    """Distances between two methods' finite vectors (the campaign's ``fidelity`` report):
    ``frechet`` (squared 2-Wasserstein distance of the two sets' Gaussian fits, the Fréchet
    distance on raw coordinates) and ``mean_distance`` (Euclidean distance of the means)."""
    xa, xb = (np.asarray(r.x, dtype=np.float64).reshape(len(r.x), -1) for r in (a, b))
    xa, xb = xa[np.isfinite(xa).all(1)], xb[np.isfinite(xb).all(1)]
    ma, mb = xa.mean(0), xb.mean(0)
    ca, cb = np.atleast_2d(np.cov(xa, rowvar=False)), np.atleast_2d(np.cov(xb, rowvar=False))
    w, v = np.linalg.eigh(ca)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = np.linalg.eigvalsh(root @ cb @ root)
    frechet = float(((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(mid, 0, None)).sum())
    return {"frechet": max(frechet, 0.0), "mean_distance": float(np.linalg.norm(ma - mb)), "n_a": len(xa), "n_b": len(xb)}
