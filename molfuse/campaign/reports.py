"""The campaign's own cross-method reports: ``by_n`` (metrics against a sample size, over seeds) and
``fidelity`` (sample-set distances of methods to reference models, with a self-distance control).
Modalities add theirs (e.g. ``class_share`` of images) through :mod:`molfuse.plugins`."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from pathlib import Path
from typing import Any

from .. import plugins
from ..base.checks import REQUIRED, fail
from ..base.io import atomic_write
from ..base.tables import markdown_table

__all__ = ["by_n_name", "by_n_table"]

_BY_N = re.compile(r"^(?P<family>[A-Za-z][A-Za-z0-9]*)_n(?P<n>\d+)_seed(?P<seed>\d+)$")


def by_n_name(method: str) -> tuple[str, int, int] | None:
    """``(family, n, seed)`` of a method named ``<family>_n<N>_seed<S>``, else None."""
    m = _BY_N.match(str(method))
    return None if m is None else (m["family"], int(m["n"]), int(m["seed"]))


def by_n_table(metrics: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Methods named ``<family>_n<N>_seed<S>`` aggregated over seeds: one row per (family, n)
    with ``<col>_mean``, ``<col>_min``, ``<col>_max`` and ``seeds``."""
    rows = []
    for name, row in metrics.set_index("method").iterrows():
        key = by_n_name(name)
        if key:
            rows.append({"family": key[0], "n": key[1], "seed": key[2], **{c: row.get(c, math.nan) for c in columns}})
    if not rows:
        return pd.DataFrame(columns=["family", "n", "seeds"])
    df = pd.DataFrame(rows)
    agg = df.groupby(["family", "n"], sort=True)
    out = agg.size().rename("seeds").reset_index()
    for c in columns:
        stats = agg[c].agg(["mean", "min", "max"]).reset_index(drop=True)
        out[[f"{c}_mean", f"{c}_min", f"{c}_max"]] = stats.to_numpy()
    return out


def _check_by_n(o: dict, path: str) -> dict:
    for key in ("metrics", "reference"):
        v = o[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            fail(f"{path}.{key}", f"expected a list of names, got {v!r}")
    if not o["metrics"]:
        fail(f"{path}.metrics", "name at least one metrics.csv column")
    return o


def _by_n(folder: Path, name: str, metrics: pd.DataFrame, o: dict) -> tuple[str, list[str]]:
    cols = [c for c in o["metrics"] if c in metrics]
    table = by_n_table(metrics, cols)
    atomic_write(Path(folder) / "by_n.csv", lambda fh: table.to_csv(fh, index=False, float_format="%.6g"), text=True)
    ref = metrics.set_index("method").reindex([r for r in o["reference"] if r in set(metrics["method"])])
    lines = ["## Against n (mean over seeds, min–max in brackets)", ""]
    if not len(table):
        return "\n".join(lines + ["No method is named `<family>_n<N>_seed<S>`; nothing to aggregate.", ""]), []
    for c in cols:
        wide = table.pivot(index="n", columns="family", values=f"{c}_mean")
        lo = table.pivot(index="n", columns="family", values=f"{c}_min")
        hi = table.pivot(index="n", columns="family", values=f"{c}_max")
        shown = wide.copy().astype(object)
        for f in wide:
            shown[f] = [f"{m:.3f} ({a:.3f}–{b:.3f})" if np.isfinite(m) else "" for m, a, b in zip(wide[f], lo[f], hi[f])]
        lines += [f"`{c}`", "", markdown_table(shown.reset_index()), ""]
        if len(ref):
            lines += ["References (no n): " + ", ".join(f"{r} {v:.3f}" for r, v in ref[c].items() if np.isfinite(v)), ""]
    pictures = []
    if cols and len(table):
        _plot_by_n(Path(folder), name, table, ref, cols)
        pictures.append("by_n.png")
        lines += ["![by_n.png](by_n.png)", ""]
    return "\n".join(lines), pictures


def _plot_by_n(folder: Path, name: str, table: pd.DataFrame, ref: pd.DataFrame, cols: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cols), figsize=(4.6 * len(cols), 3.6), squeeze=False)
    for ax, c in zip(axes[0], cols):
        for fam, d in table.groupby("family"):
            mean = d[f"{c}_mean"].to_numpy(float)
            err = np.vstack([mean - d[f"{c}_min"].to_numpy(float), d[f"{c}_max"].to_numpy(float) - mean])
            ax.errorbar(d["n"], mean, yerr=err, marker="o", capsize=3, label=fam)
        for i, (r, v) in enumerate(ref[c].items()) if c in ref else []:
            if np.isfinite(v):
                ax.axhline(v, ls="--", lw=1, color=f"C{(i + 5) % 10}", label=r)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n target images")
        ax.set_title(c)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{name}: seeds' mean, bars min–max", fontsize=9)
    fig.tight_layout()
    atomic_write(folder / "by_n.png", lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


plugins.register_report("by_n", plugins.Report(_by_n, {"metrics": REQUIRED, "reference": []}, _check_by_n))


# ------------------------------------------------------------------ fidelity (DMM's FID_t idea)
def _check_fidelity(o: dict, path: str) -> dict:
    pairs = o["pairs"]
    if not isinstance(pairs, list) or not pairs:
        fail(f"{path}.pairs", f"expected a non-empty list of {{name, method, reference, control?}}, got {pairs!r}")
    for i, p in enumerate(pairs):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in ("name", "method", "reference")) \
                or not set(p) <= {"name", "method", "reference", "control"}:
            fail(f"{path}.pairs[{i}]", f"expected {{name, method, reference, control?}} (method names), got {p!r}")
    return o


