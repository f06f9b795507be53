"""Replicate runs of one workflow (``molfuse run … --seed k``) combined: mean and spread per method.

:func:`combine_replicates` reads ``metrics.csv`` and ``config.yaml`` of several run folders,
refuses folders of different workflows, different method lists or the same seed twice, and
returns one row per method and metric with ``mean``, ``sd`` (sample standard deviation,
NaN for one run), ``min``, ``max`` and ``n_runs``. :func:`replicate_table` renders the
headline as "mean ± sd" in markdown. ``molfuse replicates RUN RUN … [--out F.csv]`` does both.

:func:`by_n_replicates` pools the methods named ``<family>_n<N>_seed<S>`` (a sample size and a
data draw, as in the ``by_n`` report) over the draws *and* the replicate runs: one row per
family, n and metric, over ``n_values`` = draws × runs; :func:`by_n_replicate_table` renders one
metric as an n × family table (``molfuse replicates … --by-n``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..base.io import parse_yaml
from ..errors import WorkflowError
from .reports import by_n_name

__all__ = ["by_n_replicate_table", "by_n_replicates", "combine_replicates", "replicate_table", "seed_table"]


def _read(folder: Path) -> tuple[dict, pd.DataFrame]:
    """A finished run's ``config.yaml`` (a mapping) and ``metrics.csv`` (with a ``method`` column).

    Raises:
        WorkflowError: either file is missing, not UTF-8 text, or not what a run writes (the
            message names the file).
    """
    cfg, met = folder / "config.yaml", folder / "metrics.csv"
    if not cfg.is_file() or not met.is_file():
        raise WorkflowError(f"{folder}: not a finished run folder (needs config.yaml and metrics.csv)")
    config = parse_yaml(_text(cfg), str(cfg)) or {}
    if not isinstance(config, dict):
        raise WorkflowError(f"{cfg}: expected a run's config (a mapping), got {type(config).__name__}")
    try:
        metrics = pd.read_csv(io.StringIO(_text(met)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise WorkflowError(f"{met}: not a metrics table ({type(e).__name__}: {str(e).strip()[:120]})") from None
    if "method" not in metrics.columns:
        raise WorkflowError(f"{met}: not a metrics table (no method column; columns: {list(metrics.columns)[:8]})")
    return config, metrics


def _text(path: Path) -> str:
    """``path`` as UTF-8 text; a binary or mis-encoded file is a WorkflowError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise WorkflowError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); is it a file a run wrote?") from None


def _replicate_runs(folders: Sequence[str | Path]) -> tuple[list, list, list[str], list[str]]:
    """The runs ``(folder, config, metrics)``, their seeds, the method list and the numeric columns
    common to all, after the refusals of :func:`combine_replicates`."""
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
    return runs, seeds, methods[0], cols


def _stats(v: np.ndarray) -> dict | None:
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max())}


def combine_replicates(folders: Sequence[str | Path]) -> pd.DataFrame:
    """Long table ``method, metric, mean, sd, min, max, n_runs`` over replicate run folders.

    Only numeric metric columns are combined; the ``seeds`` attribute of the result lists
    the runs' seeds in the order given.

    Raises:
        WorkflowError: fewer than one folder, a folder that is not a finished run, runs of
            different workflows or methods, or two runs with the same seed.
    """
    runs, seeds, methods, cols = _replicate_runs(folders)
    stack = np.stack([m.set_index("method").loc[methods, cols].to_numpy(dtype=np.float64) for _, _, m in runs])
    rows = []
    for i, method in enumerate(methods):
        for j, col in enumerate(cols):
            st = _stats(stack[:, i, j])
            if st is not None:
                rows.append({"method": method, "metric": col, **st, "n_runs": int(np.isfinite(stack[:, i, j]).sum())})
    out = pd.DataFrame(rows, columns=["method", "metric", "mean", "sd", "min", "max", "n_runs"])
    out.attrs["seeds"] = seeds
    return out


def by_n_replicates(folders: Sequence[str | Path]) -> pd.DataFrame:
    """Long table ``family, n, metric, mean, sd, min, max, n_values``: the methods named
    ``<family>_n<N>_seed<S>`` pooled over their draws S and over the replicate runs.

    Raises:
        WorkflowError: as :func:`combine_replicates`, or no method named ``<family>_n<N>_seed<S>``.
    """
    runs, seeds, methods, cols = _replicate_runs(folders)
    keyed = [(by_n_name(m), m) for m in methods]
    keyed = [(k, m) for k, m in keyed if k is not None]
    if not keyed:
        raise WorkflowError(f"no method is named <family>_n<N>_seed<S> in {runs[0][0]}")
    groups: dict[tuple[str, int], list[str]] = {}
    for (family, n, _), m in keyed:
        groups.setdefault((family, n), []).append(m)
    rows = []
    for (family, n), members in sorted(groups.items()):
        for col in cols:
            v = np.concatenate([met.set_index("method").loc[members, col].to_numpy(dtype=np.float64) for _, _, met in runs])
            st = _stats(v)
            if st is not None:
                rows.append({"family": family, "n": n, "metric": col, **st, "n_values": int(np.isfinite(v).sum())})
    out = pd.DataFrame(rows, columns=["family", "n", "metric", "mean", "sd", "min", "max", "n_values"])
    out.attrs["seeds"] = seeds
    return out


def by_n_replicate_table(pooled: pd.DataFrame, metric: str, digits: int = 3) -> str:
    """Markdown for one metric of :func:`by_n_replicates`: rows n, columns families, cells "mean ± sd"."""
    sub = pooled[pooled["metric"] == metric]
    if not len(sub):
        raise WorkflowError(f"no such metric in these runs: {metric!r}; available: {sorted(set(pooled['metric']))}")
    return _mean_sd_grid(sub.set_index(["n", "family"]), "n", sorted(set(sub["n"])), sorted(set(sub["family"])),
                         digits)


