"""Cα-trace geometry as pure functions: one row per backbone with ``valid`` and ``reason``, and a summary.

Measured on each trace (Å, degrees):

- consecutive Cα–Cα distances: mean, largest deviation from 3.8 Å, share within 3.8 ± 0.2 Å,
  chain breaks (> 4.2 Å);
- clashes: pairs |i − j| ≥ 3 closer than 3.0 Å;
- radius of gyration against the empirical law for compact real proteins,
  ``Rg ≈ 2.2 N^0.38`` Å (:data:`RG_LAW`; median ratio 1.00, 5–95 % 0.96–1.08, on the 50 whole
  single-chain proteins of MDAnalysisTests ``data/dssp/``; a fragment cut from a larger protein
  may exceed it, so it is reported, not part of ``valid``);
- Cα bond angles (i − 1, i, i + 1): share inside the range real proteins use;
- virtual dihedrals (i − 1 … i + 2) and P-SEA secondary structure on the Cα trace
  (``biotite.structure.annotate_sse``; a trace torn apart by a step above :data:`SSE_MAX_STEP` Å
  gets NaN SSE columns); the mean virtual dihedral over helical stretches is ≈ +50° for
  right-handed α-helices and ≈ −50° for their mirror image.

A trace is ``valid`` when it has no chain break, no clash, at least :data:`MIN_BOND_SHARE` of
its bonds within tolerance and at least :data:`MIN_ANGLE_SHARE` of its angles in range.
:func:`distribution_distances` compares the angle and dihedral histograms of a sample with
the data's on fixed bins: Wasserstein-1 (degrees; circular for dihedrals) and Jensen–Shannon
divergence (bits).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .io import backbone_atoms

__all__ = ["bond_lengths", "bond_angles", "virtual_dihedrals", "radius_of_gyration", "expected_rg", "count_clashes",
           "sse_codes", "sse_fractions", "helix_dihedrals", "helical_dihedral", "traces", "backbone_row", "geometry_table",
           "histograms", "histogram_w1", "js_divergence", "distribution_distances", "summary", "THRESHOLDS",
           "RG_LAW", "ANGLE_BINS", "DIHEDRAL_BINS", "MIN_BOND_SHARE", "MIN_ANGLE_SHARE", "SSE_MAX_STEP"]

THRESHOLDS = {"bond": 3.8, "bond_tol": 0.2, "break": 4.2, "clash": 3.0, "clash_separation": 3,
              "angle_lo": 70.0, "angle_hi": 160.0}
MIN_BOND_SHARE = 0.9
MIN_ANGLE_SHARE = 0.9
RG_LAW = (2.2, 0.38)  # Rg = a N^nu Å, the fit for compact globular proteins used in this field
ANGLE_BINS = np.linspace(0.0, 180.0, 37)  # 5° bins
DIHEDRAL_BINS = np.linspace(-180.0, 180.0, 37)  # 10° bins
SSE_CODES = ("a", "b", "c")  # P-SEA: helix, strand, coil
SSE_MAX_STEP = 20.0  # Å: traces with a longer Cα–Cα step get no P-SEA annotation (NaN fractions)


def bond_lengths(ca: np.ndarray) -> np.ndarray:
    """(L − 1,) consecutive Cα–Cα distances in Å of a (L, 3) trace."""
    return np.linalg.norm(np.diff(np.asarray(ca, dtype=np.float64), axis=0), axis=-1)


def bond_angles(ca: np.ndarray) -> np.ndarray:
    """(L − 2,) Cα angles (i − 1, i, i + 1) in degrees, in [0, 180]."""
    ca = np.asarray(ca, dtype=np.float64)
    u, v = ca[:-2] - ca[1:-1], ca[2:] - ca[1:-1]
    cos = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def virtual_dihedrals(ca: np.ndarray) -> np.ndarray:
    """(L − 3,) Cα virtual dihedrals (i − 1, i, i + 1, i + 2) in degrees, in (−180, 180] (IUPAC sign)."""
    ca = np.asarray(ca, dtype=np.float64)
    b0, b1, b2 = ca[1:-2] - ca[:-3], ca[2:-1] - ca[1:-2], ca[3:] - ca[2:-1]
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)  # Blondel & Karplus (1996): atan2(|b1| b0·n2, n1·n2)
    return np.degrees(np.arctan2(np.linalg.norm(b1, axis=-1) * (b0 * n2).sum(-1), (n1 * n2).sum(-1)))


def radius_of_gyration(ca: np.ndarray) -> float:
    """Radius of gyration of the Cα atoms, Å."""
    ca = np.asarray(ca, dtype=np.float64)
    return float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(-1).mean()))


def expected_rg(n: int | np.ndarray, law: tuple[float, float] = RG_LAW) -> np.ndarray:
    """Empirical Rg (Å) of a compact protein of ``n`` residues: ``a n^nu`` (:data:`RG_LAW`)."""
    return law[0] * np.asarray(n, dtype=np.float64) ** law[1]


def count_clashes(ca: np.ndarray, cutoff: float = THRESHOLDS["clash"],
                  separation: int = THRESHOLDS["clash_separation"]) -> int:
    """Number of Cα pairs with |i − j| ≥ ``separation`` closer than ``cutoff`` Å."""
    ca = np.asarray(ca, dtype=np.float64)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    i, j = np.triu_indices(len(ca), k=separation)
    return int((d[i, j] < cutoff).sum())


def sse_codes(ca: np.ndarray) -> np.ndarray:
    """(L,) P-SEA secondary structure of a Cα trace: ``a`` helix, ``b`` strand, ``c`` coil."""
    import biotite.structure as struc

    return np.asarray(struc.annotate_sse(backbone_atoms(ca)), dtype="U1")


def sse_fractions(codes: Sequence[str]) -> dict[str, float]:
    """``{helix, strand, coil}`` shares of a P-SEA string (NaN for an empty or unannotated one)."""
    codes = np.asarray(codes)
    if not len(codes) or not np.isin(codes, SSE_CODES).any():
        return {"helix": np.nan, "strand": np.nan, "coil": np.nan}
    return {name: float((codes == c).mean()) for name, c in zip(("helix", "strand", "coil"), SSE_CODES)}


def _circular_mean(deg: np.ndarray) -> float:
    if not len(deg):
        return float("nan")
    rad = np.radians(deg)
    return float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))


def helix_dihedrals(ca: np.ndarray, codes: Sequence[str]) -> np.ndarray:
    """Virtual dihedrals (degrees) whose four residues P-SEA calls helix."""
    h = np.asarray(codes) == "a"
    inside = h[:-3] & h[1:-2] & h[2:-1] & h[3:]
    return virtual_dihedrals(ca)[inside]


def helical_dihedral(ca: np.ndarray, codes: Sequence[str] | None = None) -> float:
    """Circular mean virtual dihedral (degrees) over helical stretches: ≈ +50° right-handed,
    ≈ −50° mirrored; NaN without a helix of ≥ 4 residues."""
    codes = sse_codes(ca) if codes is None else codes
    return _circular_mean(helix_dihedrals(ca, codes))


def _one_trace(c: Any, i: int) -> np.ndarray:
    """Trace ``i`` of a list as (L, 3) float64 (an empty one as (0, 3)); never reshaped from another shape."""
    c = np.asarray(c, dtype=np.float64)
    if c.size == 0:
        return c.reshape(0, 3)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"trace {i} has shape {c.shape}; expected (L, 3) Cα positions in Å")
    return c


def traces(ca: Any, mask: Any = None) -> list[np.ndarray]:
    """(L_i, 3) float64 arrays from a list of traces or a padded (n, L, 3) batch with (n, L) mask.

    Raises:
        ValueError: a trace, the batch or the mask of another shape (named; nothing is reshaped).
    """
    if isinstance(ca, (list, tuple)):
        return [_one_trace(c, i) for i, c in enumerate(ca)]
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim == 2:
        ca = ca[None]
    if ca.ndim != 3 or ca.shape[2] != 3:
        raise ValueError(f"a batch of traces is (n, L, 3) Å; got shape {ca.shape}")
    mask = np.ones(ca.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != ca.shape[:2]:
        raise ValueError(f"mask must be (n, L) = {ca.shape[:2]}; got shape {mask.shape}")
    return [ca[i][mask[i]] for i in range(len(ca))]


def _reasons(row: Mapping[str, Any], th: Mapping[str, float]) -> list[str]:
    out = []
    if row["n_breaks"]:
        out.append(f"{row['n_breaks']} chain breaks (Cα–Cα > {th['break']} Å)")
    if row["n_clashes"]:
        out.append(f"{row['n_clashes']} clashes (|i−j| ≥ {th['clash_separation']}, < {th['clash']} Å)")
    if row["bond_share"] < MIN_BOND_SHARE:
        out.append(f"{row['bond_share']:.2f} of bonds within {th['bond']} ± {th['bond_tol']} Å (< {MIN_BOND_SHARE})")
    if row["angle_share"] < MIN_ANGLE_SHARE:
        out.append(f"{row['angle_share']:.2f} of angles in [{th['angle_lo']}, {th['angle_hi']}]° (< {MIN_ANGLE_SHARE})")
    return out


def _measure(ca: np.ndarray, th: Mapping[str, float]) -> dict[str, Any]:
    d, ang, dih = bond_lengths(ca), bond_angles(ca), virtual_dihedrals(ca)
    # P-SEA of a trace torn apart (a step of tens of Å: a diverged sample) means nothing, and biotite's
    # cell list over its huge box costs seconds; its SSE fractions and helical dihedral are NaN
    codes = sse_codes(ca) if d.max() <= SSE_MAX_STEP else np.full(len(ca), "", dtype="U1")
    rg = radius_of_gyration(ca)
    return {"bond_mean": float(d.mean()), "bond_max_dev": float(np.abs(d - th["bond"]).max()),
            "bond_share": float((np.abs(d - th["bond"]) <= th["bond_tol"]).mean()),
            "n_breaks": int((d > th["break"]).sum()),
            "n_clashes": count_clashes(ca, th["clash"], int(th["clash_separation"])),
            "rg": rg, "rg_ratio": rg / float(expected_rg(len(ca))),
            "angle_mean": float(ang.mean()),
            "angle_share": float(((ang >= th["angle_lo"]) & (ang <= th["angle_hi"])).mean()),
            "dihedral_mean": _circular_mean(dih), **sse_fractions(codes),
            "helix_dihedral": helical_dihedral(ca, codes)}


ROW_COLUMNS = ["index", "n_res", "valid", "reason", "bond_mean", "bond_max_dev", "bond_share", "n_breaks",
               "n_clashes", "rg", "rg_ratio", "angle_mean", "angle_share", "dihedral_mean", "helix", "strand", "coil",
               "helix_dihedral"]


def backbone_row(ca: np.ndarray, index: int = 0, thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Every measure of one (L, 3) Å trace, ``valid`` and ``reason``; a trace that cannot be
    measured (fewer than 4 residues, non-finite) is a row of NaNs with the reason."""
    th = {**THRESHOLDS, **(thresholds or {})}
    ca = np.asarray(ca, dtype=np.float64)
    row: dict[str, Any] = {c: np.nan for c in ROW_COLUMNS}
    if ca.size == 0:
        ca = ca.reshape(0, 3)
    if ca.ndim != 2 or ca.shape[1] != 3:
        return {**row, "index": index, "n_res": 0, "valid": False, "reason": f"shape {ca.shape}; expected (L, 3) Å"}
    row.update(index=index, n_res=len(ca), valid=False)
    if len(ca) < 4:
        return {**row, "reason": f"{len(ca)} residues (< 4)"}
    if not np.isfinite(ca).all():
        return {**row, "reason": "non-finite coordinates"}
    try:
        row.update(_measure(ca, th))
    except Exception as e:  # noqa: BLE001 - one bad trace is a row, not a stopped batch
        return {**row, "reason": f"{type(e).__name__}: {e}"}
    reasons = _reasons(row, th)
    return {**row, "valid": not reasons, "reason": "; ".join(reasons)}


