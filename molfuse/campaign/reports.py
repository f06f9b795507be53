"""The campaign's own cross-method report ``by_n`` (metrics against a sample size, over seeds).
Modalities add theirs (e.g. ``class_share`` of images) through :mod:`molfuse.plugins`."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from pathlib import Path

from .. import plugins
from ..base.checks import REQUIRED, fail
from ..base.io import atomic_write
from ..base.tables import markdown_table

__all__ = ["by_n_table"]

_BY_N = re.compile(r"^(?P<family>[A-Za-z][A-Za-z0-9]*)_n(?P<n>\d+)_seed(?P<seed>\d+)$")


def by_n_table(metrics: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Methods named ``<family>_n<N>_seed<S>`` aggregated over seeds: one row per (family, n)
    with ``<col>_mean``, ``<col>_min``, ``<col>_max`` and ``seeds``."""
    rows = []
    for name, row in metrics.set_index("method").iterrows():
        m = _BY_N.match(str(name))
        if m:
            rows.append({"family": m["family"], "n": int(m["n"]), "seed": int(m["seed"]),
                         **{c: row.get(c, math.nan) for c in columns}})
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
