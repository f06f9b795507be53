"""YAML (or a dict) -> :class:`~.spec.Workflow`: the top level and each section; errors name the field."""

from __future__ import annotations

import difflib
import math
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from .. import plugins
from ..base.checks import REQUIRED, as_bool, as_choice, as_float, as_int, as_name, fail, fields
from ..base.io import read_yaml
from ..sampling import MIN_SANE_STEPS
from ..schedules import check_schedule_spec
from .registry import OPERATORS, check_for_modality
from .spec import MethodSpec, ModelSpec, SamplerSpec, Workflow

__all__ = ["load_workflow", "workflow_modality", "parse_models", "parse_sampler", "parse_method", "parse_reports",
           "TOP_FIELDS", "check_sample_memory", "ROW_BYTES"]

TOP_FIELDS = {"name": REQUIRED, "description": "", "seed": 0, "output": "results", "run_name": None, "schedule": None,
              "models": REQUIRED, "target": None, "n_samples": 1000, "sampler": None, "methods": REQUIRED,
              "evaluation": None, "reports": None}


def load_workflow(source: str | Path | Mapping, output: str | Path | None = None, run_name: str | None = None,
                  device: str | None = None, seed: int | None = None) -> Workflow:
    """Parse and validate a workflow given as a YAML file path or as the same content in a dict.

    ``output``, ``run_name``, ``device`` and ``seed`` override the file (CLI ``--out``,
    ``--name``, ``--device``, ``--seed``). A missing ``run_name`` becomes the current timestamp.
    Warns (naming the field) when ``sampler.steps`` is below a sane floor.

    Raises:
        WorkflowError: naming the first offending field.
    """
    raw = read_yaml(source)
    top = fields(raw, "", TOP_FIELDS)
    if output is not None:
        top["output"] = str(output)
    if run_name is not None:
        top["run_name"] = run_name
    if seed is not None:
        top["seed"] = seed
    if top["run_name"] is None:
        top["run_name"] = datetime.now().strftime("%Y%m%d-%H%M%S")
    name, run = as_name(top["name"], "name"), as_name(str(top["run_name"]), "run_name")
    _check_results_path(Path(str(top["output"])), name, run)
    models = parse_models(top["models"])
    target = top["target"]
    if target is not None and target not in models:
        fail("target", f"unknown model {target!r}; known: {', '.join(models)}")
    if "target" in models and target != "target":
        fail("models.target", "the name 'target' is reserved for the workflow's target model (set target: target)")
    sampler = parse_sampler(top["sampler"] or {}, device)
    if sampler.steps < MIN_SANE_STEPS:
        warnings.warn(f"sampler.steps: {sampler.steps} is below {MIN_SANE_STEPS}; so few Euler steps land far from the "
                      "target (the demo's Itô log q is -194 nats at 1 step, -2.1 at 300)", stacklevel=2)
    methods = top["methods"]
    if not isinstance(methods, list) or not methods:
        fail("methods", "expected a non-empty list of methods")
    parsed = tuple(parse_method(m, f"methods[{i}]", list(models)) for i, m in enumerate(methods))
    seen: set[str] = set()
    for i, m in enumerate(parsed):
        if m.name in seen:
            fail(f"methods[{i}].name", f"duplicate method name {m.name!r}")
        seen.add(m.name)
    evaluation = top["evaluation"]
    if evaluation is not None and not isinstance(evaluation, Mapping):
        fail("evaluation", f"expected a mapping of the evaluator's settings, got {evaluation!r}")
    modality = workflow_modality(models)
    parsed = tuple(check_for_modality(m, modality, f"methods[{i}]") for i, m in enumerate(parsed))
    if modality.evaluator is not None and modality.evaluator.parse is not None:
        modality.evaluator.parse(dict(evaluation or {}), "evaluation")  # its own schema, checked before anything runs
    n_samples = as_int(top["n_samples"], "n_samples", 1)
    check_sample_memory(n_samples, len(parsed))
    return Workflow(
        name=name, seed=as_int(top["seed"], "seed", 0), output=str(top["output"]), run_name=run,
        description=str(top["description"] or ""),
        schedule=check_schedule_spec(top["schedule"]), models=models, target=target,
        n_samples=n_samples, sampler=sampler, methods=parsed,
        evaluation=dict(evaluation or {}), reports=parse_reports(top["reports"]))


