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

__all__ = ["validity", "coordinates", "exact_log_q", "per_sample_table", "method_metrics", "markdown_table"]


def validity(x: np.ndarray) -> pd.DataFrame:
    """``valid`` and ``reason`` per sample for samples (n, ...)."""
    ok = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    return pd.DataFrame({"valid": ok, "reason": np.where(ok, "", "non-finite coordinates")})


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


def per_sample_table(method: str, x: np.ndarray, members: Sequence[str], seeds: np.ndarray, chunks: np.ndarray,
                     log_q_models: Mapping[str, Any], t_end: float, target: Any = None,
                     ito: np.ndarray | None = None, fallbacks: np.ndarray | None = None,
                     chosen: np.ndarray | None = None) -> pd.DataFrame:
    """One row per sample of one method (RESULTS.md ``per_sample.csv``).

    Columns: ``id, method, index, chunk, seed, valid, reason``, coordinates ``x0..`` (D <= 3),
    ``chosen_model`` (random choice), ``fallbacks`` (AND), ``ito_log_q_nats_<m>`` (Itô
    estimate per member where tracked), ``log_q_nats_<m>`` (exact, members with ``log_prob``)
    and ``log_q_nats_target`` (exact, under ``target``). All log q at ``t_end``, in nats.

    Args:
        x: samples (n, ...).
        members: the method's member model names, in operator order.
        seeds: (n,) seed of the chunk each sample came from; chunks: (n,) chunk index.
        log_q_models: member name -> model, for exact log q.
        ito: (n, K) Itô log q estimates (NaN where not tracked) or None.
        fallbacks: (n,) AND fallback counts or None; chosen: (n,) member index or None.
    """
    n = len(x)
    val = validity(x)
    table = pd.DataFrame({"id": [f"{method}-{i:06d}" for i in range(n)], "method": method,
                          "index": np.arange(n), "chunk": chunks, "seed": seeds})
    parts = [table, val, coordinates(x)]
    extra = pd.DataFrame(index=range(n))
    if chosen is not None:
        extra["chosen_model"] = [members[int(c)] for c in chosen]
    if fallbacks is not None:
        extra["fallbacks"] = np.asarray(fallbacks, dtype=np.int64)
    if ito is not None:
        for k, m in enumerate(members):
            extra[f"ito_log_q_nats_{m}"] = np.where(val["valid"], ito[:, k], np.nan)
    parts.append(extra)
    flat = x.reshape(n, -1)
    exact = exact_log_q(flat, {m: log_q_models[m] for m in members}, t_end, val["valid"].to_numpy())
    parts.append(exact.add_prefix("log_q_nats_"))
    if target is not None and "target" not in exact:  # a member named "target" is the target
        parts.append(exact_log_q(flat, {"target": target}, t_end, val["valid"].to_numpy()).add_prefix("log_q_nats_"))
    return pd.concat(parts, axis=1)


def _mean(v: pd.Series) -> float:
    v = v.dropna()
    return float(v.mean()) if len(v) else math.nan


def method_metrics(table: pd.DataFrame, members: Sequence[str]) -> dict:
    """Summary of one method's :func:`per_sample_table` (one row of ``metrics.csv``).

    - ``n``, ``n_valid``; means are over valid samples, shares over all ``n`` samples.
    - ``mean_log_q_nats_target``: mean exact log-density under the target.
    - ``share_<m>``: share of samples whose highest exact density is member ``m``'s.
    - ``ito_abs_err_nats_<m>``: mean |Itô estimate − exact| where both exist.
    - ``mean_abs_log_q_gap_nats``: mean |log q_a − log q_b| (two-member methods).
    - ``fallbacks``: total AND steps that fell back to equal weights.
    """
    n = len(table)
    row: dict[str, Any] = {"n": n, "n_valid": int(table["valid"].sum())}
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
    if "fallbacks" in table:
        row["fallbacks"] = int(table["fallbacks"].fillna(0).sum())
    return row


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of ``df`` (floats to ``digits`` significant figures, NaN blank)."""

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])
