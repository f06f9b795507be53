"""The vectors evaluator: exact log q under every member with a closed form, shares, Itô errors.

Registered by :mod:`molfuse.modalities.vectors` as the evaluator of modality ``vectors``;
it owns no ``evaluation:`` settings (any key is an error) and draws ``samples.png`` for 2-D
methods over their members' exact density contours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...base.checks import fail
from ...base.io import atomic_write
from ...plugins import EvalContext, Evaluated, Evaluator, MethodRun
from .metrics import method_metrics, per_sample_table

__all__ = ["EVALUATOR", "write_npy"]

NOTES = ("Log-densities in nats, exact ones at t_end. `share_<m>`: share of samples whose highest exact "
         "density is member m's (denominator: all n). `ito_abs_err_nats_<m>`: mean |Itô − exact|. "
         "`mean_abs_log_q_gap_nats`: mean |log q_a − log q_b| (small for AND).")


def _parse(settings: Any, path: str) -> dict:
    if settings:
        keys = ", ".join(settings) if isinstance(settings, dict) else repr(settings)
        fail(path, f"{keys}: the vectors evaluator takes no settings (exact densities need none)")
    return {}


def _evaluate(ctx: EvalContext, run: MethodRun) -> Evaluated:
    target = ctx.models[ctx.target] if ctx.target else None
    extra = per_sample_table(run.x, run.members, ctx.models, ctx.t_end, run.table["valid"].to_numpy(), target=target)
    table = pd.concat([run.table, extra], axis=1)
    return Evaluated(table, method_metrics(table, run.members))


def write_npy(folder: Path, run: MethodRun, normalisation: dict) -> list[str]:
    """``samples/<method>.npy``: the samples (n, D) as drawn."""
    path = Path(folder) / "samples" / f"{run.name}.npy"
    atomic_write(path, lambda fh: np.save(fh, run.x))
    return [f"samples/{run.name}.npy"]


def _figure(ctx: EvalContext, runs: dict[str, MethodRun]) -> list[str]:
    """samples.png: one panel per 2-D method (with valid samples) over its members' exact t = 0 contours."""
    two_d = [r for r in runs.values() if r.x.ndim == 2 and r.x.shape[1] == 2 and np.isfinite(r.x).all(1).any()]
    if not two_d:
        return []
    from ...evaluation.plots import COLORS, Contour, Panel, extent_of, grid, log_density_grid, panels_figure

    n = 120
    xs, ys, pts = grid(extent_of([r.x for r in two_d]), n)
    fit_src = {r.name: r.options["fit"]["data_from"] for r in two_d  # a model the fit drew data from
               if r.options.get("fit") and r.options["fit"].get("data_from") is not None}
    needed = dict.fromkeys([*(m for r in two_d for m in r.members), *fit_src.values()])
    grids = {k: log_density_grid(ctx.models[k], pts, n) for k in needed if hasattr(ctx.models[k], "log_prob")}
    colour = {k: COLORS[i % len(COLORS)] for i, k in enumerate(ctx.models)}
    panels = []
    for r in two_d:
        w = r.weights
        contours = [Contour(k, grids[k], colour[k]) for k in r.members if k in grids]
        if r.operator == "barycenter" and all(k in grids for k in r.members):
            contours.append(Contour("Π p_i^λ_i (t=0)", sum(wi * grids[k] for wi, k in zip(w, r.members)), "black", "--"))
        src = fit_src.get(r.name)
        if src in grids and src not in r.members:
            contours.append(Contour(f"{src} (fit data)", grids[src], "grey", ":"))
        weights = f" w={'/'.join(f'{x:.2f}' for x in w)}" if w is not None and len(w) > 1 else ""
        panels.append(Panel(f"{r.name}\n{r.operator}({'+'.join(r.members)}){weights}", r.x, contours))
    fig = panels_figure(panels, xs, ys)
    atomic_write(ctx.folder / "samples.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
    return ["samples.png"]


def _caveats(ctx: EvalContext, metrics: pd.DataFrame) -> list[str]:
    out = [f"Exact log q is evaluated at t_end = {ctx.t_end} (where the sampler stops), not at t = 0."]
    if ctx.target:
        out.append(f"mean_log_q_nats_target scores closeness to `{ctx.target}`; only methods aimed at it (a barycenter "
                   "fitted to its samples) are expected to score well on it.")
    return out


EVALUATOR = Evaluator(
    evaluate=_evaluate, parse=_parse, notes=NOTES, caveats=_caveats, figure=_figure,
    metric_columns=("mean_log_q_nats_target", "share_", "mean_abs_log_q_gap_nats", "ito_abs_err_nats_"),
    sample_columns=("x0", "x1", "x2", "log_q_nats_target", "log_q_nats_"),
    headline=("mean_log_q_nats_target", "share_", "mean_abs_log_q_gap_nats"))
