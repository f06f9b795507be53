"""What a run writes besides samples and tables: provenance.json and summary.md."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import torch

from ..base.io import jsonable, sha256_file
from ..base.provenance import VERSION, git_state, machine, now
from ..base.tables import markdown_table
from ..sampling import MIN_SANE_STEPS
from .spec import Workflow

__all__ = ["provenance", "summary"]


def provenance(wf: Workflow, models: dict, prepared: dict, runs: dict, dev: torch.device, started: str,
               wall: float, resumed: bool, modality: str) -> dict:
    """provenance.json: version, git, seeds (and the rule that derives them), checkpoints with
    sha256, models, methods with their weights and fits, machine, timings."""
    ckpts = [{"model": k, "path": str(c), "sha256": sha256_file(c)} for k, m in models.items()
             for c in (getattr(m, "checkpoints", None) or [getattr(m, "checkpoint", None)]) if c]
    return {
        "molfuse_version": VERSION, "git": git_state(), "workflow": wf.name, "run_name": wf.run_name,
        "modality": modality, "folder": str(wf.folder.resolve()), "started": started, "finished": now(),
        "wall_time_s": wall,
        "resumed": resumed, "chunks": {"reused": sum(r["reused"] for r in runs.values()),
                                       "generated": sum(r["generated"] for r in runs.values())},
        "seeds": {"workflow": wf.seed, "rule": "chunk seed = derive_seed(seed, method, chunk): first 63 bits of "
                  "sha256(JSON [seed, method, chunk]); fit seed = derive_seed(seed, method, 'fit')",
                  "chunks": {k: r["chunk_seeds"] for k, r in runs.items()}},
        "schedule": wf.schedule, "sampler": vars(wf.sampler), "device": str(dev), "checkpoints": ckpts,
        "models": {k: {"kind": wf.models[k].kind, "repr": repr(m), **_lineage(m)} for k, m in models.items()},
        "target": wf.target,
        "methods": [{"name": m.name, "operator": m.operator, "models": list(m.models), "options": m.options,
                     "weights": prepared[m.name].weights, **prepared[m.name].info} for m in wf.methods],
        "machine": machine(dev),
    }


def summary(wf: Workflow, metrics: pd.DataFrame, prov: dict, figures: list[str], notes: str,
            pictures: list[str] = (), sections: list[str] = (), caveats: list[str] = ()) -> str:
    """summary.md: what ran, the tables, the evaluator's ``notes``, the reports' sections, the
    pictures (``figures`` across methods, ``pictures`` per method), caveats (the evaluator's
    ``caveats`` and the operators')."""
    git = prov["git"].get("commit")
    lines = [f"# {wf.name} — run {wf.run_name}", ""] + ([wf.description.strip(), ""] if wf.description else [])
    lines += [f"- Started {prov['started']}, finished {prov['finished']} ({prov['wall_time_s']:.1f} s); chunks "
              f"generated {prov['chunks']['generated']}, reused {prov['chunks']['reused']}.",
              f"- molfuse {VERSION}" + (f" (commit {git[:10]}{', dirty' if prov['git'].get('dirty') else ''})"
                                            if git else "") + f", torch {torch.__version__}, device {prov['device']}.",
              f"- {wf.n_samples} samples per method: reverse SDE, {wf.sampler.steps} Euler–Maruyama steps from t = 1 "
              + ("" if wf.sampler.grid_power == 1.0 else f"(grid t_k = t_end + (1 - t_end)(1 - k/steps)^{wf.sampler.grid_power}) ")
              + f"to t_end = {wf.sampler.t_end}" + (", then one Tweedie step to E[x_0 | x_t_end]" if wf.sampler.denoise else "")
              + f", seed {wf.seed}, chunks of {wf.sampler.chunk_size}.",
              "- Models: " + ", ".join(f"`{k}` ({s.kind})" for k, s in wf.models.items())
              + (f"; target `{wf.target}`." if wf.target else "."), "", "## Methods", ""]
    rows = [{"method": m["name"], "operator": m["operator"], "models": "+".join(m["models"]),
             "settings": json.dumps(jsonable({k: v for k, v in m["options"].items()
                                               if v is not None and not (k == "weights" and m["weights"])})),
             "weights": "" if m["weights"] is None else "/".join(f"{w:.3f}" for w in m["weights"])}
            for m in prov["methods"]]
    lines += [markdown_table(pd.DataFrame(rows)), "", "## Metrics", "", markdown_table(metrics), ""]
    lines += [notes, ""] if notes else []
    lines += [x for sec in sections for x in (sec, "")]
    if figures:
        lines += ["## Picture", ""] + [f"![{p}]({p})" for p in figures] + [""]
    if pictures:
        lines += ["## Samples", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    all_caveats = [*caveats, *_caveats(wf, metrics, prov)]
    return "\n".join(lines + ["## Caveats", ""] + [f"- {c}" for c in all_caveats]) + "\n"


def _caveats(wf: Workflow, metrics: pd.DataFrame, prov: dict) -> list[str]:
    """What every workflow's summary says about its operators, sampler and invalid samples."""
    ops = {m.operator for m in wf.methods}
    out = []
    if wf.sampler.steps < MIN_SANE_STEPS:
        out.append(f"sampler.steps = {wf.sampler.steps} is below {MIN_SANE_STEPS}: so few Euler steps land far from the "
                   "target; these numbers are a smoke test, not a measurement.")
    if ops & {"barycenter", "ensemble"}:
        out.append("Itô densities are tracked along single-model, superposition and random-choice paths only; "
                   "barycenter and ensemble paths report exact densities only.")
    if "barycenter" in ops:
        out.append("A path-wise sum of scores samples the barycenter of the diffused marginals at each t; it equals "
                   "the diffusion of the time-0 barycenter Π p_i^λ_i (dashed contour) only for equal-covariance "
                   "Gaussians (MATH §2).")
    if "ensemble" in ops:
        out.append("Ensemble rule 'mean' has the score of the uniform-weight barycenter of the same members.")
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
    failed = int(metrics["n_failed"].sum()) if "n_failed" in metrics else 0
    if failed:
        out.append(f"**The sampler failed on {failed} of {int(metrics['n'].sum())} samples** (NaN / inf; see `finite` "
                   "and `reason` in per_sample.csv); they count in every share's denominator.")
    bad = int((metrics["n"] - metrics["n_valid"]).sum()) - failed
    if bad > 0:
        out.append(f"{bad} samples are invalid by the evaluator (the `reason` column of per_sample.csv says why); "
                   "they count in every share's denominator.")
    return out


def _lineage(model: Any) -> dict:
    """What a merged or distilled model is made of (its card's ``merge`` / ``objective`` entries:
    members' and teachers' hashes, rule, options, a held-out selection), for provenance.json."""
    card = getattr(model, "card", None) or {}
    return {k: card[k] for k in ("merge", "objective", "soup") if k in card}