def geometry_table(ca: Any, mask: Any = None, thresholds: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per backbone (:func:`backbone_row`) of a list of (L_i, 3) traces or a padded
    (n, L, 3) Å batch with its (n, L) mask."""
    return pd.DataFrame([backbone_row(c, i, thresholds) for i, c in enumerate(traces(ca, mask))],
                        columns=ROW_COLUMNS)


def histograms(trace_list: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Normalised histograms of Cα angles (:data:`ANGLE_BINS`) and virtual dihedrals
    (:data:`DIHEDRAL_BINS`) pooled over the finite traces of ≥ 4 residues."""
    ok = [t for t in trace_list if len(t) >= 4 and np.isfinite(t).all()]
    ang = np.concatenate([bond_angles(t) for t in ok]) if ok else np.zeros(0)
    dih = np.concatenate([virtual_dihedrals(t) for t in ok]) if ok else np.zeros(0)
    out = {}
    for name, values, bins in (("angle", ang, ANGLE_BINS), ("dihedral", dih, DIHEDRAL_BINS)):
        h = np.histogram(values, bins=bins)[0].astype(np.float64)
        out[name] = h / h.sum() if h.sum() else np.full(len(h), np.nan)
    return out


def histogram_w1(p: np.ndarray, q: np.ndarray, width: float, circular: bool = False) -> float:
    """Wasserstein-1 between two normalised histograms on equal bins of ``width`` (degrees).

    On the circle the optimal transport shifts the CDF difference by its median (Rabin et al. 2011)."""
    diff = np.cumsum(np.asarray(p) - np.asarray(q))
    if circular:
        diff = diff - np.median(diff)
    return float(np.abs(diff).sum() * width)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (0 identical, 1 disjoint) of two normalised histograms."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def distribution_distances(sample: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict[str, float]:
    """Angle and dihedral histogram distances of a sample to reference traces:
    ``angle_w1`` / ``dihedral_w1`` (degrees; circular for dihedrals), ``angle_js`` / ``dihedral_js`` (bits)."""
    hs, hr = histograms(sample), histograms(reference)
    wa, wd = ANGLE_BINS[1] - ANGLE_BINS[0], DIHEDRAL_BINS[1] - DIHEDRAL_BINS[0]
    return {"angle_w1": histogram_w1(hs["angle"], hr["angle"], wa),
            "angle_js": js_divergence(hs["angle"], hr["angle"]),
            "dihedral_w1": histogram_w1(hs["dihedral"], hr["dihedral"], wd, circular=True),
            "dihedral_js": js_divergence(hs["dihedral"], hr["dihedral"])}


def summary(table: pd.DataFrame, sample: Sequence[np.ndarray] | None = None,
            reference: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Validity, means over the measurable rows, the circular mean of the per-backbone helical
    dihedrals, and (given traces) histogram distances to the reference."""
    n = len(table)
    measured = table[table["bond_mean"].notna()]
    out = {"n": n, "validity": float(table["valid"].astype(bool).mean()) if n else np.nan}
    for col in ("bond_mean", "bond_share", "n_breaks", "n_clashes", "rg_ratio", "angle_share", "helix", "strand",
                "coil"):
        out[col] = float(measured[col].mean()) if len(measured) else np.nan
    hd = measured["helix_dihedral"].dropna()
    out["helix_dihedral"] = _circular_mean(hd.to_numpy()) if len(hd) else np.nan
    if sample is not None and reference is not None:
        out.update(distribution_distances(sample, reference))
    return out