def fidelity_table(ctx: Any, runs: dict, modality: Any, pairs: list[dict]) -> pd.DataFrame:
    """One row per pair: the modality's distances between ``method``'s and ``reference``'s samples
    and, with ``control`` (a second, independent sample set of the reference model), the same
    distances of the control — the floor that sampling noise alone gives."""
    if modality.set_distance is None:
        raise ValueError(f"modality {modality.name!r} has no set_distance; the fidelity report cannot compare samples")
    rows = []
    for p in pairs:
        missing = [p[k] for k in ("method", "reference", "control") if k in p and p[k] not in runs]
        if missing:
            raise ValueError(f"fidelity pair {p['name']!r}: unknown methods {missing}; known {sorted(runs)}")
        row: dict[str, Any] = {"name": p["name"], "method": p["method"], "reference": p["reference"]}
        for key, value in modality.set_distance(ctx, runs[p["method"]], runs[p["reference"]]).items():
            row[key] = value
        if "control" in p:
            row["control"] = p["control"]
            for key, value in modality.set_distance(ctx, runs[p["control"]], runs[p["reference"]]).items():
                if key in ("n_a", "n_b"):  # sample counts, not distances
                    continue
                row[f"{key}_control"] = value
                row[f"{key}_ratio"] = row[key] / value if value else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _fidelity(folder: Path, name: str, metrics: pd.DataFrame, o: dict, ctx: Any = None, runs: dict | None = None,
              modality: Any = None) -> tuple[str, list[str]]:
    table = fidelity_table(ctx, runs or {}, modality, o["pairs"])
    atomic_write(Path(folder) / "fidelity.csv", lambda fh: table.to_csv(fh, index=False, float_format="%.6g"), text=True)
    lines = ["## Fidelity: each method against a reference model's samples", "",
             "Distances between two sample sets (the modality's `set_distance`); `_control` is the same distance "
             "for a second, independent sample set of the reference model (sampling noise alone), `_ratio` the "
             "first over the control (1 = as close as the reference is to itself).", "",
             markdown_table(table), ""]
    return "\n".join(lines), []


plugins.register_report("fidelity", plugins.Report(_fidelity, {"pairs": REQUIRED}, _check_fidelity, samples=True))


# ------------------------------------------------------------------ rank agreement of two criteria
def _check_rank(o: dict, path: str) -> dict:
    if not isinstance(o["x"], str):
        fail(f"{path}.x", f"expected a metrics.csv column, got {o['x']!r}")
    for key in ("y", "methods"):
        if not isinstance(o[key], list) or not all(isinstance(v, str) for v in o[key]):
            fail(f"{path}.{key}", f"expected a list of names, got {o[key]!r}")
    if not o["y"]:
        fail(f"{path}.y", "name at least one metrics.csv column")
    return o


def rank_agreement_table(metrics: pd.DataFrame, x: str, ys: list[str], methods: list[str]) -> pd.DataFrame:
    """Spearman ρ and Kendall τ_b between column ``x`` and each column of ``ys`` over ``methods``
    (all rows when empty); +1: the two criteria order the methods the same way."""
    from ..evaluation.ranks import kendall_tau, rank_correlation

    df = metrics.set_index("method")
    df = df.loc[[m for m in methods if m in df.index]] if methods else df
    rows = []
    for y in ys:
        if x not in df or y not in df:
            raise ValueError(f"rank_agreement: metrics.csv has no column {x if x not in df else y!r}")
        d = df[[x, y]].astype(float).dropna()
        ok = len(d) >= 3
        rows.append({"x": x, "y": y, "methods": len(d),
                     "spearman": rank_correlation(d[x].to_numpy(), d[y].to_numpy()) if ok else math.nan,
                     "kendall": kendall_tau(d[x].to_numpy(), d[y].to_numpy()) if ok else math.nan})
    return pd.DataFrame(rows)


def _rank_agreement(folder: Path, name: str, metrics: pd.DataFrame, o: dict) -> tuple[str, list[str]]:
    table = rank_agreement_table(metrics, o["x"], o["y"], o["methods"])
    atomic_write(Path(folder) / "rank_agreement.csv", lambda fh: table.to_csv(fh, index=False, float_format="%.6g"),
                 text=True)
    df = metrics.set_index("method")
    df = df.loc[[m for m in o["methods"] if m in df.index]] if o["methods"] else df
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(o["y"]), figsize=(4.4 * len(o["y"]), 3.8), squeeze=False)
    for ax, y, (_, r) in zip(axes[0], o["y"], table.iterrows()):
        ax.scatter(df[o["x"]], df[y], s=18)
        for m, row in df.iterrows():
            ax.annotate(str(m), (row[o["x"]], row[y]), fontsize=6)
        ax.set(xlabel=o["x"], ylabel=y, title=f"Spearman {r['spearman']:.2f}, Kendall {r['kendall']:.2f}")
    fig.tight_layout()
    atomic_write(Path(folder) / "rank_agreement.png", lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    lines = [f"## Does `{o['x']}` order the methods as the sample metrics do?", "",
             f"Rank correlations over {int(table['methods'].max())} methods (+1: same order; for two "
             "lower-is-better columns, a positive value means the cheap criterion picks the better samples).", "",
             markdown_table(table), "", "![rank_agreement.png](rank_agreement.png)", ""]
    return "\n".join(lines), ["rank_agreement.png"]


plugins.register_report("rank_agreement", plugins.Report(_rank_agreement, {"x": REQUIRED, "y": REQUIRED, "methods": []},
                                                         _check_rank))
