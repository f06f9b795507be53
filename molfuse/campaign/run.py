"""Running a workflow: plan, resumable chunks, evaluation, and the results folder (RESULTS.md)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from ..errors import WorkflowError
from .checks import _at, _fail
from .files import _atomic, _jsonable, _write_text
from .evaluators import modality_models
from .kinds import build_models, data_shape
from .registry import _EVALUATORS, _OPERATORS, _REPORTS, Prepared, RunContext, derive_seed, modality_of
from .report import _now, _plot, _provenance, _summary
from .spec import MethodSpec, Workflow, build_schedule, load_workflow


@dataclass
class RunResult:
    """What a run leaves: its folder and the tables of ``metrics.csv`` / ``per_sample.csv``."""

    folder: Path
    metrics: pd.DataFrame
    per_sample: pd.DataFrame
    provenance: dict = field(default_factory=dict, repr=False)
    sections: list[str] = field(default_factory=list, repr=False)  # the reports' markdown


def run_workflow(source: str | Path | Mapping, out: str | Path | None = None, name: str | None = None,
                 device: str | None = None, progress: bool = True, verbose: bool = True,
                 seed: int | None = None) -> RunResult:
    """Validate, run and evaluate a workflow; write its results folder (RESULTS.md).

    Args:
        source: a workflow YAML file or the same content as a dict.
        out, name, device, seed: override ``output``, ``run_name``, ``sampler.device`` and
            ``seed`` (every sampling, fit and evaluation seed derives from it).
        progress: a tqdm bar over chunks; verbose: print the plan and the device used.

    Returns:
        The folder and the ``metrics`` (one row per method) / ``per_sample`` DataFrames.

    Raises:
        WorkflowError: malformed workflow, or the folder holds a run of another config.
    """
    say = print if verbose else (lambda *a, **k: None)
    started, t0 = _now(), time.perf_counter()
    wf = load_workflow(source, output=out, run_name=name, device=device, seed=seed)
    schedule = build_schedule(wf.schedule)
    models = build_models(wf, schedule)
    shapes = _method_shapes(wf, models)
    modalities = _check_evaluators(wf, models)
    dev = _resolve_device(wf.sampler.device)
    resumed = _check_folder(wf.folder, wf.to_config())
    threads = torch.get_num_threads()
    if wf.sampler.threads:
        torch.set_num_threads(wf.sampler.threads)
    try:
        ctx = RunContext(schedule, models, wf.sampler.steps, wf.sampler.t_end, dev, wf.seed)
        prepared = {m.name: _prepare(m, i, models, ctx) for i, m in enumerate(wf.methods)}  # fits run here
        if not resumed:  # written only once nothing can be refused any more
            _write_text(wf.folder / "config.yaml", yaml.safe_dump(wf.to_config(), sort_keys=False, allow_unicode=True))
        say(f"molfuse: {wf.name} -> {wf.folder}{' (resuming)' if resumed else ''}")
        say(f"molfuse: device {dev} (torch {torch.__version__}, {torch.get_num_threads()} thread(s))")
        _print_plan(wf, say)
        n_chunks = len(_chunk_sizes(wf.n_samples, wf.sampler.chunk_size))
        with tqdm(total=n_chunks * len(wf.methods), unit="chunk", disable=not progress) as bar:
            runs = {m.name: _run_chunks(wf, m, prepared[m.name], bar) for m in wf.methods}
    finally:
        torch.set_num_threads(threads)
    tables, rows, pictures = [], [], []
    for m in tqdm(wf.methods, desc="evaluating", unit="method", disable=not progress):
        table, row, pics = _evaluate(wf, m, runs[m.name], prepared[m.name], models)
        tables.append(table)
        rows.append(row)
        pictures += pics
    names = list(wf.models)
    per_sample = _ordered(pd.concat(tables, ignore_index=True), names, _SAMPLE_ORDER)
    metrics = _ordered(pd.DataFrame(rows), names, _METRIC_ORDER)
    for file, df in (("per_sample.csv", per_sample), ("metrics.csv", metrics)):
        _atomic(wf.folder / file, lambda fh, df=df: df.to_csv(fh, index=False, float_format="%.10g"), text=True)
    picture = _plot(wf, models, runs, prepared, shapes)
    prov = _provenance(wf, models, prepared, runs, dev, started, time.perf_counter() - t0, resumed)
    _write_text(wf.folder / "provenance.json", json.dumps(_jsonable(prov), indent=2) + "\n")
    notes = [_EVALUATORS[k].notes for k in modalities if _EVALUATORS[k].notes]
    sections = []
    for r in wf.reports:
        text, pics = _REPORTS[r["kind"]].write(wf, metrics, {k: v for k, v in r.items() if k != "kind"})
        sections.append(text)
    _write_text(wf.folder / "summary.md", _summary(wf, metrics, prov, picture, notes, pictures, set(modalities),
                                                   sections))
    say(f"molfuse: wrote {wf.folder} in {time.perf_counter() - t0:.1f} s")
    return RunResult(wf.folder, metrics, per_sample, prov, sections)


# Column order of the two tables; a key ending in "_" is a per-model group, in workflow order.
_METRIC_ORDER = ("method", "operator", "models", "n", "n_valid", "class_mixture_tv", "coverage", "coverage_min_count",
                 "off_target_fraction", "feature_frechet", "test_bpd", "test_bpd_se", "test_dsm_loss",
                 "test_dsm_loss_se", "mean_min_target_prob", "mean_prob_max", *(f"frac_class_{k}" for k in range(10)),
                 "mean_log_q_nats_target", "share_",
                 "mean_abs_log_q_gap_nats", "ito_abs_err_nats_", "fallbacks", "weight_", "heldout_dsm_loss",
                 "wall_time_s")
_SAMPLE_ORDER = ("id", "method", "index", "chunk", "seed", "valid", "reason", "predicted_class", "prob_max", "x0", "x1", "x2", "chosen_model",
                 "fallbacks", "log_q_nats_target", "log_q_nats_", "ito_log_q_nats_")


def _ordered(df: pd.DataFrame, model_names: list[str], order: Sequence[str]) -> pd.DataFrame:
    cols = []
    for key in order:
        group = [key + m for m in model_names] if key.endswith("_") else [key]
        cols += [c for c in group if c in df and c not in cols]
    return df[cols + [c for c in df if c not in cols]]


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise WorkflowError("sampler.device: cuda requested but torch.cuda.is_available() is False; use cpu or auto")
    return torch.device(device)


def _method_shapes(wf: Workflow, models: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each method's sample shape; its members (and fit source, and target) must agree."""
    out = {}
    for i, m in enumerate(wf.methods):
        fit = m.options.get("fit") or {}
        names = list(m.models) + ([fit["data_from"]] if fit.get("data_from") else [])
        names += [wf.target] if wf.target else []
        shapes = {n: data_shape(models[n]) for n in names}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
            _fail(f"methods[{i}].models", f"models (and target / fit source) differ in sample shape: {listed}")
        out[m.name] = shapes[m.models[0]]
    return out


