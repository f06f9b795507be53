"""Distance between two methods' backbone sets (the campaign's ``fidelity`` report).

``set_distance(ctx, a, b)`` compares the Cα geometry the evaluator measures (:mod:`.geometry`
on the traces of :func:`.evaluate.decoded_traces`) as 1-D distributions: Wasserstein-1
distances of the pooled bond angles and virtual dihedrals (circular for dihedrals), of the
per-backbone P-SEA helix and strand fractions and radii of gyration, and the gaps in the share
of Cα–Cα steps within the bond tolerance and in validity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from ...plugins import EvalContext, MethodRun
from .evaluate import decoded_traces
from .geometry import THRESHOLDS, bond_angles, bond_lengths, geometry_table, virtual_dihedrals
from .schema import parse_evaluation

__all__ = ["set_distance", "backbone_values", "circular_w1"]


def circular_w1(u: np.ndarray, v: np.ndarray, period: float = 360.0) -> float:
    """Wasserstein-1 between two empirical distributions of angles on a circle of ``period``
    (degrees by default; each sample weighted equally within its set), exact on the samples:
    the CDF difference ``D`` between consecutive points, shifted by its median weighted by the
    arc lengths, integrated (Rabin et al. 2011, the rule of :func:`.geometry.histogram_w1` with
    ``circular=True`` without the bins). NaN if either set is empty."""
    u = np.mod(np.asarray(u, dtype=np.float64), period)
    v = np.mod(np.asarray(v, dtype=np.float64), period)
    if not len(u) or not len(v):
        return math.nan
    pts = np.concatenate([u, v])
    w = np.concatenate([np.full(len(u), len(v)), np.full(len(v), -len(u))]).astype(np.int64)  # exact sums
    order = np.argsort(pts, kind="stable")
    pts, diff = pts[order], np.cumsum(w[order]) / float(len(u) * len(v))
    arcs = np.diff(np.append(pts, pts[0] + period))  # arc i runs from point i to point i + 1 (the last wraps)
    by = np.argsort(diff, kind="stable")
    cum = np.cumsum(arcs[by])
    shift = diff[by][np.searchsorted(cum, 0.5 * cum[-1])] if cum[-1] > 0 else 0.0
    return float((arcs * np.abs(diff - shift)).sum())


def _settings(ctx: EvalContext, run: MethodRun) -> dict:
    return run.cache.get("settings") or ctx.settings or parse_evaluation({})


def backbone_values(ctx: EvalContext, run: MethodRun) -> dict:
    """One run's numbers over its measurable backbones (finite, at least 4 residues), computed
    once per run and thresholds (cached in ``run.cache``): pooled ``angles`` and ``dihedrals``
    (degrees), ``step_share`` (of the pooled Cα–Cα steps within bond ± bond_tol), per backbone
    ``helix`` / ``strand`` fractions (P-SEA; NaN where unannotated) and ``rg`` (Å), ``validity``
    (share of every sample valid for the sampler and the geometry) and ``n`` (measurable backbones)."""
    th = {**THRESHOLDS, **(_settings(ctx, run).get("thresholds") or {})}
    key = ("proteins_fidelity", tuple(sorted(th.items())))
    if key not in run.cache:
        traces = decoded_traces(run, ctx.models[run.members[0]].normalisation)
        table = run.cache.get("proteins_table")  # the evaluator's, when it has run (same traces)
        if table is None or len(table) != len(traces):
            table = geometry_table(traces, thresholds=th)
        measured = table["bond_mean"].notna().to_numpy()
        kept = [t for t, m in zip(traces, measured) if m]

        def pooled(f: Any) -> np.ndarray:
            return np.concatenate([f(t) for t in kept]) if kept else np.zeros(0)

        valid = table["valid"].astype(bool).to_numpy()
        if run.table is not None and "valid" in run.table:
            valid = valid & run.table["valid"].to_numpy(dtype=bool)
        part = table[measured]
        steps = pooled(bond_lengths)
        within = np.abs(steps - th["bond"]) <= th["bond_tol"]
        run.cache[key] = {"angles": pooled(bond_angles), "dihedrals": pooled(virtual_dihedrals),
                          "step_share": float(within.mean()) if len(steps) else math.nan,
                          "helix": part["helix"].to_numpy(dtype=float), "strand": part["strand"].to_numpy(dtype=float),
                          "rg": part["rg"].to_numpy(dtype=float),
                          "validity": float(valid.mean()) if len(valid) else math.nan, "n": int(measured.sum())}
    return run.cache[key]


def _w1(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u[np.isfinite(u)], v[np.isfinite(v)]
    return float(wasserstein_distance(u, v)) if len(u) and len(v) else math.nan


def set_distance(ctx: EvalContext, a: MethodRun, b: MethodRun) -> dict:
    """Distances between the backbones of ``a`` and ``b`` (all non-negative, 0 for identical sets),
    over the measurable backbones of each (finite traces of at least 4 residues, valid or not):

    - ``dihedral_w1_deg``: Wasserstein-1 (degrees) between the virtual dihedral distributions
      pooled over residues, on the circle (:func:`circular_w1`: −179° and +179° are 2° apart);
    - ``angle_w1_deg``: Wasserstein-1 (degrees) between the pooled Cα bond-angle distributions;
    - ``helix_w1``, ``strand_w1``: Wasserstein-1 between the per-backbone P-SEA helix / strand
      fractions (:func:`.geometry.sse_codes`, :func:`.geometry.sse_fractions`; backbones P-SEA
      cannot annotate left out);
    - ``rg_w1_A``: Wasserstein-1 (Å) between the radii of gyration (sets of different lengths
      differ here by their lengths alone);
    - ``step_share_diff``: |share(a) − share(b)| of the pooled Cα–Cα steps within the evaluator's
      bond tolerance (``evaluation.thresholds``: bond ± bond_tol, 3.8 ± 0.2 Å by default);
    - ``validity_diff``: |validity(a) − validity(b)| (the evaluator's geometric validity, over
      every sample);
    - ``n_a``, ``n_b``: the numbers of measurable backbones.

    A set without measurable backbones gives NaN distances."""
    va, vb = backbone_values(ctx, a), backbone_values(ctx, b)
    return {"dihedral_w1_deg": circular_w1(va["dihedrals"], vb["dihedrals"]),
            "angle_w1_deg": _w1(va["angles"], vb["angles"]),
            "helix_w1": _w1(va["helix"], vb["helix"]), "strand_w1": _w1(va["strand"], vb["strand"]),
            "rg_w1_A": _w1(va["rg"], vb["rg"]), "step_share_diff": abs(va["step_share"] - vb["step_share"]),
            "validity_diff": abs(va["validity"] - vb["validity"]), "n_a": va["n"], "n_b": vb["n"]}
