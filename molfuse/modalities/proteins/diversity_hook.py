"""Metric hook ``evaluation.diversity``: TM-score clusters, pairwise similarity and novelty (:mod:`.diversity`).

::

    evaluation:
      diversity:                   # null (default): off; `true`: every default below
        {method: tmalign | fixed = tmalign, threshold: 0.5, linkage: greedy | single | complete = greedy,
         novelty: true, reference_n: 200, valid_only: true}

Per backbone (``per_sample.csv``): ``novelty_tm``, the max TM-score (normalised by the
backbone's length) to ``reference_n`` training fragments of the same length (all of the
``train`` split, drawn with seed 0: the same set for every method and reference row; lower is
more novel), and ``tm_cluster``, its cluster label. Per method (``metrics.csv``):
``n_clusters`` at TM ≥ ``threshold``, ``cluster_fraction`` = clusters over all backbones,
``mean_pairwise_tm`` (symmetric ``min(M, Mᵀ)`` over pairs) and ``novelty_mean``.

``valid_only`` (default): only backbones the geometry calls valid are compared (a pile of
broken chains is diverse but says nothing); the others are rows with a reason and still count
in the denominator of ``cluster_fraction``. ``method: fixed`` (residue i to residue i, numpy
only) compares backbones of one length only: with several lengths clusters are formed per
length. ``tmalign`` needs ``tmtools`` (``pip install 'molfuse[designability]'``); the workflow is
refused while it is read when it is missing.

Cost (TM-align, one busy core): 2.8 ms per pair of 64-residue traces, 21 ms at 128; so the
novelty of one backbone against 200 fragments takes 0.6 s (64) / 4 s (128), and the matrix of
n backbones n(n − 1)/2 pairs (96 of 64 residues: 13 s).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ...base.checks import as_bool, as_choice, as_float, as_int, fail, fields
from .diversity import (
    LINKAGES,
    METHODS,
    TMTOOLS_HINT,
    clusters,
    diversity_settings,
    novelty,
    tm_matrix,
)
from .hooks import HookContext, MetricHook
from .references import reference_fragments

__all__ = ["HOOK", "OPTIONS", "NOVELTY_REFERENCE", "parse", "compute", "novelty_reference"]

OPTIONS = {"method": "tmalign", "threshold": 0.5, "linkage": "greedy", "novelty": True, "reference_n": 200,
           "valid_only": True}
NOVELTY_REFERENCE = {"split": "train", "population": "all", "where": None}
COLUMNS = ["index", "n_res", "valid", "reason", "novelty_tm", "tm_cluster"]


def parse(value: Any, path: str) -> dict | None:
    """The checked settings (``true``: the defaults; ``false``: off). ``tmalign`` without tmtools is refused here."""
    if value is False:
        return None
    f = fields({} if value is True else value, path, OPTIONS)
    out = {"method": as_choice(f["method"], f"{path}.method", METHODS),
           "threshold": as_float(f["threshold"], f"{path}.threshold", 0.0, 1.0),
           "linkage": as_choice(f["linkage"], f"{path}.linkage", LINKAGES),
           "novelty": as_bool(f["novelty"], f"{path}.novelty"),
           "reference_n": as_int(f["reference_n"], f"{path}.reference_n", 1),
           "valid_only": as_bool(f["valid_only"], f"{path}.valid_only")}
    if out["method"] == "tmalign" and importlib.util.find_spec("tmtools") is None:
        fail(f"{path}.method", f"{TMTOOLS_HINT}; or method: fixed (residue i to i, numpy only, one length)")
    return out


def novelty_reference(length: int, n: int) -> list[np.ndarray]:
    """``n`` training fragments of ``length`` residues (all if fewer), drawn with seed 0, as (L, 3) Å traces."""
    frags = reference_fragments(NOVELTY_REFERENCE, length).traces()
    if n >= len(frags):
        return frags
    return [frags[i] for i in np.sort(np.random.default_rng(0).choice(len(frags), n, replace=False))]


def _groups(lengths: np.ndarray, method: str) -> list[np.ndarray]:
    """Index groups compared with each other: all, or (``fixed``) one per length."""
    if method != "fixed":
        return [np.arange(len(lengths))]
    return [np.flatnonzero(lengths == L) for L in np.unique(lengths)]


def compute(traces: Sequence[np.ndarray], valid: np.ndarray, value: dict, ctx: HookContext
            ) -> tuple[pd.DataFrame, dict]:
    """One method's rows (``novelty_tm``, ``tm_cluster``, ``valid`` / ``reason``) and summary."""
    n = len(traces)
    use = np.flatnonzero(np.asarray(valid, dtype=bool) if value["valid_only"] else np.ones(n, dtype=bool))
    lengths = np.array([len(traces[i]) for i in use], dtype=int)
    labels, nov, pairs, next_label = np.full(n, -1), np.full(n, np.nan), [], 0
    for group in _groups(lengths, value["method"]):
        idx = use[group]
        tm = tm_matrix([traces[i] for i in idx], value["method"])
        lab = clusters(tm, value["threshold"], value["linkage"])
        labels[idx] = np.where(lab >= 0, lab + next_label, -1)
        next_label += int(lab.max()) + 1 if (lab >= 0).any() else 0
        sym = np.minimum(tm, tm.T)[np.triu_indices(len(idx), 1)]
        pairs += sym[np.isfinite(sym)].tolist()
    if value["novelty"]:
        for L in np.unique(lengths):
            idx = use[lengths == L]
            nov[idx] = novelty([traces[i] for i in idx], novelty_reference(int(L), value["reference_n"]),
                               value["method"])[0]
    reason = np.where(labels >= 0, "", "not a usable trace").astype(object)
    if value["valid_only"]:
        reason[~np.asarray(valid, dtype=bool)] = "geometry invalid: not compared (valid_only)"
    table = pd.DataFrame({"index": np.arange(n), "n_res": [len(t) for t in traces], "valid": labels >= 0,
                          "reason": reason, "novelty_tm": nov, "tm_cluster": labels}, columns=COLUMNS)
    row = {"n_clusters": next_label, "cluster_fraction": next_label / n if n else np.nan,
           "mean_pairwise_tm": float(np.mean(pairs)) if pairs else np.nan,
           "novelty_mean": float(np.nanmean(nov)) if np.isfinite(nov).any() else np.nan}
    return table, row


def record(value: dict) -> dict:
    """What changes these numbers besides the settings: TM-score method, tmtools version, normalisations."""
    ref = (f"{value['reference_n']} fragments of the backbone's length from the train split (seed 0)"
           if value["novelty"] else None)
    return {**diversity_settings(value["method"], value["threshold"], value["linkage"], ref),
            "valid_only": value["valid_only"], "fixed_method_groups": "one per length" if value["method"] == "fixed"
            else None}


NOTES = ("`n_clusters` / `cluster_fraction`: clusters of the valid backbones at TM-score ≥ `evaluation.diversity."
         "threshold` (greedy set cover by default), over all backbones (invalid ones count); `mean_pairwise_tm`: mean "
         "TM-score over pairs of valid backbones; `novelty_mean` / `novelty_tm`: max TM-score to `reference_n` "
         "training fragments of the same length (normalised by the backbone's length; lower is more novel).")

HOOK = MetricHook(key="diversity", default=None, parse=parse, compute=compute,
                  metric_columns=("n_clusters", "cluster_fraction", "mean_pairwise_tm", "novelty_mean"),
                  sample_columns=("novelty_tm", "tm_cluster", "diversity_reason"),
                  headline=("cluster_fraction", "novelty_mean"), notes=NOTES, record=record)