def _check_evaluators(wf: Workflow, models: dict[str, Any]) -> list[str]:
    """The modalities of the workflow's models, each with a registered evaluator whose check passes."""
    groups = modality_models(models)
    for modality, members in groups.items():
        if modality not in _EVALUATORS:
            _fail("models", f"no evaluator for modality {modality!r} (models {', '.join(members)}); known: "
                  f"{', '.join(sorted(_EVALUATORS))} (register one with register_evaluator)")
        if _EVALUATORS[modality].check is not None:
            _EVALUATORS[modality].check(wf, members)
    return list(groups)


def _prepare(m: MethodSpec, i: int, models: dict[str, Any], ctx: RunContext) -> Prepared:
    try:
        return _OPERATORS[m.operator].prepare(m, [models[n] for n in m.models], ctx)
    except (ValueError, TypeError) as e:
        if isinstance(e, WorkflowError):
            raise
        raise WorkflowError(f"methods[{i}] ({m.name}): {e}") from None


def _check_folder(folder: Path, config: dict) -> bool:
    """True when ``folder`` holds a run of this config (resume); refuse one of another config."""
    path = folder / "config.yaml"
    if not path.exists():
        return False
    fresh = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))
    old = yaml.safe_load(path.read_text()) or {}
    diffs = _diff(_comparable(old), _comparable(fresh))
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise WorkflowError(f"{folder} holds a run of a different configuration ({shown}); refusing to mix "
                            "results. Use another run name (--name) or delete that folder to start over.")
    return True


