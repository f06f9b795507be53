"""Distance between two methods' molecule sets (the campaign's ``fidelity`` report).

``set_distance(ctx, a, b)`` compares the per-molecule numbers the evaluator computes (the
molecules of :func:`.evaluate.built`, their RDKit properties of :mod:`.properties`) as 1-D
distributions: Wasserstein-1 distances, the validity gap and, when ``fcd_torch`` is installed,
the Fréchet ChemNet distance between the two sets' valid SMILES.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any, Mapping

import numpy as np
from scipy.stats import wasserstein_distance

from ...plugins import EvalContext, MethodRun
from .evaluate import built
from .metrics import fcd
from .properties import compute_properties
from .schema import parse_evaluation

__all__ = ["set_distance", "molecule_values", "ALWAYS"]

ALWAYS = ("rings", "heteroatoms")  # chemistry properties compared whatever ``evaluation.properties`` lists


def _settings(ctx: EvalContext, run: MethodRun) -> dict:
    return run.cache.get("settings") or ctx.settings or parse_evaluation({})


def _names(s: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys([*s.get("properties", ()), *ALWAYS]))


def molecule_values(ctx: EvalContext, run: MethodRun) -> dict:
    """One run's numbers, computed once per run and settings (cached in ``run.cache``):
    ``valid`` (n,) bool (the sampler's and RDKit's), ``n_atoms`` (n,) of every sample,
    ``properties`` (a DataFrame of the valid molecules' RDKit properties: ``evaluation.properties``
    and :data:`ALWAYS`) and ``smiles`` (the valid molecules' largest fragments)."""
    s = _settings(ctx, run)
    names = _names(s)
    norm = ctx.models[run.members[0]].normalisation
    key = ("molecules_fidelity", tuple(norm["alphabet"]), s["bonds"], tuple(s["margins"]), tuple(names))
    if key not in run.cache:
        table, mols = built(run, norm, s)
        ok = table["valid"].to_numpy(dtype=bool)
        if run.table is not None and "valid" in run.table:
            ok = ok & run.table["valid"].to_numpy(dtype=bool)
        props = compute_properties([m for m, v in zip(mols, ok) if v], names)
        run.cache[key] = {"valid": ok, "n_atoms": table["n_atoms"].to_numpy(dtype=float), "properties": props,
                          "smiles": table.loc[ok, "smiles"].tolist()}
    return run.cache[key]


def _w1(u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(W1, pooled standard deviation) of the finite values of two samples (NaN if either is empty)."""
    u, v = u[np.isfinite(u)], v[np.isfinite(v)]
    if not len(u) or not len(v):
        return math.nan, math.nan
    return float(wasserstein_distance(u, v)), float(np.concatenate([u, v]).std())


def set_distance(ctx: EvalContext, a: MethodRun, b: MethodRun) -> dict:
    """Distances between the molecules of ``a`` and ``b`` (all non-negative, 0 for identical sets).

    - ``n_atoms_w1``: 1-D Wasserstein-1 between the atom-count distributions of every sample
      (valid or not: the atom count is part of the sample);
    - ``<prop>_w1``: the same between the RDKit properties (:mod:`.properties`) of the valid
      molecules, for ``rings``, ``heteroatoms`` and every property of ``evaluation.properties``
      (by default also ``logp`` and ``qed``), in the property's own unit;
    - ``property_w1_mean``: the mean of those W1s (``n_atoms_w1`` included), each first divided
      by the pooled standard deviation of its property (of both sets' values together; a
      property constant over both sets adds 0), so that counts, logP and QED weigh alike;
    - ``validity_diff``: |validity(a) − validity(b)| (validity: share of samples that are valid);
    - ``fcd``: Fréchet ChemNet distance between the two sets' valid SMILES (``a`` against ``b``'s
      ChemNet statistics), only when ``fcd_torch`` is installed (the key is absent otherwise);
    - ``n_a``, ``n_b``: the numbers of valid molecules.

    A set without valid molecules gives NaN chemistry distances (and ``fcd`` below 2)."""
    va, vb = molecule_values(ctx, a), molecule_values(ctx, b)
    out: dict[str, Any] = {}
    scaled = []
    columns = [("n_atoms", va["n_atoms"], vb["n_atoms"])] + [
        (p, va["properties"][p].to_numpy(dtype=float), vb["properties"][p].to_numpy(dtype=float))
        for p in va["properties"].columns]
    for name, u, v in columns:
        w, sd = _w1(u, v)
        out[f"{name}_w1"] = w
        scaled.append(w / sd if sd > 0 else (0.0 if w == 0 else math.nan))
    out["property_w1_mean"] = float(np.mean(scaled))
    validity = [float(v["valid"].mean()) if len(v["valid"]) else math.nan for v in (va, vb)]
    out["validity_diff"] = abs(validity[0] - validity[1])
    if importlib.util.find_spec("fcd_torch") is not None:
        out["fcd"] = max(fcd(va["smiles"], vb["smiles"]), 0.0)
    out.update(n_a=int(va["valid"].sum()), n_b=int(vb["valid"].sum()))
    return out
