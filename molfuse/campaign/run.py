"""Running a workflow: lock the folder, plan, resumable chunks, evaluation, the results folder (RESULTS.md)."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from .. import plugins
from ..base.checks import fail
from ..base.io import FolderLock, atomic_write, parse_yaml, remove_stale_temporaries, write_json, write_text
from ..base.provenance import config_diff, now
from ..base.tables import ordered_columns
from ..errors import WorkflowError
from ..schedules import schedule_from_config
from .chunks import assemble_chunks, chunk_sizes, compute_chunk, plan_chunks
from .executors import ExecutorSpec, parse_executor, run_tasks
from .kinds import build_models
from .parse import check_sample_memory, load_workflow, workflow_modality
from .registry import OPERATORS, Prepared, RunContext, sample_shape
from .report import provenance, summary
from .spec import MethodSpec, Workflow, comparable

__all__ = ["RunResult", "run_workflow"]


@dataclass
class RunResult:
    """What a run leaves: its folder and the tables of ``metrics.csv`` / ``per_sample.csv``.

    ``invalid`` counts the samples the sampler failed on (non-finite, or a member returned NaN /
    inf: ``per_sample.csv`` has ``finite`` False and the reason); a modality's own judgement (an
    invalid molecule) is its ``valid`` column and metrics, not a failure. ``headline`` names the
    metric columns worth printing.
    """

    folder: Path
    metrics: pd.DataFrame
    per_sample: pd.DataFrame
    provenance: dict = field(default_factory=dict, repr=False)
    sections: list[str] = field(default_factory=list, repr=False)  # the reports' markdown
    invalid: int = 0
    headline: tuple[str, ...] = ()


# Columns every method has, before and after the evaluator's (a key ending in "_" is per member).
_METRIC_HEAD = ("method", "operator", "models", "n", "n_valid", "n_failed")
_METRIC_TAIL = ("fallbacks", "fkc_", "weight_", "heldout_dsm_loss", "wall_time_s")
_SAMPLE_HEAD = ("id", "method", "index", "chunk", "seed", "valid", "reason")
_SAMPLE_TAIL = ("finite", "chosen_model", "fallbacks", "fkc_", "ito_log_q_nats_")


def run_workflow(source: str | Path | Mapping, out: str | Path | None = None, name: str | None = None,
                 device: str | None = None, progress: bool = True, verbose: bool = True,
                 seed: int | None = None, executor: str | ExecutorSpec | None = None) -> RunResult:
    """Validate, run and evaluate a workflow; write its results folder (RESULTS.md).

    The folder is locked for the run (a second run on it is refused), its config is checked
    (a different config is refused) and written before any work; finished chunks are reused.

    Args:
        source: a workflow YAML file or the same content as a dict.
        out, name, device, seed: override ``output``, ``run_name``, ``sampler.device`` and
            ``seed`` (every sampling, fit and evaluation seed derives from it).
        progress: a tqdm bar over chunks; verbose: print the plan and the device used.
        executor: where the chunks are drawn: ``serial`` (default, this process), ``local:N``
            (a local Dask cluster of N worker processes) or a Dask scheduler address
            (:mod:`molfuse.campaign.executors`). Results do not depend on it.

    Returns:
        The folder, the ``metrics`` (one row per method) / ``per_sample`` DataFrames, and the
        count of invalid samples.

    Raises:
        WorkflowError: malformed workflow, missing modality dependencies, more samples than
            memory holds, a results folder that cannot be created (a file in its way, no write
            access), a folder holding a run of another config, a folder in use by another run,
            a folder where a chunk goes, or an unknown executor.
    """
    say = print if verbose else (lambda *a, **k: None)
    started, t0 = now(), time.perf_counter()
    wf = load_workflow(source, output=out, run_name=name, device=device, seed=seed)
    spec = executor if isinstance(executor, ExecutorSpec) else parse_executor(executor)
    schedule = schedule_from_config(wf.schedule)
    modality = workflow_modality(wf.models)  # before loading anything: dependencies, evaluator
    models = build_models(wf, schedule)
    _check_modality(models, modality)
    evaluator = modality.evaluator
    settings = evaluator.parse(wf.evaluation, "evaluation") if evaluator.parse else dict(wf.evaluation)
    wf = dataclasses.replace(wf, evaluation=settings)
    _check_shapes(wf, models)
    dev = _resolve_device(wf.sampler.device)
    ctx = plugins.EvalContext(wf.folder, settings, models, schedule, wf.seed, wf.sampler.t_end, wf.n_samples,
                              wf.sampler.threads, wf.target)
    if evaluator.check is not None:
        evaluator.check(ctx)
    with FolderLock(wf.folder, "run"):
        for p in remove_stale_temporaries(wf.folder):
            say(f"molfuse: removed {p} (a temporary file of a killed run)")
        resumed = _check_folder(wf.folder, wf.to_config())
        if not resumed:  # before any work, so a concurrent or later run sees this config
            write_text(wf.folder / "config.yaml", yaml.safe_dump(wf.to_config(), sort_keys=False, allow_unicode=True))
        say(f"molfuse: {wf.name} -> {wf.folder}{' (resuming)' if resumed else ''}; modality {modality.name}")
        threads = torch.get_num_threads()
        # one thread per run on CPU unless the workflow says otherwise: runs sharing cores thrash
        # at torch's default (measured 6x slower per image with 2 threads on 2 shared cores)
        want = wf.sampler.threads or (1 if str(dev).startswith("cpu") else None)
        if want:
            torch.set_num_threads(want)
        why = ("sampler.threads sets it" if wf.sampler.threads else
               "the default on CPU; set sampler.threads to use more") if want else "torch's default"
        say(f"molfuse: device {dev} (torch {torch.__version__}, {torch.get_num_threads()} thread(s): {why})")
        try:
            rctx = RunContext(schedule, models, wf.sampler.steps, wf.sampler.t_end, dev, wf.seed, wf.sampler.grid_power,
                              wf.sampler.denoise)
            with warnings.catch_warnings():  # the floor is reported once, by load_workflow, naming the field
                warnings.filterwarnings("ignore", message=r"steps=\d+ is below")
                prepared = {m.name: _prepare(m, i, models, rctx) for i, m in enumerate(wf.methods)}  # fits run here
                _print_plan(wf, say)
                runs, drawn = _draw_chunks(wf, prepared, models, dataclasses.replace(spec, threads=want), progress, say)
        finally:
            torch.set_num_threads(threads)
        result = _finish(wf, ctx, modality, models, prepared, runs, dev, started, t0, resumed, progress, drawn)
    say(f"molfuse: wrote {wf.folder} in {time.perf_counter() - t0:.1f} s")
    if result.invalid:
        say(f"molfuse: WARNING {result.invalid} of {len(result.per_sample)} samples failed (NaN / inf; "
            "per_sample.csv, columns finite and reason)")
    return result


def _draw_chunks(wf: Workflow, prepared: dict, models: dict, spec: ExecutorSpec, progress: bool,
                 say: Callable) -> tuple[dict, dict]:
    """Every method's missing chunks drawn on the executor, then all chunks read back in order;
    also what drew them (the executor, chunks drawn, the phase's wall time)."""
    shapes = {m.name: sample_shape(models[m.models[0]]) for m in wf.methods}
    planned = {m.name: plan_chunks(wf, m, shapes[m.name]) for m in wf.methods}
    tasks = [t for todo, _ in planned.values() for t in todo]
    n_chunks = len(chunk_sizes(wf.n_samples, wf.sampler.chunk_size)) * len(wf.methods)
    if spec.kind != "serial":
        say(f"molfuse: chunks on {spec.describe()}: {len(tasks)} to draw, {n_chunks - len(tasks)} reused")
    payloads = {m.name: (prepared[m.name], [models[k] for k in m.models]) for m in wf.methods}
    t0 = time.perf_counter()
    with tqdm(total=n_chunks, initial=n_chunks - len(tasks), unit="chunk", disable=not progress) as bar:
        def done(task):
            bar.set_description(task.method)
            bar.update(1)
        engine = run_tasks(spec, tasks, compute_chunk, payloads, done)
    drawn = {"kind": spec.kind, "description": spec.describe(), "chunks_drawn": len(tasks),
             "chunk_phase_s": time.perf_counter() - t0, "engine_start_s": engine["start_s"],
             "engine_stop_s": engine["stop_s"]}
    if spec.kind != "serial":
        for p in remove_stale_temporaries(wf.folder):  # a worker killed mid-write leaves its temporary
            say(f"molfuse: removed {p} (a temporary file of a killed worker)")
    return {m.name: assemble_chunks(wf, m, planned[m.name][1], shapes[m.name]) for m in wf.methods}, drawn


def _finish(wf: Workflow, ctx: plugins.EvalContext, modality: plugins.Modality, models: dict, prepared: dict,
            runs: dict, dev: torch.device, started: str, t0: float, resumed: bool, progress: bool,
            drawn: dict) -> RunResult:
    """Write samples, evaluate every method, write the tables, pictures, provenance and summary."""
    ev = modality.evaluator
    method_runs = {m.name: _method_run(m, runs[m.name], prepared[m.name]) for m in wf.methods}
    for run in method_runs.values():
        run.cache["settings"] = ctx.settings  # writers see the evaluation settings too
    tables, rows, pictures = [], [], []
    for m in tqdm(wf.methods, desc="evaluating", unit="method", disable=not progress):
        run = method_runs[m.name]
        norm = getattr(models[m.models[0]], "normalisation", None) or {}
        for write in modality.writers.values():
            write(wf.folder, run, norm)
        result = ev.evaluate(ctx, run)
        tables.append(result.table)
        rows.append(_metric_row(m, run, result, prepared[m.name]))
        pictures += result.pictures
    names = list(wf.models)
    per_sample = ordered_columns(pd.concat(tables, ignore_index=True),
                                 (*_SAMPLE_HEAD, *ev.sample_columns, *_SAMPLE_TAIL), names)
    metrics = ordered_columns(pd.DataFrame(rows), (*_METRIC_HEAD, *ev.metric_columns, *_METRIC_TAIL), names)
    for file, df in (("per_sample.csv", per_sample), ("metrics.csv", metrics)):
        atomic_write(wf.folder / file, lambda fh, df=df: df.to_csv(fh, index=False, float_format="%.10g"), text=True)
    figures = ev.figure(ctx, method_runs) if ev.figure else []
    prov = provenance(wf, models, prepared, runs, dev, started, time.perf_counter() - t0, resumed, modality.name)
    prov["executor"] = drawn
    prov["chunk_files"] = {"config_sha256": wf.config_sha256, "rule": "each chunk records the run's config_sha256, "
                           "its seed, its fields and its content digest; sha256: of each chunk file, in order",
                           "sha256": {k: r["chunk_sha256"] for k, r in runs.items()}}
    if ev.provenance is not None:
        prov["evaluation"] = ev.provenance(ctx)
    write_json(wf.folder / "provenance.json", prov)
    sections = []
    for r in wf.reports:
        rep, opts = plugins.report(r["kind"]), {k: v for k, v in r.items() if k != "kind"}
        extra = {"ctx": ctx, "runs": method_runs, "modality": modality} if rep.samples else {}
        text, _ = rep.write(wf.folder, wf.name, metrics, opts, **extra)
        sections.append(text)
    caveats = ev.caveats(ctx, metrics) if ev.caveats else []
    write_text(wf.folder / "summary.md", summary(wf, metrics, prov, figures, ev.notes, pictures, sections, caveats))
    invalid = int((~per_sample["finite"].astype(bool)).sum())
    return RunResult(wf.folder, metrics, per_sample, prov, sections, invalid, ev.headline)


def _method_run(m: MethodSpec, run: dict, prep: Prepared) -> plugins.MethodRun:
    """The run's chunks as one :class:`~molfuse.plugins.MethodRun`, with the columns every method has."""
    x = run["x"]
    n = len(x)
    reason = run.get("reason", np.full(n, "", dtype=object)).astype(object)
    finite = np.isfinite(x.reshape(n, -1)).all(axis=1)
    reason = np.where((reason == "") & ~finite, "non-finite coordinates", reason)
    table = pd.DataFrame({"id": [f"{m.name}-{i:06d}" for i in range(n)], "method": m.name, "index": np.arange(n),
                          "chunk": run["chunk"], "seed": run["seed"], "valid": reason == "", "reason": reason,
                          "finite": reason == ""})
    if run.get("chosen") is not None:
        table["chosen_model"] = [m.models[int(c)] if c >= 0 else "" for c in run["chosen"]]
    if run.get("fallbacks") is not None:
        table["fallbacks"] = np.asarray(run["fallbacks"], dtype=np.int64)
    if run.get("ito") is not None:  # Itô log q per member (model space, nats) where tracked
        for k, name in enumerate(m.models):
            table[f"ito_log_q_nats_{name}"] = np.where(table["valid"], run["ito"][:, k], np.nan)
    for key in sorted(k for k in run if k.startswith("col_")):  # the operator's own columns (FKC weights, ESS)
        table[key[4:]] = np.asarray(run[key], dtype=np.float64)
    return plugins.MethodRun(m.name, m.operator, list(m.models), x, run["seed"], run["chunk"], mask=run.get("mask"),
                             ito=run.get("ito"), fallbacks=run.get("fallbacks"), chosen=run.get("chosen"),
                             reason=reason, score_model=prep.model, mixture=prep.mixture,
                             wall_time_s=run["wall_time_s"], weights=prep.weights, options=dict(m.options),
                             table=table)


def _metric_row(m: MethodSpec, run: plugins.MethodRun, result: plugins.Evaluated, prep: Prepared) -> dict:
    valid = result.table["valid"].astype(bool)
    row = {"method": m.name, "operator": m.operator, "models": "+".join(m.models), "n": len(valid),
           "n_valid": int(valid.sum()), "n_failed": int((~result.table["finite"].astype(bool)).sum()), **result.row}
    if run.fallbacks is not None:
        row["fallbacks"] = int(np.asarray(run.fallbacks).sum())
    for col in prep.metric_columns:  # e.g. FKC's ESS and resampling count, averaged over samples (chunks)
        if col in run.table:
            row[col] = float(np.nanmean(run.table[col].to_numpy(dtype=np.float64)))
    if prep.weights is not None:
        row.update({f"weight_{n}": float(w) for n, w in zip(m.models, prep.weights)})
    if "fit" in prep.info:
        row["heldout_dsm_loss"] = prep.info["fit"]["heldout_dsm_loss"]
    row["wall_time_s"] = run.wall_time_s
    return row


def _check_modality(models: dict[str, Any], modality: plugins.Modality) -> None:
    """Every built model has the workflow's modality, which has an evaluator."""
    for name, model in models.items():
        if model.modality != modality.name:
            fail(f"models.{name}", f"built a model of modality {model.modality!r} in a {modality.name!r} workflow")
    if modality.evaluator is None:
        fail("models", f"modality {modality.name!r} registers no evaluator")


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise WorkflowError("sampler.device: cuda requested but torch.cuda.is_available() is False; use cpu or auto")
    return torch.device(device)


def _check_shapes(wf: Workflow, models: dict[str, Any]) -> None:
    """Each method's members (and fit source, and target) must agree on the sample shape."""
    for i, m in enumerate(wf.methods):
        fit = m.options.get("fit") or {}
        names = list(m.models) + ([fit["data_from"]] if fit.get("data_from") else [])
        names += [wf.target] if wf.target else []
        shapes = {n: sample_shape(models[n]) for n in names}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
            fail(f"methods[{i}].models", f"models (and target / fit source) differ in sample shape: {listed}")
    largest = max((sample_shape(m) for m in models.values()), key=math.prod)
    check_sample_memory(wf.n_samples, len(wf.methods), largest)  # now that the sample shapes are known


def _prepare(m: MethodSpec, i: int, models: dict[str, Any], ctx: RunContext) -> Prepared:
    try:
        return OPERATORS.get(m.operator).prepare(m, [models[n] for n in m.models], ctx)
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
    try:
        old = parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except (WorkflowError, UnicodeDecodeError) as e:
        raise WorkflowError(f"{path} is not readable YAML ({e}); delete the folder or use another run name") from None
    if not isinstance(old, dict):
        raise WorkflowError(f"{path} is not a run's config (a mapping); delete the folder or use another run name")
    diffs = config_diff(comparable(old), comparable(fresh))
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise WorkflowError(f"{folder} holds a run of a different configuration ({shown}); refusing to mix "
                            "results. Use another run name (--name) or delete that folder to start over.")
    return True


def _print_plan(wf: Workflow, say: Callable[..., None]) -> None:
    """Cost before running (USERS 12): score calls per step, steps, chunks."""
    n_chunks = math.ceil(wf.n_samples / wf.sampler.chunk_size)
    say(f"molfuse: {len(wf.methods)} methods x {wf.n_samples} samples, {wf.sampler.steps} steps, "
        f"{n_chunks} chunk(s) of <= {wf.sampler.chunk_size}")
    for m in wf.methods:
        calls = 1 if m.operator in ("single", "random_choice") else len(m.models)
        say(f"  {m.name:<18} {m.operator:<13} {'+'.join(m.models):<20} {calls} score call(s)/step")