def _comparable(config: dict) -> dict:
    """What must match to resume: all but where the folder is, how many threads ran and the
    reports (they only read the metrics table)."""
    out = {k: v for k, v in config.items() if k not in ("output", "run_name", "reports")}
    out["sampler"] = {k: v for k, v in (out.get("sampler") or {}).items() if k != "threads"}
    return out


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [d for k in dict.fromkeys([*a, *b]) for d in _diff(a.get(k), b.get(k), _at(path, k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {_short(a)} -> {_short(b)}"]


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _print_plan(wf: Workflow, say: Callable[..., None]) -> None:
    """Cost before running (USERS 12): score calls per step, steps, chunks."""
    n_chunks = math.ceil(wf.n_samples / wf.sampler.chunk_size)
    say(f"molfuse: {len(wf.methods)} methods x {wf.n_samples} samples, {wf.sampler.steps} steps, "
        f"{n_chunks} chunk(s) of <= {wf.sampler.chunk_size}")
    for m in wf.methods:
        calls = 1 if m.operator in ("single", "random_choice") else len(m.models)
        say(f"  {m.name:<18} {m.operator:<13} {'+'.join(m.models):<20} {calls} score call(s)/step")


def _chunk_sizes(n: int, size: int) -> list[int]:
    return [min(size, n - s) for s in range(0, n, size)]


def _run_chunks(wf: Workflow, m: MethodSpec, prep: Prepared, bar: tqdm) -> dict:
    """Generate missing chunks (atomically saved), load finished ones; concatenate."""
    sizes = _chunk_sizes(wf.n_samples, wf.sampler.chunk_size)
    chunks, reused = [], 0
    bar.set_description(m.name)
    for i in range(len(sizes)):
        seed = derive_seed(wf.seed, m.name, i)
        path = wf.folder / "samples" / "chunks" / m.name / f"chunk_{i:05d}.npz"
        data = _load_chunk(path, sizes[i], seed)
        reused += data is not None
        if data is None:
            t0 = time.perf_counter()
            with torch.no_grad():
                d = prep.draw(sizes[i], torch.Generator().manual_seed(seed))
            data = {"x": d.x.detach().cpu().numpy(), "seed": np.int64(seed),
                    "wall_time_s": np.float64(time.perf_counter() - t0)}
            for key in ("ito", "fallbacks", "chosen"):
                if getattr(d, key) is not None:
                    data[key] = getattr(d, key).detach().cpu().numpy()
            _atomic(path, lambda fh: np.savez(fh, **data))
        data["chunk"] = np.full(sizes[i], i)
        chunks.append(data)
        bar.update(1)
    out = {k: np.concatenate([c[k] for c in chunks]) for k in ("x", "chunk", "ito", "fallbacks", "chosen")
           if k in chunks[0]}
    out["seed"] = np.concatenate([np.full(len(c["x"]), int(c["seed"]), dtype=np.int64) for c in chunks])
    out["chunk_seeds"] = [int(c["seed"]) for c in chunks]
    out["wall_time_s"] = float(sum(float(c["wall_time_s"]) for c in chunks))
    out["reused"], out["generated"] = reused, len(chunks) - reused
    return out  # the evaluator writes samples/<method>.npy in the modality's format


def _load_chunk(path: Path, size: int, seed: int) -> dict | None:
    """A finished chunk, or None when missing or not the chunk this config would make."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    ok = data.get("x") is not None and len(data["x"]) == size and int(data.get("seed", -1)) == seed
    return data if ok else None


def _evaluate(wf: Workflow, m: MethodSpec, run: dict, prep: Prepared,
              models: dict) -> tuple[pd.DataFrame, dict, list[str]]:
    """The evaluator of the method's modality, plus the columns every method has."""
    run = {**run, "score_model": prep.model, "mixture": prep.mixture}
    ev = _EVALUATORS[modality_of(models[m.models[0]])].evaluate(wf, m, run, models)
    table = ev.table
    row = {"method": m.name, "operator": m.operator, "models": "+".join(m.models), **ev.row}
    if prep.weights is not None:
        row.update({f"weight_{n}": float(w) for n, w in zip(m.models, prep.weights)})
    if "fit" in prep.info:
        row["heldout_dsm_loss"] = prep.info["fit"]["heldout_dsm_loss"]
    row["wall_time_s"] = run["wall_time_s"]
    return table, row, ev.pictures
