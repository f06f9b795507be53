"""What a run writes besides samples: the picture, provenance.json and summary.md."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from .files import _atomic, _jsonable
from .spec import Workflow


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plot(wf: Workflow, models: dict, runs: dict, prepared: dict, shapes: dict) -> str | None:
    """samples.png: one panel per 2-D method over its members' exact t = 0 contours."""
    two_d = [m for m in wf.methods if shapes[m.name] == (2,)]
    if not two_d:
        return None
    from ..evaluation.plots import COLORS, Contour, Panel, extent_of, grid, log_density_grid, panels_figure

    n = 120
    xs, ys, pts = grid(extent_of([runs[m.name]["x"] for m in two_d]), n)
    fit_src = {m.name: m.options["fit"]["data_from"] for m in two_d  # a model the fit drew data from
               if m.options.get("fit") and m.options["fit"]["data_from"] is not None}
    needed = dict.fromkeys([*(x for m in two_d for x in m.models), *fit_src.values()])
    grids = {k: log_density_grid(models[k], pts, n) for k in needed if hasattr(models[k], "log_prob")}
    colour = {k: COLORS[i % len(COLORS)] for i, k in enumerate(wf.models)}
    panels = []
    for m in two_d:
        w = prepared[m.name].weights
        contours = [Contour(k, grids[k], colour[k]) for k in m.models if k in grids]
        if m.operator == "barycenter" and all(k in grids for k in m.models):
            bary = sum(wi * grids[k] for wi, k in zip(w, m.models))
            contours.append(Contour("Π p_i^λ_i (t=0)", bary, "black", "--"))
        src = fit_src.get(m.name)
        if src in grids and src not in m.models:
            contours.append(Contour(f"{src} (fit data)", grids[src], "grey", ":"))
        weights = f" w={'/'.join(f'{x:.2f}' for x in w)}" if w is not None and len(w) > 1 else ""
        panels.append(Panel(f"{m.name}\n{m.operator}({'+'.join(m.models)}){weights}", runs[m.name]["x"], contours))
    fig = panels_figure(panels, xs, ys)
    _atomic(wf.folder / "samples.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
    return "samples.png"


def _git_state() -> dict:
    root = Path(__file__).resolve().parents[2]  # the repository root
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode:
            return {"commit": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _machine(dev: torch.device) -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": np.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(dev), "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}


def _provenance(wf: Workflow, models: dict, prepared: dict, runs: dict, dev: torch.device, started: str,
                wall: float, resumed: bool) -> dict:
    ckpts = [{"model": k, "path": str(c), "sha256": _sha256(c)} for k, m in models.items()
             for c in (getattr(m, "checkpoints", None) or [getattr(m, "checkpoint", None)]) if c]
    return {
        "molfuse_version": __version__, "git": _git_state(), "workflow": wf.name, "run_name": wf.run_name,
        "folder": str(wf.folder.resolve()), "started": started, "finished": _now(), "wall_time_s": wall,
        "resumed": resumed, "chunks": {"reused": sum(r["reused"] for r in runs.values()),
                                       "generated": sum(r["generated"] for r in runs.values())},
        "seeds": {"workflow": wf.seed, "rule": "chunk seed = derive_seed(seed, method, chunk): first 63 bits of "
                  "sha256(JSON [seed, method, chunk]); fit seed = derive_seed(seed, method, 'fit')",
                  "chunks": {k: r["chunk_seeds"] for k, r in runs.items()}},
        "schedule": wf.schedule, "sampler": vars(wf.sampler), "device": str(dev), "checkpoints": ckpts,
        "models": {k: {"kind": wf.models[k].kind, "repr": repr(m)} for k, m in models.items()},
        "target": wf.target,
        "methods": [{"name": m.name, "operator": m.operator, "models": list(m.models), "options": m.options,
                     "weights": prepared[m.name].weights, **prepared[m.name].info} for m in wf.methods],
        "machine": _machine(dev),
    }


def _summary(wf: Workflow, metrics: pd.DataFrame, prov: dict, picture: str | None, notes: list[str],
             pictures: list[str] = (), modalities: set[str] = frozenset({"vectors"}),
             sections: list[str] = ()) -> str:
    """summary.md: what ran, the tables, the evaluators' ``notes``, the reports' sections, the
    pictures, caveats."""
    from ..evaluation.vectors import markdown_table

    git = prov["git"].get("commit")
    lines = [f"# {wf.name} — run {wf.run_name}", ""] + ([wf.description.strip(), ""] if wf.description else [])
    lines += [f"- Started {prov['started']}, finished {prov['finished']} ({prov['wall_time_s']:.1f} s); chunks "
              f"generated {prov['chunks']['generated']}, reused {prov['chunks']['reused']}.",
              f"- molfuse {__version__}" + (f" (commit {git[:10]}{', dirty' if prov['git'].get('dirty') else ''})"
                                            if git else "") + f", torch {torch.__version__}, device {prov['device']}.",
              f"- {wf.n_samples} samples per method: reverse SDE, {wf.sampler.steps} Euler–Maruyama steps from t = 1 "
              f"to t_end = {wf.sampler.t_end}, seed {wf.seed}, chunks of {wf.sampler.chunk_size}.",
              "- Models: " + ", ".join(f"`{k}` ({s.kind})" for k, s in wf.models.items())
              + (f"; target `{wf.target}`." if wf.target else "."), "", "## Methods", ""]
    rows = [{"method": m["name"], "operator": m["operator"], "models": "+".join(m["models"]),
             "settings": json.dumps(_jsonable({k: v for k, v in m["options"].items()
                                               if v is not None and not (k == "weights" and m["weights"])})),
             "weights": "" if m["weights"] is None else "/".join(f"{w:.3f}" for w in m["weights"])}
            for m in prov["methods"]]
    lines += [markdown_table(pd.DataFrame(rows)), "", "## Metrics", "", markdown_table(metrics), ""]
    lines += [x for note in notes for x in (note, "")]
    lines += [x for sec in sections for x in (sec, "")]
    if picture:
        lines += ["## Picture", "", f"![samples over member density contours]({picture})", ""]
    if pictures:
        lines += ["## Samples", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    return "\n".join(lines + ["## Caveats", ""] + [f"- {c}" for c in _caveats(wf, metrics, prov, modalities)]) + "\n"


def _caveats(wf: Workflow, metrics: pd.DataFrame, prov: dict, modalities: set[str] = frozenset({"vectors"})) -> list[str]:
    ops = {m.operator for m in wf.methods}
    out = []
    if "vectors" in modalities:
        out.append(f"Exact log q is evaluated at t_end = {wf.sampler.t_end} (where the sampler stops), not at t = 0.")
    if "images" in modalities:
        out.append(f"Image metrics read {wf.n_samples} samples per method through a small digit classifier; "
                   "feature_frechet is biased upwards when n is below its 128 feature dimensions, so compare it "
                   "between methods at equal n only. Itô log q columns are in model space (nats).")
    if ops & {"barycenter", "ensemble"}:
        out.append("Itô densities are tracked along single-model, superposition and random-choice paths only; "
                   "barycenter and ensemble paths report exact densities only.")
    if "barycenter" in ops:
        out.append("A path-wise sum of scores samples the barycenter of the diffused marginals at each t; it equals "
                   "the diffusion of the time-0 barycenter Π p_i^λ_i (dashed contour) only for equal-covariance "
                   "Gaussians (MATH §2).")
    if "ensemble" in ops:
        out.append("Ensemble rule 'mean' has the score of the uniform-weight barycenter of the same members.")
    if wf.target:
        out.append(f"mean_log_q_nats_target scores closeness to `{wf.target}`; only methods aimed at it (a barycenter "
                   "fitted to its samples) are expected to score well on it.")
    for m in prov["methods"]:
        out += [f"{m['name']}: {w}" for w in m.get("fit", {}).get("warnings", [])]
    for m in wf.methods:
        if m.operator == "superpose" and m.options["mode"] == "and" and not m.options["ito_correction"]:
            out.append(f"{m.name}: AND solves κ with the step's own noise, which removes the noise along the score "
                       "differences; without `ito_correction` the Itô log q there is biased low by several nats "
                       "(equally for every member): trust the exact columns.")
    if "fallbacks" in metrics and metrics["fallbacks"].fillna(0).sum() > 0:
        out.append(f"AND fell back to equal weights in {int(metrics['fallbacks'].fillna(0).sum())} sample-steps "
                   "(member scores nearly equal, usually near t = 1).")
    bad = int((metrics["n"] - metrics["n_valid"]).sum())
    if bad:
        out.append(f"{bad} samples are invalid (non-finite); they count in every share's denominator.")
    return out
