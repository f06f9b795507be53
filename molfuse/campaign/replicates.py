"""Replicate runs of one workflow (``molfuse run … --seed k``) combined: mean and spread per method.

:func:`combine_replicates` reads ``metrics.csv`` and ``config.yaml`` of several run folders,
refuses folders of different workflows, different method lists or the same seed twice, and
returns one row per method and metric with ``mean``, ``sd`` (sample standard deviation,
NaN for one run), ``min``, ``max`` and ``n_runs``. :func:`replicate_table` renders the
headline as "mean ± sd" in markdown. ``molfuse replicates RUN RUN … [--out F.csv]`` does both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml

from ..errors import WorkflowError

__all__ = ["combine_replicates", "replicate_table"]


def _read(folder: Path) -> tuple[dict, pd.DataFrame]:
    cfg, met = folder / "config.yaml", folder / "metrics.csv"
    if not cfg.is_file() or not met.is_file():
        raise WorkflowError(f"{folder}: not a finished run folder (needs config.yaml and metrics.csv)")
    return yaml.safe_load(cfg.read_text()) or {}, pd.read_csv(met)


def combine_replicates(folders: Sequence[str | Path]) -> pd.DataFrame:
    """Long table ``method, metric, mean, sd, min, max, n_runs`` over replicate run folders.

    Only numeric metric columns are combined; the ``seeds`` attribute of the result lists
    the runs' seeds in the order given.

    Raises:
        WorkflowError: fewer than one folder, a folder that is not a finished run, runs of
            different workflows or methods, or two runs with the same seed.
    """
    if not folders:
        raise WorkflowError("give at least one run folder")
    runs = [(Path(f), *_read(Path(f))) for f in folders]
    names = {cfg.get("name") for _, cfg, _ in runs}
    if len(names) > 1:
        raise WorkflowError(f"the runs are of different workflows: {sorted(map(str, names))}")
    seeds = [cfg.get("seed") for _, cfg, _ in runs]
    if len(set(seeds)) < len(seeds):
        raise WorkflowError(f"two runs have the same seed ({seeds}); replicates need different --seed values")
    methods = [list(m["method"]) for _, _, m in runs]
    if any(m != methods[0] for m in methods):
        raise WorkflowError(f"the runs have different methods: {runs[0][0]} has {methods[0]}")
    cols = [c for c in runs[0][2].columns if c != "method" and all(c in m for _, _, m in runs)
            and all(pd.api.types.is_numeric_dtype(m[c]) for _, _, m in runs)]
    stack = np.stack([m.set_index("method").loc[methods[0], cols].to_numpy(dtype=np.float64) for _, _, m in runs])
    rows = []
    for i, method in enumerate(methods[0]):
        for j, col in enumerate(cols):
            v = stack[:, i, j]
            v = v[np.isfinite(v)]
            if not len(v):
                continue
            rows.append({"method": method, "metric": col, "mean": float(v.mean()),
                         "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                         "min": float(v.min()), "max": float(v.max()), "n_runs": int(len(v))})
    out = pd.DataFrame(rows, columns=["method", "metric", "mean", "sd", "min", "max", "n_runs"])
    out.attrs["seeds"] = seeds
    return out


def _fmt(v: float, digits: int) -> str:
    return "" if not math.isfinite(v) else f"{v:.{digits}g}"


def replicate_table(combined: pd.DataFrame, metrics: Sequence[str], digits: int = 3) -> str:
    """Markdown: one row per method, one column per metric, cells "mean ± sd" (mean alone for one run)."""
    missing = [m for m in metrics if m not in set(combined["metric"])]
    if missing:
        raise WorkflowError(f"no such metric in these runs: {missing}; available: {sorted(set(combined['metric']))}")
    methods = list(dict.fromkeys(combined["method"]))
    idx = combined.set_index(["method", "metric"])
    lines = ["| method | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for m in methods:
        cells = []
        for k in metrics:
            if (m, k) not in idx.index:
                cells.append("")
                continue
            r = idx.loc[(m, k)]
            sd = "" if not math.isfinite(r["sd"]) else f" ± {_fmt(r['sd'], 2)}"
            cells.append(_fmt(r["mean"], digits) + sd)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
