"""Pictures of a backbone run (the evaluator's figure hook): traces, SSE composition, geometry histograms.

- ``traces.png``: a few backbones per method, each Cα trace projected on its own two principal
  axes (Å), coloured by P-SEA (helix red, strand gold, coil grey); the top row is real
  reference fragments.
- ``sse_composition.png``: mean helix / strand / coil fractions per method, real reference first.
- ``geometry_histograms.png``: Cα angle and virtual dihedral histograms per method against the
  reference fragments of the same lengths (grey).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...base.io import atomic_write
from .geometry import (
    ANGLE_BINS,
    DIHEDRAL_BINS,
    SSE_MAX_STEP,
    bond_lengths,
    histograms,
    sse_codes,
)
from .references import reference_fragments, reference_histogram, reference_traces

__all__ = ["draw_all", "draw_traces", "draw_composition", "draw_histograms", "SSE_COLOURS"]

SSE_COLOURS = {"a": "#d62728", "b": "#e6b400", "c": "0.6"}  # P-SEA helix, strand, coil


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.tight_layout()
    atomic_write(Path(folder) / name, lambda fh: fig.savefig(fh, format="png", dpi=90))
    return name


def _projected(ca: np.ndarray) -> np.ndarray:
    """(L, 2) coordinates of a trace on its first two principal axes (Å)."""
    centred = ca - ca.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def _draw_one(ax: Any, ca: np.ndarray, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=6)
    if len(ca) < 4 or not np.isfinite(ca).all():
        ax.text(0.5, 0.5, "not drawable", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        return
    xy = _projected(ca)
    codes = sse_codes(ca) if bond_lengths(ca).max() <= SSE_MAX_STEP else np.full(len(ca), "c")
    for i in range(len(xy) - 1):
        ax.plot(xy[i:i + 2, 0], xy[i:i + 2, 1], color=SSE_COLOURS.get(codes[i], "0.6"), lw=1.2)
    ax.plot(*xy[0], "o", color="k", ms=2)  # N-terminus
    ax.set_aspect("equal", adjustable="datalim")


def draw_traces(folder: Path, traces: Mapping[str, Sequence[np.ndarray]], tables: Mapping[str, pd.DataFrame],
                settings: Mapping[str, Any]) -> list[str]:
    """``traces.png``: ``pictures.traces`` backbones of up to ``pictures.methods`` methods, real first."""
    from matplotlib.figure import Figure

    k, m = settings["pictures"]["traces"], settings["pictures"]["methods"]
    names = list(traces)[:m]
    if not k or not names:
        return []
    lengths = sorted({len(t) for name in names for t in traces[name][:k] if len(t) >= 4}) or [64]
    real = [t for L in lengths for t in reference_traces(settings["reference"], [L])[L][:k]][:k]
    rows = [("real " + settings["reference"]["split"], real, None)] + [(n, traces[n][:k], tables.get(n)) for n in names]
    fig = Figure(figsize=(1.6 * k + 1.2, 1.6 * len(rows)))
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (label, row, table) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            ok = "" if table is None else (" ✓" if bool(table["valid"].iloc[c]) else " ✗")
            _draw_one(ax, np.asarray(row[c]), f"{len(row[c])} res{ok}")
        axes[r][0].set_ylabel(label, fontsize=7)
    return [_save(fig, folder, "traces.png")]


def _composition(table: pd.DataFrame) -> list[float]:
    measured = table[table["bond_mean"].notna()] if "bond_mean" in table else table
    return [float(measured[c].mean()) if len(measured) else np.nan for c in ("helix", "strand", "coil")]


def draw_composition(folder: Path, tables: Mapping[str, pd.DataFrame], settings: Mapping[str, Any]) -> list[str]:
    """``sse_composition.png``: stacked mean helix / strand / coil bars per method, real reference first."""
    from matplotlib.figure import Figure

    lengths = sorted({int(L) for t in tables.values() for L in t["n_res"].unique() if L >= 4}) or [64]
    ref = settings["reference"]
    real = np.concatenate([reference_fragments(ref, L).sse_fraction for L in lengths])  # P-SEA, stored
    fr = pd.DataFrame(real, columns=["helix", "strand", "coil"])
    rows = [(f"real {ref['split']} ({len(real)})", _composition(fr))] + \
           [(f"{n} ({int(t['valid'].astype(bool).sum())}/{len(t)} valid)", _composition(t)) for n, t in tables.items()]
    fig = Figure(figsize=(6.5, 0.35 * len(rows) + 1.2))
    ax = fig.add_subplot()
    left = np.zeros(len(rows))
    for j, (label, colour) in enumerate((("helix", SSE_COLOURS["a"]), ("strand", SSE_COLOURS["b"]),
                                          ("coil", SSE_COLOURS["c"]))):
        vals = np.nan_to_num([r[1][j] for r in rows])
        ax.barh(np.arange(len(rows)), vals, left=left, color=colour, label=label)
        left += vals
    ax.set_yticks(np.arange(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="mean P-SEA fraction")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    return [_save(fig, folder, "sse_composition.png")]


def draw_histograms(folder: Path, traces: Mapping[str, Sequence[np.ndarray]], tables: Mapping[str, pd.DataFrame],
                    settings: Mapping[str, Any]) -> list[str]:
    """``geometry_histograms.png``: Cα angle and virtual dihedral histograms per method vs the reference."""
    from matplotlib.figure import Figure

    counts: dict[int, int] = {}
    for t in tables.values():
        for L, n in t.loc[t["bond_mean"].notna(), "n_res"].astype(int).value_counts().items():
            counts[L] = counts.get(L, 0) + int(n)
    fig = Figure(figsize=(10, 3.4))
    axes = fig.subplots(1, 2)
    for ax, which, bins in ((axes[0], "angle", ANGLE_BINS), (axes[1], "dihedral", DIHEDRAL_BINS)):
        centres = 0.5 * (bins[1:] + bins[:-1])
        ref = reference_histogram(settings["reference"], counts, which) if counts else None
        if ref is not None:
            ax.fill_between(centres, ref, step="mid", color="0.85", label=f"real {settings['reference']['split']}")
        for name, tr in traces.items():
            h = histograms(list(tr))[which]
            if np.isfinite(h).all():
                ax.step(centres, h, where="mid", lw=1.0, label=name)
        ax.set(xlabel=f"Cα {'bond angle' if which == 'angle' else 'virtual dihedral'} (degrees)", ylabel="share")
    axes[1].legend(fontsize=6, ncol=2)
    return [_save(fig, folder, "geometry_histograms.png")]


def draw_all(folder: Path, tables: Mapping[str, pd.DataFrame], traces: Mapping[str, Sequence[np.ndarray]],
             settings: Mapping[str, Any]) -> list[str]:
    """Every picture of a run (paths relative to ``folder``)."""
    if not tables:
        return []
    return [*draw_traces(folder, traces, tables, settings), *draw_composition(folder, tables, settings),
            *draw_histograms(folder, traces, tables, settings)]