# What one sample costs in memory besides its own arrays: its per_sample.csv row (measured 313
# bytes in pandas for the vectors' 17 columns; the images' and molecules' tables are wider).
ROW_BYTES = 300


def _memory_bytes() -> tuple[int, str]:
    """This machine's physical memory in bytes, and how it was found."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine has"
    except (AttributeError, ValueError, OSError):  # pragma: no cover - platforms without sysconf
        return 64 << 30, "assuming"


def check_sample_memory(n_samples: int, n_methods: int, shape: tuple[int, ...] | None = None) -> None:
    """Refuse ``n_samples`` that cannot fit: a run holds every method's samples and their table
    rows in memory at once (chunks are assembled per method, then every method is evaluated
    and written together), at least ``n_methods * n_samples * (4 * prod(shape) + ROW_BYTES)``
    bytes (float32 samples; the shape is unknown, so not counted, while the workflow is read).

    Raises:
        WorkflowError: naming ``n_samples``, the estimate, the machine's memory and the largest
            ``n_samples`` it can hold.
    """
    per = ROW_BYTES + (4 * math.prod(shape) if shape is not None else 0)
    need = n_methods * n_samples * per
    memory, how = _memory_bytes()
    if need <= memory:
        return
    what = f"{4 * math.prod(shape)} bytes per sample of shape {shape} + " if shape is not None else ""
    fail("n_samples", f"{n_samples} per method cannot be held: a run keeps every method's samples and their "
         f"per_sample.csv rows in memory at once, at least {n_methods} method(s) x {n_samples} x ({what}about "
         f"{ROW_BYTES} bytes per row) = {need:.3g} bytes, and {how} {memory:.3g} bytes; at most "
         f"{memory // (n_methods * per)} samples per method fit here. Lower n_samples, or split the work into "
         "replicate runs (molfuse run --seed k; molfuse replicates combines them)")


def _check_results_path(out: Path, name: str, run_name: str) -> None:
    """Refuse a results folder ``<output>/<name>/<run_name>`` that a file stands in the way of
    (the output, a folder above it, or ``<output>/<name>``); nothing is created here."""
    for parent in reversed(out.parents):
        if parent.exists() and not parent.is_dir():
            fail("output", f"{str(out)!r} cannot be a folder: {str(parent)!r} is a file")
    if out.exists() and not out.is_dir():
        fail("output", f"{str(out)!r} is a file; output is the folder that holds the results")
    for path, key in ((out / name, "name"), (out / name / run_name, "run_name")):
        if path.exists() and not path.is_dir():
            fail(key, f"the results go to the folder {str(out / name / run_name)!r}, but {str(path)!r} is "
                 f"a file; move it away, or change {key} (or output)")


def workflow_modality(models: Mapping[str, ModelSpec]) -> plugins.Modality:
    """The one modality of a workflow's models (from the model kinds and checkpoint cards, before
    anything is built), with its dependencies importable (else the install hint).

    Raises:
        WorkflowError: models of several modalities, an unreadable card, or a modality that
            is unknown or misses a package.
    """
    by: dict[str, list[str]] = {}
    for name, spec in models.items():
        owner, kind = plugins.model_kind(spec.kind)
        if owner is None:
            if kind.modality is None:
                fail(f"models.{name}.kind", f"kind {spec.kind!r} does not say which modality its models have")
            try:
                owner = kind.modality(dict(spec.params))
            except (ValueError, TypeError) as e:
                fail(f"models.{name}", str(e))
        by.setdefault(owner, []).append(name)
    if len(by) > 1:
        fail("models", "one workflow evaluates one modality; these models span "
             + "; ".join(f"{k}: {', '.join(v)}" for k, v in by.items()))
    try:
        return plugins.modality(next(iter(by)))
    except plugins.MissingModalityError as e:
        fail("models", str(e))


def parse_models(d: Any) -> dict[str, ModelSpec]:
    """``name -> ModelSpec``: every kind known (a modality's or the campaign's), its fields checked."""
    if not isinstance(d, Mapping) or not d:
        fail("models", "expected a non-empty mapping of model name -> spec")
    out = {}
    for name, spec in d.items():
        path = f"models.{name}"
        as_name(name, path)
        if not isinstance(spec, Mapping) or "kind" not in spec:
            fail(f"{path}.kind", "required field is missing")
        try:
            _, kind = plugins.model_kind(spec["kind"])
        except plugins.MissingModalityError as e:
            fail(f"{path}.kind", str(e))
        params = {k: v for k, v in spec.items() if k != "kind"}
        if kind.fields is not None:
            params = {k: v for k, v in fields(spec, path, {"kind": REQUIRED, **kind.fields}).items() if k != "kind"}
        out[str(name)] = ModelSpec(spec["kind"], params)
    return out


def parse_sampler(d: Any, device: str | None) -> SamplerSpec:
    f = fields(d, "sampler", vars(SamplerSpec()))
    if device is not None:
        f["device"] = device
    threads = f["threads"]
    return SamplerSpec(steps=as_int(f["steps"], "sampler.steps", 1),
                       t_end=as_float(f["t_end"], "sampler.t_end", 0.0, 0.5, open_lo=True),
                       chunk_size=as_int(f["chunk_size"], "sampler.chunk_size", 1),
                       device=as_choice(f["device"], "sampler.device", ("cpu", "cuda", "auto")),
                       threads=None if threads is None else as_int(threads, "sampler.threads", 1),
                       grid_power=as_float(f["grid_power"], "sampler.grid_power", 1.0, 10.0),
                       denoise=as_bool(f["denoise"], "sampler.denoise"))


def parse_method(d: Any, path: str, model_names: list[str]) -> MethodSpec:
    if not isinstance(d, Mapping):
        fail(path, f"expected a mapping, got {d!r}")
    if "operator" not in d:
        fail(f"{path}.operator", f"required field is missing; known operators: {', '.join(OPERATORS.names())}")
    op_name = d["operator"]
    if op_name not in OPERATORS:
        close = difflib.get_close_matches(str(op_name), OPERATORS.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        fail(f"{path}.operator", f"unknown operator {op_name!r}{hint}; known: {', '.join(OPERATORS.names())}")
    op = OPERATORS.get(op_name)
    f = fields(d, path, {"name": REQUIRED, "operator": REQUIRED, "models": REQUIRED, **op.options})
    name = as_name(f["name"], f"{path}.name")
    members = f["models"]
    if isinstance(members, str):
        members = [members]
    if not isinstance(members, list) or not members:
        fail(f"{path}.models", f"expected a list of model names, got {members!r}")
    for m in members:
        if m not in model_names:
            fail(f"{path}.models", f"unknown model {m!r}; known: {', '.join(model_names)}")
        if members.count(m) > 1:
            fail(f"{path}.models", f"model {m!r} is listed twice")
    k, lo, hi = len(members), op.min_models, op.max_models
    if k < lo or (hi is not None and k > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" + (f" and at most {hi}" if hi else "")
        fail(f"{path}.models", f"operator {op_name!r} takes {want} models; got {k}")
    options = {key: f[key] for key in op.options}
    if op.check is not None:
        options = op.check(options, k, model_names, path)
    return MethodSpec(name, op_name, tuple(members), options)


def parse_reports(d: Any) -> tuple[dict, ...]:
    """``[{kind: <report>, ...options}]``: the campaign's (``by_n``) or a modality's (``class_share``)."""
    if d is None:
        return ()
    if not isinstance(d, list):
        fail("reports", f"expected a list of reports, got {d!r}")
    out = []
    for i, r in enumerate(d):
        path = f"reports[{i}]"
        if not isinstance(r, Mapping) or "kind" not in r:
            fail(f"{path}.kind", f"expected one of {', '.join(plugins.reports())}; got {r!r}")
        try:
            rep = plugins.report(r["kind"])
        except plugins.MissingModalityError as e:
            fail(f"{path}.kind", str(e))
        out.append(rep.check(fields(r, path, {"kind": REQUIRED, **rep.options}), path))
    return tuple(out)
