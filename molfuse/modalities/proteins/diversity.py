"""Structural similarity of Cα traces: TM-scores, clusters at a TM threshold, diversity and novelty.

Two TM-score methods (:data:`METHODS`), both the TM-score of Zhang & Skolnick (2004),
``TM = (1 / L_norm) Σ_aligned 1 / (1 + (d_i / d0(L_norm))²)`` with
``d0(L) = 1.24 (L − 15)^(1/3) − 1.8`` Å (at least 0.5 Å), and differing in the alignment:

- ``"tmalign"``: TM-align (``tmtools``, GPLv3, an optional extra: ``pip install tmtools``, in
  ``molfuse[designability]``) finds the residue alignment and the superposition. Cα-only,
  so both chains are given as poly-glycine (TM-align uses the sequences for reporting only).
- ``"fixed"`` (:func:`tm_score_fixed`): residue i of one trace is aligned to residue i of the
  other (equal lengths only), and the superposition is searched as the TMscore program does
  (Kabsch fits on seed fragments, iterated on the residues closer than ``d0_search``). This
  is a real TM-score for that alignment and, in practice, a lower bound of TM-align's (which
  also searches alignments; within 0.02 in the tests); it is the right score where residues correspond (a refolded design vs its
  backbone) and needs nothing beyond numpy.

Normalisation: :func:`tm_score` normalises by the reference's length (TMscore convention);
:func:`tm_matrix` entry ``[i, j]`` is normalised by the length of ``j``; clustering uses the
symmetric ``min(M, Mᵀ)`` (normalised by the longer chain); novelty normalises by the sample's
length (how much of the sample its nearest reference covers). For equal lengths these coincide.

Diversity (the FrameDiff / Genie 2 protocol): the number of clusters at TM ≥ 0.5 over the number
of samples (invalid samples count in the denominator), and the mean pairwise TM-score. Clusters
by default are greedy set-cover clusters as in Foldseek / MMseqs2 ``--cluster-mode 0``: repeatedly
take the unassigned sample with the most unassigned neighbours at TM ≥ threshold as a centre
and give it those neighbours (ties to the lowest index); every member has TM ≥ threshold to its
centre. ``linkage="single"`` / ``"complete"`` use scipy's hierarchical clustering cut at
distance ``1 − threshold`` instead. Novelty: the max TM-score of each sample to a reference set
(e.g. the training fragments, :func:`reference_traces`), summarised by mean and median.

Cost (measured on one busy core, ``tests/.../test_proteins_diversity.py``,
``bench/protein_proxy_speed.py``): ``tm_align`` of two 64-residue traces 2–4 ms (128: ≈ 25 ms),
so a 100-sample matrix of 64-residue traces takes ≈ 15 s and novelty against the 1000
64-residue training fragments ≈ 3 s per sample; :func:`tm_score_fixed` 8–13 ms (128: ≈ 20 ms).
"""

from __future__ import annotations

import importlib.metadata as _md
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .geometry import traces as _traces

__all__ = ["METHODS", "LINKAGES", "TMTOOLS_HINT", "d0", "kabsch", "superpose", "ca_rmsd", "tm_pair", "tm_score",
           "tm_score_fixed", "tm_matrix", "clusters", "novelty", "reference_traces", "diversity_table",
           "diversity_settings"]

METHODS = ("tmalign", "fixed")
LINKAGES = ("greedy", "single", "complete")
TMTOOLS_HINT = "TM-align needs tmtools (GPLv3): pip install tmtools  (or pip install 'molfuse[designability]')"
MIN_RESIDUES = 5
TABLE_COLUMNS = ["index", "n_res", "valid", "reason", "cluster", "cluster_size", "mean_tm", "max_tm", "novelty",
                 "nearest_reference"]


def d0(length: int) -> float:
    """TM-score distance scale (Å) for a chain of ``length`` residues (0.5 Å for ≤ 21 residues)."""
    return max(0.5, 1.24 * np.cbrt(length - 15) - 1.8) if length > 21 else 0.5


