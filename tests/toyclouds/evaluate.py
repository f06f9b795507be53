"""The toy clouds' evaluator (its own ``evaluation:`` schema: ``target_rod_share``) and xyz writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molfuse.base.checks import as_float, fields
from molfuse.base.io import write_text
from molfuse.plugins import EvalContext, Evaluated, Evaluator, MethodRun


def _parse(settings, path: str) -> dict:
    f = fields(settings or {}, path, {"target_rod_share": None})
    return {} if f["target_rod_share"] is None else {
        "target_rod_share": as_float(f["target_rod_share"], f"{path}.target_rod_share", 0.0, 1.0)}


def linearity(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of the largest principal variance of each cloud's real nodes (rod ~ 1, ring ~ 0.5)."""
    out = np.full(len(x), np.nan)
    for i, (xi, mi) in enumerate(zip(x, mask)):
        pts = xi[mi][:, :3]
        if np.isfinite(pts).all() and len(pts) > 1:
            ev = np.linalg.eigvalsh(np.cov(pts.T))
            out[i] = ev[-1] / max(ev.sum(), 1e-12)
    return out


def _evaluate(ctx: EvalContext, run: MethodRun) -> Evaluated:
    lin = linearity(run.x, run.mask)
    nodes = run.mask.sum(1)
    table = run.table.assign(nodes=nodes, linearity=lin, shape=np.where(lin > 0.75, "rod", "ring"))
    com = np.abs((run.x[..., :3] * run.mask[..., None]).sum(1) / nodes[:, None]).max(1)
    radius = np.array([np.linalg.norm(xi[mi][:, :3], axis=1).mean() if np.isfinite(xi).all() else np.nan
                       for xi, mi in zip(run.x, run.mask)])
    table["radius"] = radius
    row = {"rod_share": float((lin > 0.75).mean()), "mean_nodes": float(nodes.mean()),
           "mean_radius": float(np.nanmean(radius)),
           "max_abs_centre_of_mass": float(np.nanmax(com)),
           "max_abs_padding": float(np.abs(run.x[~run.mask]).max()) if (~run.mask).any() else 0.0}
    if "target_rod_share" in ctx.settings:
        row["rod_share_error"] = abs(row["rod_share"] - ctx.settings["target_rod_share"])
    return Evaluated(pd.DataFrame(table), row)


def write_xyz(folder: Path, run: MethodRun, normalisation: dict) -> list[str]:
    """``samples/<method>.xyz``: one XYZ frame per cloud (real nodes only)."""
    lines = []
    for i, (xi, mi) in enumerate(zip(run.x, run.mask)):
        pts = xi[mi]
        lines += [str(len(pts)), f"{run.name} sample {i}"] + [f"C {a:.5f} {b:.5f} {c:.5f}" for a, b, c in pts[:, :3]]
    write_text(Path(folder) / "samples" / f"{run.name}.xyz", "\n".join(lines) + "\n")
    return [f"samples/{run.name}.xyz"]


EVALUATOR = Evaluator(evaluate=_evaluate, parse=_parse,
                      metric_columns=("rod_share", "rod_share_error", "mean_nodes", "max_abs_centre_of_mass",
                                      "mean_radius"),
                      sample_columns=("nodes", "linearity", "shape"), headline=("rod_share", "rod_share_error",
                                                                                "mean_nodes"),
                      notes="`rod_share`: share of clouds whose largest principal variance is above 75 % of the total.")
