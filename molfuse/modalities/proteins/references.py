"""The real fragments a backbone evaluation compares with (``evaluation.reference``), their
angle / dihedral histograms and radii of gyration, cached per process."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from .data import Backbones, load_backbones, population
from .geometry import histograms, radius_of_gyration

__all__ = ["reference_fragments", "reference_traces", "reference_stats", "reference_histogram"]


@lru_cache(maxsize=32)
def _fragments(split: str, pop: str, where: tuple, length: int) -> Backbones:
    return population(load_backbones().select(split, length), pop, {k: list(v) for k, v in where})


def _key(reference: Mapping[str, Any]) -> tuple[str, str, tuple]:
    where = tuple(sorted((k, tuple(v)) for k, v in (reference.get("where") or {}).items()))
    return reference["split"], reference["population"], where


def reference_fragments(reference: Mapping[str, Any], length: int) -> Backbones:
    """The real fragments of one length that ``reference`` ({split, population, where}) names."""
    return _fragments(*_key(reference), int(length))


def reference_traces(reference: Mapping[str, Any], lengths: Sequence[int]) -> dict[int, list[np.ndarray]]:
    """The real fragments ``reference`` names, per length, as (L, 3) Å traces."""
    return {int(L): reference_fragments(reference, L).traces() for L in sorted({int(L) for L in lengths})}


@lru_cache(maxsize=64)
def _stats(split: str, pop: str, where: tuple, length: int) -> dict[str, Any]:
    ref = _fragments(split, pop, where, length).traces()
    return {"n": len(ref), "hist": histograms(list(ref)) if ref else None,
            "rg": float(np.median([radius_of_gyration(t) for t in ref])) if ref else math.nan}


def reference_stats(reference: Mapping[str, Any], length: int) -> dict[str, Any]:
    """Of the reference fragments of one length: ``n``, normalised angle / dihedral ``hist`` and median ``rg`` (Å)."""
    return _stats(*_key(reference), int(length))


def reference_histogram(reference: Mapping[str, Any], counts: Mapping[int, int], which: str) -> np.ndarray | None:
    """The reference fragments' normalised ``angle`` or ``dihedral`` histogram, mixed over lengths with
    the samples' weights (``counts[L]`` backbones of L residues hold ``L - 2`` angles, ``L - 3`` dihedrals);
    None when no reference fragment has those lengths."""
    per = 2 if which == "angle" else 3
    parts = [(n * (L - per), reference_stats(reference, L)["hist"]) for L, n in counts.items()]
    parts = [(w, h[which]) for w, h in parts if h is not None and w > 0 and np.isfinite(h[which]).all()]
    if not parts:
        return None
    total = sum(w for w, _ in parts)
    return sum(w * h for w, h in parts) / total