def kabsch(mobile: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` (3, 3) and translation ``t`` (3,) minimising ``|mobile @ R.T + t − target|²``
    over proper rotations (det +1; Kabsch 1976). Both (n, 3), n ≥ 3."""
    mc, tc = mobile.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((mobile - mc).T @ (target - tc))
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = (u @ np.diag([1.0, 1.0, sign]) @ vt).T
    return rot, tc - mc @ rot.T


def superpose(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``mobile`` (n, 3) after its least-squares rigid fit onto ``target`` (n, 3)."""
    mobile, target = np.asarray(mobile, dtype=np.float64), np.asarray(target, dtype=np.float64)
    rot, t = kabsch(mobile, target)
    return mobile @ rot.T + t


def ca_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """Cα RMSD (Å) of two equal-length (L, 3) traces after optimal rigid superposition."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"RMSD needs equal shapes; got {a.shape} and {b.shape}")
    return float(np.sqrt(((superpose(a, b) - b) ** 2).sum(-1).mean()))


def _tm_sum(d: np.ndarray, scale: float) -> float:
    return float((1.0 / (1.0 + (d / scale) ** 2)).sum())


def tm_score_fixed(query: np.ndarray, reference: np.ndarray, max_iter: int = 20) -> float:
    """TM-score of ``query`` on ``reference`` (both (L, 3) Å) with residue i aligned to residue i,
    maximised over superpositions (TMscore program's search, simplified: seed fragments of
    L, L/2, L/4, … ≥ 4 residues, each Kabsch fit iterated on residues within ``d0_search``)."""
    x, y = np.asarray(query, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"tm_score_fixed aligns residue i to i and needs equal lengths; got {len(x)} and {len(y)}"
                         " (use method='tmalign')")
    n = len(y)
    scale = d0(n)
    cut = float(np.clip(scale, 4.5, 8.0))  # d0_search of TMscore
    best, frag = 0.0, n
    while True:
        for start in range(0, n - frag + 1, max(1, frag // 2)):
            idx = np.arange(start, start + frag)
            for _ in range(max_iter):
                rot, t = kabsch(x[idx], y[idx])
                d = np.linalg.norm(x @ rot.T + t - y, axis=-1)
                best = max(best, _tm_sum(d, scale) / n)
                close = np.flatnonzero(d < cut)
                grow = cut
                while len(close) < 3:  # too few close residues: widen the cut
                    grow += 0.5
                    close = np.flatnonzero(d < grow)
                if np.array_equal(close, idx):
                    break
                idx = close
        if frag <= 4:
            return best
        frag = max(4, frag // 2)


def _tmtools() -> Any:
    try:
        import tmtools
    except ImportError as e:
        raise ImportError(TMTOOLS_HINT) from e
    return tmtools


def tm_pair(a: np.ndarray, b: np.ndarray, method: str = "tmalign") -> tuple[float, float]:
    """TM-scores of one alignment of traces ``a`` (La, 3) and ``b`` (Lb, 3) Å: (normalised by La,
    normalised by Lb)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if method == "fixed":
        tm = tm_score_fixed(a, b)
        return tm, tm
    if method != "tmalign":
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    res = _tmtools().tm_align(np.ascontiguousarray(a), np.ascontiguousarray(b), "G" * len(a), "G" * len(b))
    return float(res.tm_norm_chain1), float(res.tm_norm_chain2)


def tm_score(query: np.ndarray, reference: np.ndarray, method: str = "tmalign") -> float:
    """TM-score of ``query`` aligned to ``reference`` ((L, 3) Å each), normalised by the reference's length."""
    return tm_pair(query, reference, method)[1]


def _checked(trace: np.ndarray) -> str:
    """'' for a usable trace, else the reason it is not."""
    if len(trace) < MIN_RESIDUES:
        return f"{len(trace)} residues (< {MIN_RESIDUES})"
    return "" if np.isfinite(trace).all() else "non-finite coordinates"


def tm_matrix(samples: Any, method: str = "tmalign") -> np.ndarray:
    """(n, n) TM-scores of a list of (L_i, 3) Å traces (or a padded batch, see
    :func:`geometry.traces`): ``[i, j]`` is i aligned to j normalised by the length of j, both
    entries of a pair from one alignment; diagonal 1, NaN rows for unusable traces.
    ``method="fixed"`` needs usable traces of one length (ValueError otherwise)."""
    tr = _traces(samples)
    ok = [not _checked(t) for t in tr]
    lengths = sorted({len(t) for t, good in zip(tr, ok) if good})
    if method == "fixed" and len(lengths) > 1:
        raise ValueError(f"method='fixed' aligns residue i to i and needs one length; got {lengths} (use 'tmalign')")
    m = np.full((len(tr), len(tr)), np.nan)
    for i in range(len(tr)):
        if not ok[i]:
            continue
        m[i, i] = 1.0
        for j in range(i + 1, len(tr)):
            if ok[j]:
                m[j, i], m[i, j] = tm_pair(tr[i], tr[j], method)
    return m


def clusters(tm: np.ndarray, threshold: float = 0.5, linkage: str = "greedy") -> np.ndarray:
    """(n,) cluster labels 0, 1, … of a :func:`tm_matrix` (−1 for NaN rows): samples join at
    ``min(M, Mᵀ) ≥ threshold`` by greedy set cover (default), single or complete linkage."""
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}; got {linkage!r}")
    tm = np.asarray(tm, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(np.diag(tm)))
    sim = np.minimum(tm, tm.T)[np.ix_(ok, ok)]
    labels = np.full(len(tm), -1)
    if len(ok) == 0:
        return labels
    if linkage == "greedy":
        near = np.nan_to_num(sim, nan=0.0) >= threshold
        np.fill_diagonal(near, True)
        left = np.ones(len(ok), dtype=bool)
        k = 0
        while left.any():
            counts = (near[:, left] & left[:, None]).sum(1) * left
            members = near[int(np.argmax(counts))] & left
            labels[ok[members]] = k
            left &= ~members
            k += 1
        return labels
    if len(ok) == 1:
        labels[ok] = 0
        return labels
    from scipy.cluster.hierarchy import fcluster, linkage as hier
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - np.nan_to_num(sim, nan=0.0), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    flat = fcluster(hier(squareform(dist, checks=False), method=linkage), t=1.0 - threshold, criterion="distance")
    labels[ok] = np.unique(flat, return_inverse=True)[1]
    return labels


def novelty(samples: Any, reference: Sequence[np.ndarray], method: str = "tmalign"
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the max TM-score to any reference trace, normalised by the sample's length,
    and the index of that reference; (NaN, −1) for an unusable sample. With ``method="fixed"``
    only references of the sample's length are compared."""
    tr, ref = _traces(samples), _traces(list(reference))
    best, arg = np.full(len(tr), np.nan), np.full(len(tr), -1)
    for i, t in enumerate(tr):
        if _checked(t):
            continue
        for j, r in enumerate(ref):
            if _checked(r) or (method == "fixed" and len(r) != len(t)):
                continue
            tm = tm_pair(t, r, method)[0]
            if not tm <= best[i]:  # also true while best is NaN
                best[i], arg[i] = tm, j
    return best, arg


def reference_traces(split: str = "train", length: int | None = 64, n: int | None = None, seed: int = 0,
                     path: Any = None) -> list[np.ndarray]:
    """Shipped fragments of one split (and length) as a novelty reference: all, or ``n`` drawn with ``seed``."""
    from .data import load_backbones

    data = load_backbones(path).select(split, length)
    if n is not None and n < len(data):
        data = data.take(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))
    return data.traces()


def diversity_settings(method: str = "tmalign", threshold: float = 0.5, linkage: str = "greedy",
                       reference: str | None = None) -> dict[str, Any]:
    """Every setting that changes a diversity or novelty number."""
    version = None
    if method == "tmalign":
        try:
            version = _md.version("tmtools")
        except _md.PackageNotFoundError:
            version = None
    return {"tm_method": method, "tmtools_version": version, "tm_threshold": float(threshold), "linkage": linkage,
            "tm_norm_matrix": "reference (column) length; clusters on min(M, M^T)",
            "tm_norm_novelty": "sample length", "sequence": "poly-glycine" if method == "tmalign" else None,
            "novelty_reference": reference, "invalid_in_denominator": True}


def diversity_table(samples: Any, reference: Sequence[np.ndarray] | None = None, threshold: float = 0.5,
                    linkage: str = "greedy", method: str = "tmalign", reference_name: str | None = None
                    ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per sample (cluster, its size, mean / max TM to the other samples, novelty = max
    TM to ``reference`` and its index; ``valid`` / ``reason``), and a summary: ``n``,
    ``n_clusters``, ``cluster_fraction`` = clusters / n, ``mean_pairwise_tm``, novelty mean /
    median, ``tm_matrix`` (the (n, n) array of :func:`tm_matrix`) and ``settings``."""
    tr = _traces(samples)
    tm = tm_matrix(tr, method)
    labels = clusters(tm, threshold, linkage)
    off = tm.copy()
    np.fill_diagonal(off, np.nan)
    sizes = np.bincount(labels[labels >= 0], minlength=1)
    nov, arg = novelty(tr, reference, method) if reference is not None else (np.full(len(tr), np.nan),
                                                                             np.full(len(tr), -1))
    rows = []
    for i, t in enumerate(tr):
        reason = _checked(t)
        others = off[i][np.isfinite(off[i])]
        rows.append({"index": i, "n_res": len(t), "valid": not reason, "reason": reason,
                     "cluster": int(labels[i]), "cluster_size": int(sizes[labels[i]]) if labels[i] >= 0 else 0,
                     "mean_tm": float(others.mean()) if len(others) else np.nan,
                     "max_tm": float(others.max()) if len(others) else np.nan,
                     "novelty": nov[i], "nearest_reference": int(arg[i])})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    pair = np.minimum(off, off.T)[np.triu_indices(len(tr), 1)]
    pair = pair[np.isfinite(pair)]
    n_clusters = int(labels.max() + 1) if len(labels) else 0
    summary = {"n": len(tr), "n_valid": int(table["valid"].sum()), "n_clusters": n_clusters,
               "cluster_fraction": n_clusters / len(tr) if len(tr) else np.nan,
               "mean_pairwise_tm": float(pair.mean()) if len(pair) else np.nan,
               "novelty_mean": float(np.nanmean(nov)) if np.isfinite(nov).any() else np.nan,
               "novelty_median": float(np.nanmedian(nov)) if np.isfinite(nov).any() else np.nan,
               "tm_matrix": tm, "settings": diversity_settings(method, threshold, linkage, reference_name)}
    return table, summary