def _fmt(v: float, digits: int) -> str:
    return "" if not math.isfinite(v) else f"{v:.{digits}g}"


def _mean_sd_grid(idx: pd.DataFrame, corner: str, rows: Sequence, cols: Sequence, digits: int) -> str:
    """Markdown of ``idx`` (indexed by (row, column), with ``mean`` and ``sd``): cells "mean ± sd",
    the mean alone when sd is undefined, empty where a pair is missing."""
    lines = [f"| {corner} | " + " | ".join(map(str, cols)) + " |", "|" + "---|" * (len(cols) + 1)]
    for row in rows:
        cells = []
        for col in cols:
            if (row, col) not in idx.index:
                cells.append("")
                continue
            r = idx.loc[(row, col)]
            sd = "" if not math.isfinite(r["sd"]) else f" ± {_fmt(r['sd'], 2)}"
            cells.append(_fmt(r["mean"], digits) + sd)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replicate_table(combined: pd.DataFrame, metrics: Sequence[str], digits: int = 3) -> str:
    """Markdown: one row per method, one column per metric, cells "mean ± sd" (mean alone for one run)."""
    missing = [m for m in metrics if m not in set(combined["metric"])]
    if missing:
        raise WorkflowError(f"no such metric in these runs: {missing}; available: {sorted(set(combined['metric']))}")
    methods = list(dict.fromkeys(combined["method"]))
    return _mean_sd_grid(combined.set_index(["method", "metric"]), "method", methods, list(metrics), digits)


def seed_table(folders: Sequence[str | Path], metrics: Sequence[str], methods: Sequence[str] | None = None,
               digits: int = 3, reference: bool = False) -> str:
    """Markdown for the documentation, written from the runs themselves so it cannot drift: one row
    per method, one column per metric, each cell the runs' values in the order given ("0.938 /
    0.928" for seeds 0 and 1), then a line naming the command and each run's folder, seed and commit.

    The runs must be of one workflow with different seeds (as for :func:`combine_replicates`);
    ``methods`` picks and orders rows (default: all, in the workflow's order). ``reference``
    appends the rows of each run's ``reference.csv`` (a workflow's reports: real held-out data,
    random walks), matched by their label; a row or metric a run lacks is "–".

    Raises:
        WorkflowError: a run folder that is not a finished run, runs of different workflows or
            the same seed twice, or a metric / method no run has (the message lists what exists),
            or ``reference`` with a run that wrote no ``reference.csv``.
    """
    runs, seeds, all_methods, cols = _replicate_runs(folders)
    missing = [m for m in metrics if m not in cols]
    if missing:
        raise WorkflowError(f"no such metric in these runs: {missing}; available: {cols}")
    rows = list(methods) if methods else all_methods
    unknown = [m for m in rows if m not in all_methods]
    if unknown:
        raise WorkflowError(f"no such method in these runs: {unknown}; available: {all_methods}")
    lines = ["| method | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for method in rows:
        cells = []
        for metric in metrics:
            vals = [float(m.loc[m["method"] == method, metric].iloc[0]) for _, _, m in runs]
            cells.append(" / ".join(_cell(v, digits) for v in vals))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if reference:
        lines += _reference_rows([f for f, _, _ in runs], metrics, digits, skip=all_methods)
    where = "; ".join(f"`{f}` (seed {s}{_commit(f)})" for (f, _, _), s in zip(runs, seeds))
    command = (f"molfuse report {' '.join(str(f) for f, _, _ in runs)} --metrics {','.join(metrics)}"
               + (f" --methods {','.join(rows)}" if methods else "") + (" --reference" if reference else ""))
    return "\n".join(lines) + f"\n\nCells: {' / '.join(f'seed {s}' for s in seeds)}. Written by `{command}` from {where}."


def _reference_rows(folders: Sequence[Path], metrics: Sequence[str], digits: int, skip: Sequence[str] = ()) -> list[str]:
    """Markdown rows of the runs' ``reference.csv`` tables, one per label (in first-seen order),
    except the labels in ``skip`` (the runs' own methods, which a report may repeat)."""
    tables = []
    for f in folders:
        path = Path(f) / "reference.csv"
        if not path.is_file():
            raise WorkflowError(f"{f}: no reference.csv (the workflow has no reports); drop --reference")
        tables.append(pd.read_csv(path))
    labels = [label for label in dict.fromkeys(label for t in tables for label in t["method"]) if label not in skip]
    out = []
    for label in labels:
        cells = []
        for metric in metrics:
            vals = [float(t.loc[t["method"] == label, metric].iloc[0]) if metric in t and (t["method"] == label).any()
                    else math.nan for t in tables]
            cells.append(" / ".join(_cell(v, digits) for v in vals))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _cell(v: float, digits: int) -> str:
    """A whole number as an integer (57, 0, 1), any other to ``digits`` significant figures with
    trailing zeros kept (0.950, 1.47); "–" for a missing value."""
    if not math.isfinite(v):
        return "–"
    if v == round(v):
        return str(int(round(v)))
    return f"{v:#.{digits}g}".rstrip(".")


def _commit(folder: Path) -> str:
    """", commit <10 hex>" from a run's provenance.json (", dirty" when it was), or ""."""
    import json

    try:
        git = json.loads((Path(folder) / "provenance.json").read_text()).get("git") or {}
    except (OSError, ValueError):
        return ""
    commit = git.get("commit") or ""
    return f", commit {commit[:10]}{' dirty' if git.get('dirty') else ''}" if commit else ""
