"""YAML workflow -> validated dataclasses -> run -> results folder (RESULTS.md).

Schema (``?`` = optional, default after ``=``)::

    name: str                    # required, [A-Za-z0-9_.-]+; results go to <output>/<name>/<run_name>/
    description?: str = ""       # copied into summary.md
    seed?: int = 0               # every chunk and fit seed derives from it (stable hash, see derive_seed)
    output?: str = results       # base folder
    run_name?: str = <timestamp> # YYYYmmdd-HHMMSS; rerunning the same folder resumes it
    schedule?: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    models:                      # required, name -> spec; kinds are a registry (register_model_kind)
      a: {kind: gaussian_mixture, means: [[x, y], ...], covs: [...], weights?: [...]}
    target?: <model name>        # evaluation: exact log q under it (log_q_nats_target)
    n_samples?: int = 1000       # per method
    sampler?: {steps: 500, t_end: 0.001, chunk_size: 250, device: cpu|cuda|auto, threads: null}
    methods:                     # required, list; operators are a registry (register_operator)
      - {name: str, operator: single, models: [a]}
      - {name, operator: superpose, models: [a, b, ...], mode?: or|and = or,
         temperature?: float = 1.0 (or only), bias?: [ℓ_i nats] | weights?: [ω_i] (ℓ = log ω)}
      - {name, operator: barycenter, models: [...], weights?: [λ_i] = uniform
         | fit: {data_from: <model>, n: int, window?: full|vanilla = full,
                 n_mc?: 20000, heldout_fraction?: 0.2}}   # λ learned from n samples of data_from
      - {name, operator: ensemble, models: [...], rule?: mean|weighted|median|trimmed|sum = mean,
         weights?: [...] (weighted only), trim?: 0.2 (trimmed only)}
      - {name, operator: random_choice, models: [...], weights?: [p_i] = uniform}

Every error is a :class:`~molfuse.errors.WorkflowError` naming the field path, e.g.
``methods[2].models: unknown model 'c'; known: a, b``. Unknown keys are errors (typos).
YAML 1.1 reads ``1e-3`` as a string: numeric strings are accepted wherever a number is.

A run draws each method's ``n_samples`` in chunks with seeds from (seed, method, chunk),
saves each chunk atomically under ``samples/chunks/<method>/``, so rerunning the same
folder keeps finished chunks; a rerun with a different resolved config is refused.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from . import __version__, fusion
from .errors import WorkflowError
from .models import GaussianMixture
from .sampling import sample
from .schedules import Schedule, VPSchedule

__all__ = ["REQUIRED", "Workflow", "ModelSpec", "MethodSpec", "SamplerSpec", "ModelKind", "Operator", "RunContext",
           "Draw", "Prepared", "RunResult", "register_model_kind", "register_operator", "load_workflow",
           "build_schedule", "build_models", "data_shape", "derive_seed", "run_workflow"]

REQUIRED = object()  # marks a required field in register_model_kind / register_operator specs
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------- field checks (path-named errors)
def _at(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _fail(path: str, msg: str) -> None:
    raise WorkflowError(f"{path or 'workflow'}: {msg}")


def _fields(d: Any, path: str, spec: Mapping[str, Any]) -> dict:
    """``d`` checked against ``spec`` (key -> default or REQUIRED); defaults filled in."""
    if not isinstance(d, Mapping):
        _fail(path, f"expected a mapping, got {type(d).__name__} {d!r}")
    for k in d:
        if k not in spec:
            close = difflib.get_close_matches(str(k), [str(s) for s in spec], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            _fail(_at(path, k), f"unknown key{hint}; allowed: {', '.join(map(str, spec))}")
    for k, v in spec.items():
        if v is REQUIRED and k not in d:
            _fail(_at(path, k), "required field is missing")
    return {k: d.get(k, v) for k, v in spec.items()}


def _int(v: Any, path: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        _fail(path, f"must be >= {lo}; got {v}")
    return v


def _float(v: Any, path: str, lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> float:
    try:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError
        f = float(v)
    except ValueError:
        _fail(path, f"expected a number, got {v!r}")
    if not math.isfinite(f) or (lo is not None and (f <= lo if open_lo else f < lo)) or (hi is not None and f > hi):
        rng = f"{'(' if open_lo else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        _fail(path, f"must be a finite number in {rng}; got {v!r}")
    return f


def _floats(v: Any, path: str, k: int | None = None) -> list[float]:
    if not isinstance(v, (list, tuple)):
        _fail(path, f"expected a list of numbers, got {v!r}")
    if k is not None and len(v) != k:
        _fail(path, f"expected {k} numbers (one per model), got {len(v)}")
    return [_float(x, f"{path}[{i}]") for i, x in enumerate(v)]


def _simplex(v: Any, path: str, k: int, positive: bool = False) -> list[float]:
    w = _floats(v, path, k)
    if any(x < 0 or (positive and x == 0) for x in w) or abs(sum(w) - 1.0) > 1e-6:
        need = "> 0" if positive else ">= 0"
        _fail(path, f"weights {w} are off the simplex (need each {need} and sum 1; sum is {sum(w):.6g})")
    return w


def _name(v: Any, path: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        _fail(path, f"expected a name of letters, digits, '_', '.', '-'; got {v!r}")
    return v


def _choice(v: Any, path: str, choices: Sequence[str]) -> str:
    if v not in choices:
        _fail(path, f"must be one of {', '.join(choices)}; got {v!r}")
    return v


# ---------------------------------------------------------------- registries
@dataclass(frozen=True)
class ModelKind:
    """How to build one model kind: ``builder(spec, schedule) -> score model``.

    ``fields`` maps each allowed key (besides ``kind``) to its default or REQUIRED; None
    leaves key checking to the builder. A builder's ValueError / TypeError becomes a
    WorkflowError naming the model. The model must expose ``dim`` (vectors) or
    ``sample_shape``; an optional ``checkpoint`` attribute (path) is hashed into provenance.
    """

    builder: Callable[[dict, Schedule], Any]
    fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Operator:
    """A fusion operator a method can name.

    ``prepare(method, members, ctx) -> Prepared`` runs once per method (e.g. fits weights);
    ``options`` maps each allowed option key to its default (or REQUIRED);
    ``check(options, k, model_names, path) -> options`` validates them (raise with ``path``).
    """

    prepare: Callable[..., "Prepared"]
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict, int, Sequence[str], str], dict] | None = None
    min_models: int = 1
    max_models: int | None = None


_MODEL_KINDS: dict[str, ModelKind] = {}
_OPERATORS: dict[str, Operator] = {}
_SCHEDULES: dict[str, tuple[Callable[..., Schedule], dict]] = {"vp": (VPSchedule, {"beta_min": 0.1, "beta_max": 20.0})}


def register_model_kind(kind: str, builder: Callable[[dict, Schedule], Any],
                        fields: Mapping[str, Any] | None = None, replace: bool = False) -> None:
    """Make ``models.<name>.kind: <kind>`` buildable (see :class:`ModelKind`)."""
    if kind in _MODEL_KINDS and not replace:
        raise ValueError(f"model kind {kind!r} is already registered (pass replace=True)")
    _MODEL_KINDS[kind] = ModelKind(builder, fields)


def register_operator(name: str, prepare: Callable[..., "Prepared"], options: Mapping[str, Any] | None = None,
                      check: Callable[[dict, int, Sequence[str], str], dict] | None = None,
                      min_models: int = 1, max_models: int | None = None, replace: bool = False) -> None:
    """Make ``methods[i].operator: <name>`` runnable (see :class:`Operator`)."""
    if name in _OPERATORS and not replace:
        raise ValueError(f"operator {name!r} is already registered (pass replace=True)")
    _OPERATORS[name] = Operator(prepare, dict(options or {}), check, min_models, max_models)


# ---------------------------------------------------------------- the workflow as dataclasses
@dataclass(frozen=True)
class ModelSpec:
    kind: str
    params: dict


@dataclass(frozen=True)
class SamplerSpec:
    steps: int = 500
    t_end: float = 1e-3
    chunk_size: int = 250
    device: str = "cpu"
    threads: int | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    operator: str
    models: tuple[str, ...]
    options: dict


@dataclass(frozen=True)
class Workflow:
    """A validated workflow; :meth:`to_config` is the resolved ``config.yaml``."""

    name: str
    seed: int
    output: str
    run_name: str
    description: str
    schedule: dict
    models: dict[str, ModelSpec]
    target: str | None
    n_samples: int
    sampler: SamplerSpec
    methods: tuple[MethodSpec, ...]

    @property
    def folder(self) -> Path:
        return Path(self.output) / self.name / self.run_name

    def to_config(self) -> dict:
        return {
            "name": self.name, "description": self.description, "seed": self.seed, "output": self.output,
            "run_name": self.run_name, "schedule": dict(self.schedule),
            "models": {n: {"kind": m.kind, **m.params} for n, m in self.models.items()},
            "target": self.target, "n_samples": self.n_samples, "sampler": vars(self.sampler).copy(),
            "methods": [{"name": m.name, "operator": m.operator, "models": list(m.models), **m.options}
                        for m in self.methods],
        }


_TOP = {"name": REQUIRED, "description": "", "seed": 0, "output": "results", "run_name": None, "schedule": None,
        "models": REQUIRED, "target": None, "n_samples": 1000, "sampler": None, "methods": REQUIRED}


def load_workflow(source: str | Path | Mapping, output: str | Path | None = None, run_name: str | None = None,
                  device: str | None = None) -> Workflow:
    """Parse and validate a workflow given as a YAML file path or as the same content in a dict.

    ``output``, ``run_name`` and ``device`` override the file (CLI ``--out``, ``--name``,
    ``--device``). A missing ``run_name`` becomes the current timestamp.

    Raises:
        WorkflowError: naming the first offending field.
    """
    raw = _read(source)
    top = _fields(raw, "", _TOP)
    if output is not None:
        top["output"] = str(output)
    if run_name is not None:
        top["run_name"] = run_name
    if top["run_name"] is None:
        top["run_name"] = datetime.now().strftime("%Y%m%d-%H%M%S")
    models = _parse_models(top["models"])
    target = top["target"]
    if target is not None and target not in models:
        _fail("target", f"unknown model {target!r}; known: {', '.join(models)}")
    if "target" in models and target != "target":
        _fail("models.target", "the name 'target' is reserved for the workflow's target model (set target: target)")
    sampler = _parse_sampler(top["sampler"] or {}, device)
    methods = top["methods"]
    if not isinstance(methods, list) or not methods:
        _fail("methods", "expected a non-empty list of methods")
    parsed = tuple(_parse_method(m, f"methods[{i}]", list(models)) for i, m in enumerate(methods))
    seen: set[str] = set()
    for i, m in enumerate(parsed):
        if m.name in seen:
            _fail(f"methods[{i}].name", f"duplicate method name {m.name!r}")
        seen.add(m.name)
    return Workflow(
        name=_name(top["name"], "name"), seed=_int(top["seed"], "seed", 0), output=str(top["output"]),
        run_name=_name(str(top["run_name"]), "run_name"), description=str(top["description"] or ""),
        schedule=_parse_schedule(top["schedule"] or {}), models=models, target=target,
        n_samples=_int(top["n_samples"], "n_samples", 1), sampler=sampler, methods=parsed)


def _read(source: str | Path | Mapping) -> Any:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise WorkflowError(f"workflow file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise WorkflowError(f"{path}: not valid YAML: {e}") from None


def _parse_schedule(d: Any) -> dict:
    kind = d.get("kind", "vp") if isinstance(d, Mapping) else None
    if kind not in _SCHEDULES:
        _fail("schedule.kind", f"unknown schedule kind {kind!r}; known: {', '.join(_SCHEDULES)}")
    f = _fields(d, "schedule", {"kind": "vp", **_SCHEDULES[kind][1]})
    return {"kind": kind, **{k: _float(v, f"schedule.{k}", 0.0, open_lo=True) for k, v in f.items() if k != "kind"}}


def build_schedule(spec: Mapping) -> Schedule:
    cls, _ = _SCHEDULES[spec["kind"]]
    try:
        return cls(**{k: v for k, v in spec.items() if k != "kind"})
    except ValueError as e:
        raise WorkflowError(f"schedule: {e}") from None


def _parse_models(d: Any) -> dict[str, ModelSpec]:
    if not isinstance(d, Mapping) or not d:
        _fail("models", "expected a non-empty mapping of model name -> spec")
    out = {}
    for name, spec in d.items():
        path = f"models.{name}"
        _name(name, path)
        if not isinstance(spec, Mapping) or "kind" not in spec:
            _fail(f"{path}.kind", "required field is missing")
        kind = spec["kind"]
        if kind not in _MODEL_KINDS:
            _fail(f"{path}.kind", f"unknown model kind {kind!r}; known: {', '.join(sorted(_MODEL_KINDS))}")
        fields_ = _MODEL_KINDS[kind].fields
        params = {k: v for k, v in spec.items() if k != "kind"}
        if fields_ is not None:
            params = {k: v for k, v in _fields(spec, path, {"kind": REQUIRED, **fields_}).items() if k != "kind"}
        out[str(name)] = ModelSpec(kind, params)
    return out


def _parse_sampler(d: Any, device: str | None) -> SamplerSpec:
    f = _fields(d, "sampler", vars(SamplerSpec()))
    if device is not None:
        f["device"] = device
    threads = f["threads"]
    return SamplerSpec(steps=_int(f["steps"], "sampler.steps", 1),
                       t_end=_float(f["t_end"], "sampler.t_end", 0.0, 0.5, open_lo=True),
                       chunk_size=_int(f["chunk_size"], "sampler.chunk_size", 1),
                       device=_choice(f["device"], "sampler.device", ("cpu", "cuda", "auto")),
                       threads=None if threads is None else _int(threads, "sampler.threads", 1))


def _parse_method(d: Any, path: str, model_names: list[str]) -> MethodSpec:
    if not isinstance(d, Mapping):
        _fail(path, f"expected a mapping, got {d!r}")
    if "operator" not in d:
        _fail(f"{path}.operator", f"required field is missing; known operators: {', '.join(sorted(_OPERATORS))}")
    op_name = d["operator"]
    if op_name not in _OPERATORS:
        close = difflib.get_close_matches(str(op_name), list(_OPERATORS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        _fail(f"{path}.operator", f"unknown operator {op_name!r}{hint}; known: {', '.join(sorted(_OPERATORS))}")
    op = _OPERATORS[op_name]
    f = _fields(d, path, {"name": REQUIRED, "operator": REQUIRED, "models": REQUIRED, **op.options})
    name = _name(f["name"], f"{path}.name")
    members = f["models"]
    if isinstance(members, str):
        members = [members]
    if not isinstance(members, list) or not members:
        _fail(f"{path}.models", f"expected a list of model names, got {members!r}")
    for m in members:
        if m not in model_names:
            _fail(f"{path}.models", f"unknown model {m!r}; known: {', '.join(model_names)}")
        if members.count(m) > 1:
            _fail(f"{path}.models", f"model {m!r} is listed twice")
    k, lo, hi = len(members), op.min_models, op.max_models
    if k < lo or (hi is not None and k > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" + (f" and at most {hi}" if hi else "")
        _fail(f"{path}.models", f"operator {op_name!r} takes {want} models; got {k}")
    options = {key: f[key] for key in op.options}
    if op.check is not None:
        options = op.check(options, k, model_names, path)
    return MethodSpec(name, op_name, tuple(members), options)


# ---------------------------------------------------------------- model kinds
def _numeric(v: Any) -> Any:
    """Nested lists with numeric strings (YAML 1.1 reads ``1e-3`` as text) made numbers."""
    if isinstance(v, (list, tuple)):
        return [_numeric(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"expected a number, got {v!r}") from None
    return v


def _gaussian_mixture(spec: dict, schedule: Schedule) -> GaussianMixture:
    w = spec.get("weights")
    return GaussianMixture(_numeric(spec["means"]), _numeric(spec["covs"]), None if w is None else _numeric(w),
                           schedule=schedule)


register_model_kind("gaussian_mixture", _gaussian_mixture, {"means": REQUIRED, "covs": REQUIRED, "weights": None})


def build_models(wf: Workflow, schedule: Schedule) -> dict[str, Any]:
    """Every model of ``wf`` built in ``schedule``; builder errors name the model."""
    out = {}
    for name, spec in wf.models.items():
        try:
            model = _MODEL_KINDS[spec.kind].builder(dict(spec.params), schedule)
        except (ValueError, TypeError, RuntimeError) as e:
            raise WorkflowError(f"models.{name}: {e}") from None
        if getattr(model, "name", None) is None:
            try:
                model.name = name
            except AttributeError:
                pass
        data_shape(model, f"models.{name}")
        out[name] = model
    return out


def data_shape(model: Any, path: str = "model") -> tuple[int, ...]:
    """Shape of one sample: ``model.sample_shape`` or ``(model.dim,)``."""
    shape = getattr(model, "sample_shape", None)
    if shape is None and getattr(model, "dim", None) is not None:
        shape = (model.dim,)
    if shape is None:
        _fail(path, f"{type(model).__name__} declares neither sample_shape nor dim; the sampler needs one")
    return tuple(int(s) for s in shape)


# ---------------------------------------------------------------- operators
@dataclass
class RunContext:
    """What operators need at run time: the convention, the built models, sampler settings."""

    schedule: Schedule
    models: dict[str, Any]
    steps: int
    t_end: float
    device: torch.device
    seed: int

    def generator(self, *parts: Any) -> torch.Generator:
        """A CPU generator seeded from (workflow seed, *parts) (portable across devices)."""
        return torch.Generator().manual_seed(derive_seed(self.seed, *parts))

    def sde(self, model: Any, n: int, shape: tuple[int, ...], g: torch.Generator, track: bool):
        return sample(model, self.schedule, (n, *shape), steps=self.steps, t_end=self.t_end, generator=g,
                      track_log_density=track, device=self.device)


@dataclass
class Draw:
    """One chunk from an operator: samples (n, ...), Itô log q per member (n, K) float64 with
    NaN where not tracked, AND fallback counts (n,), chosen member per sample (n,)."""

    x: torch.Tensor
    ito: torch.Tensor | None = None
    fallbacks: torch.Tensor | None = None
    chosen: torch.Tensor | None = None


@dataclass
class Prepared:
    """A method ready to draw chunks: ``draw(n, generator) -> Draw``; the member weights it
    uses (given or fitted) and extra provenance (fit losses, warnings)."""

    draw: Callable[[int, torch.Generator], Draw]
    weights: list[float] | None = None
    info: dict = field(default_factory=dict)


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``(seed, *parts)``: first 8 bytes of sha256 of their JSON (stable
    across processes and Python versions, unlike ``hash()``)."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _prepare_single(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    model, shape = members[0], data_shape(members[0])

    def draw(n: int, g: torch.Generator) -> Draw:
        r = ctx.sde(model, n, shape, g, track=True)
        return Draw(r.x, ito=r.log_density[:, None])

    return Prepared(draw)


def _check_superpose(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["mode"] = _choice(o["mode"], f"{path}.mode", fusion.superposition.MODES)
    o["temperature"] = _float(o["temperature"], f"{path}.temperature", 0.0, open_lo=True)
    if o["mode"] == "and" and o["temperature"] != 1.0:
        _fail(f"{path}.temperature", "temperature only enters mode 'or' (κ = softmax(T log q + ℓ)); drop it for 'and'")
    if o["bias"] is not None and o["weights"] is not None:
        _fail(path, "give bias or weights (bias = log weights), not both")
    if o["bias"] is not None:
        o["bias"] = _floats(o["bias"], f"{path}.bias", k)
    if o["weights"] is not None:
        o["weights"] = _simplex(o["weights"], f"{path}.weights", k, positive=True)
    return o


def _prepare_superpose(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    o, shape = method.options, data_shape(members[0])
    bias = [math.log(w) for w in o["weights"]] if o["weights"] is not None else o["bias"]

    def draw(n: int, g: torch.Generator) -> Draw:
        r = fusion.superpose(members, ctx.schedule, (n, *shape), mode=o["mode"], temperature=o["temperature"],
                             bias=bias, steps=ctx.steps, generator=g, t_end=ctx.t_end, device=ctx.device)
        return Draw(r.x, ito=r.log_q, fallbacks=r.fallbacks)

    return Prepared(draw, None, {"mode": o["mode"], "temperature": o["temperature"], "bias_nats": bias})


_FIT = {"data_from": REQUIRED, "n": REQUIRED, "window": "full", "n_mc": 20000, "heldout_fraction": 0.2}


def _check_barycenter(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    if o["fit"] is not None and o["weights"] is not None:
        _fail(path, "give weights or fit, not both")
    if o["fit"] is None:
        o["weights"] = _simplex([1.0 / k] * k if o["weights"] is None else o["weights"], f"{path}.weights", k)
        return o
    p = f"{path}.fit"
    f = _fields(o["fit"], p, _FIT)
    if f["data_from"] not in names:
        _fail(f"{p}.data_from", f"unknown model {f['data_from']!r}; known: {', '.join(names)}")
    f["n"] = _int(f["n"], f"{p}.n", 2)
    f["window"] = _choice(f["window"], f"{p}.window", fusion.barycenter.WINDOWS)
    f["n_mc"] = _int(f["n_mc"], f"{p}.n_mc", 1)
    f["heldout_fraction"] = _float(f["heldout_fraction"], f"{p}.heldout_fraction", 0.0, 0.9)
    o["fit"] = f
    return o


def _prepare_barycenter(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    o, shape, info = method.options, data_shape(members[0]), {}
    weights = o["weights"]
    if o["fit"] is not None:
        weights, info = _fit_weights(method, members, ctx)
    model = fusion.Barycenter(members, weights, ctx.schedule)

    def draw(n: int, g: torch.Generator) -> Draw:
        return Draw(ctx.sde(model, n, shape, g, track=False).x)

    return Prepared(draw, [float(w) for w in weights], info)


def _fit_weights(method: MethodSpec, members: list, ctx: RunContext) -> tuple[list[float], dict]:
    """λ from ``fit.n`` samples of ``fit.data_from`` (MATH §2), seeded by (seed, method, "fit")."""
    f = method.options["fit"]
    source = ctx.models[f["data_from"]]
    if not hasattr(source, "sample"):
        raise ValueError(f"fit.data_from: model {f['data_from']!r} cannot draw samples (it has no .sample)")
    g = ctx.generator(method.name, "fit")
    data = source.sample(f["n"], generator=g).to(ctx.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fusion.fit_barycenter_weights(members, data, ctx.schedule, window=f["window"], n_mc=f["n_mc"],
                                            heldout_fraction=f["heldout_fraction"], generator=g)
    for w in caught:
        warnings.warn(f"{method.name}: {w.message}", stacklevel=2)
    info = {"fit": {"seed": derive_seed(ctx.seed, method.name, "fit"), "data_from": f["data_from"], "n": f["n"],
                    "window": f["window"], "t_window": list(fit.window), "n_train": fit.n_train,
                    "n_heldout": fit.n_heldout, "train_dsm_loss": fit.train_loss, "heldout_dsm_loss": fit.heldout_loss,
                    "per_model": fit.per_model.to_dict("records"), "warnings": [str(w.message) for w in caught]}}
    return [float(w) for w in fit.weights], info


def _check_ensemble(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["rule"] = _choice(o["rule"], f"{path}.rule", fusion.ensemble.RULES)
    if o["rule"] == "weighted":
        if o["weights"] is None:
            _fail(f"{path}.weights", "rule 'weighted' needs weights (one per model, on the simplex)")
        o["weights"] = _simplex(o["weights"], f"{path}.weights", k)
    elif o["weights"] is not None:
        _fail(f"{path}.weights", f"weights only apply to rule 'weighted' (rule is {o['rule']!r})")
    if o["rule"] == "trimmed":
        o["trim"] = _float(0.2 if o["trim"] is None else o["trim"], f"{path}.trim", 0.0, 0.5)
    elif o["trim"] is not None:
        _fail(f"{path}.trim", f"trim only applies to rule 'trimmed' (rule is {o['rule']!r})")
    return o


def _prepare_ensemble(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    o, shape = method.options, data_shape(members[0])
    model = fusion.Ensemble(members, rule=o["rule"], weights=o["weights"], schedule=ctx.schedule,
                            trim=0.2 if o["trim"] is None else o["trim"])

    def draw(n: int, g: torch.Generator) -> Draw:
        return Draw(ctx.sde(model, n, shape, g, track=False).x)

    return Prepared(draw, o["weights"])


def _check_random_choice(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["weights"] = _simplex([1.0 / k] * k if o["weights"] is None else o["weights"], f"{path}.weights", k)
    return o


def _prepare_random_choice(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    """Each sample runs one member, drawn with probabilities ``weights`` (MATH §4 baseline)."""
    shape, k = data_shape(members[0]), len(members)
    probs = torch.tensor(method.options["weights"], dtype=torch.float64)

    def draw(n: int, g: torch.Generator) -> Draw:
        chosen = torch.multinomial(probs, n, replacement=True, generator=g)
        x = torch.full((n, *shape), math.nan, dtype=torch.get_default_dtype())
        ito = torch.full((n, k), math.nan, dtype=torch.float64)
        for i, model in enumerate(members):
            idx = (chosen == i).nonzero().flatten()
            if len(idx):
                r = ctx.sde(model, len(idx), shape, g, track=True)
                x[idx], ito[idx, i] = r.x.cpu().to(x.dtype), r.log_density.cpu()
        return Draw(x, ito=ito, chosen=chosen)

    return Prepared(draw, method.options["weights"])


register_operator("single", _prepare_single, min_models=1, max_models=1)
register_operator("superpose", _prepare_superpose, {"mode": "or", "temperature": 1.0, "bias": None, "weights": None},
                  _check_superpose, min_models=2)
register_operator("barycenter", _prepare_barycenter, {"weights": None, "fit": None}, _check_barycenter, min_models=2)
register_operator("ensemble", _prepare_ensemble, {"rule": "mean", "weights": None, "trim": None}, _check_ensemble,
                  min_models=2)
register_operator("random_choice", _prepare_random_choice, {"weights": None}, _check_random_choice, min_models=2)


# ---------------------------------------------------------------- atomic files
def _atomic(path: Path, write: Callable[[Any], None], text: bool = False) -> None:
    """Write through a temporary name in the same folder, then ``os.replace`` (RESULTS.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, content: str) -> None:
    _atomic(path, lambda fh: fh.write(content), text=True)


def _jsonable(v: Any) -> Any:
    """Plain JSON values (NaN / inf -> None, numpy and torch scalars -> Python)."""
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.generic, torch.Tensor)):
        v = v.item() if getattr(v, "ndim", 0) == 0 else v.tolist()
        return _jsonable(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


# ---------------------------------------------------------------- running
@dataclass
class RunResult:
    """What a run leaves: its folder and the tables of ``metrics.csv`` / ``per_sample.csv``."""

    folder: Path
    metrics: pd.DataFrame
    per_sample: pd.DataFrame
    provenance: dict = field(default_factory=dict, repr=False)


def run_workflow(source: str | Path | Mapping, out: str | Path | None = None, name: str | None = None,
                 device: str | None = None, progress: bool = True, verbose: bool = True) -> RunResult:
    """Validate, run and evaluate a workflow; write its results folder (RESULTS.md).

    Args:
        source: a workflow YAML file or the same content as a dict.
        out, name, device: override ``output``, ``run_name`` and ``sampler.device``.
        progress: a tqdm bar over chunks; verbose: print the plan and the device used.

    Returns:
        The folder and the ``metrics`` (one row per method) / ``per_sample`` DataFrames.

    Raises:
        WorkflowError: malformed workflow, or the folder holds a run of another config.
    """
    say = print if verbose else (lambda *a, **k: None)
    started, t0 = _now(), time.perf_counter()
    wf = load_workflow(source, output=out, run_name=name, device=device)
    schedule = build_schedule(wf.schedule)
    models = build_models(wf, schedule)
    shapes = _method_shapes(wf, models)
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
    tables, rows = [], []
    for m in wf.methods:
        table, row = _evaluate(wf, m, runs[m.name], prepared[m.name], models)
        tables.append(table)
        rows.append(row)
    names = list(wf.models)
    per_sample = _ordered(pd.concat(tables, ignore_index=True), names, _SAMPLE_ORDER)
    metrics = _ordered(pd.DataFrame(rows), names, _METRIC_ORDER)
    for file, df in (("per_sample.csv", per_sample), ("metrics.csv", metrics)):
        _atomic(wf.folder / file, lambda fh, df=df: df.to_csv(fh, index=False, float_format="%.10g"), text=True)
    picture = _plot(wf, models, runs, prepared, shapes)
    prov = _provenance(wf, models, prepared, runs, dev, started, time.perf_counter() - t0, resumed)
    _write_text(wf.folder / "provenance.json", json.dumps(_jsonable(prov), indent=2) + "\n")
    _write_text(wf.folder / "summary.md", _summary(wf, metrics, prov, picture))
    say(f"molfuse: wrote {wf.folder} in {time.perf_counter() - t0:.1f} s")
    return RunResult(wf.folder, metrics, per_sample, prov)


# Column order of the two tables; a key ending in "_" is a per-model group, in workflow order.
_METRIC_ORDER = ("method", "operator", "models", "n", "n_valid", "mean_log_q_nats_target", "share_",
                 "mean_abs_log_q_gap_nats", "ito_abs_err_nats_", "fallbacks", "weight_", "heldout_dsm_loss",
                 "wall_time_s")
_SAMPLE_ORDER = ("id", "method", "index", "chunk", "seed", "valid", "reason", "x0", "x1", "x2", "chosen_model",
                 "fallbacks", "log_q_nats_target", "log_q_nats_", "ito_log_q_nats_")


def _ordered(df: pd.DataFrame, model_names: list[str], order: Sequence[str]) -> pd.DataFrame:
    cols = []
    for key in order:
        group = [key + m for m in model_names] if key.endswith("_") else [key]
        cols += [c for c in group if c in df and c not in cols]
    return df[cols + [c for c in df if c not in cols]]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        names = list(m.models) + ([m.options["fit"]["data_from"]] if m.options.get("fit") else [])
        names += [wf.target] if wf.target else []
        shapes = {n: data_shape(models[n]) for n in names}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
            _fail(f"methods[{i}].models", f"models (and target / fit source) differ in sample shape: {listed}")
        out[m.name] = shapes[m.models[0]]
    return out


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
    """What must match to resume: all but where the folder is and how many threads ran."""
    out = {k: v for k, v in config.items() if k not in ("output", "run_name")}
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
    _atomic(wf.folder / "samples" / f"{m.name}.npy", lambda fh: np.save(fh, out["x"]))
    return out


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


def _evaluate(wf: Workflow, m: MethodSpec, run: dict, prep: Prepared, models: dict) -> tuple[pd.DataFrame, dict]:
    from .evaluation.vectors import method_metrics, per_sample_table

    target = models[wf.target] if wf.target else None
    table = per_sample_table(m.name, run["x"], m.models, run["seed"], run["chunk"], models, wf.sampler.t_end,
                             target=target, ito=run.get("ito"), fallbacks=run.get("fallbacks"),
                             chosen=run.get("chosen"))
    row = {"method": m.name, "operator": m.operator, "models": "+".join(m.models), **method_metrics(table, m.models)}
    if prep.weights is not None:
        row.update({f"weight_{n}": float(w) for n, w in zip(m.models, prep.weights)})
    if "fit" in prep.info:
        row["heldout_dsm_loss"] = prep.info["fit"]["heldout_dsm_loss"]
    row["wall_time_s"] = run["wall_time_s"]
    return table, row


# ---------------------------------------------------------------- picture, provenance, summary
def _plot(wf: Workflow, models: dict, runs: dict, prepared: dict, shapes: dict) -> str | None:
    """samples.png: one panel per 2-D method over its members' exact t = 0 contours."""
    two_d = [m for m in wf.methods if shapes[m.name] == (2,)]
    if not two_d:
        return None
    from .evaluation.plots import COLORS, Contour, Panel, extent_of, grid, log_density_grid, panels_figure

    n = 120
    xs, ys, pts = grid(extent_of([runs[m.name]["x"] for m in two_d]), n)
    fit_src = {m.name: m.options["fit"]["data_from"] for m in two_d if m.options.get("fit")}
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
    root = Path(__file__).resolve().parents[1]
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
    ckpts = [{"model": k, "path": str(m.checkpoint), "sha256": _sha256(m.checkpoint)}
             for k, m in models.items() if getattr(m, "checkpoint", None)]
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


def _summary(wf: Workflow, metrics: pd.DataFrame, prov: dict, picture: str | None) -> str:
    from .evaluation.vectors import markdown_table

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
    lines += ["Log-densities in nats, exact ones at t_end. `share_<m>`: share of samples whose highest exact "
              "density is member m's (denominator: all n). `ito_abs_err_nats_<m>`: mean |Itô − exact|. "
              "`mean_abs_log_q_gap_nats`: mean |log q_a − log q_b| (small for AND).", ""]
    if picture:
        lines += ["## Picture", "", f"![samples over member density contours]({picture})", ""]
    return "\n".join(lines + ["## Caveats", ""] + [f"- {c}" for c in _caveats(wf, metrics, prov)]) + "\n"


def _caveats(wf: Workflow, metrics: pd.DataFrame, prov: dict) -> list[str]:
    ops = {m.operator for m in wf.methods}
    out = [f"Exact log q is evaluated at t_end = {wf.sampler.t_end} (where the sampler stops), not at t = 0."]
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
    if any(m.operator == "superpose" and m.options["mode"] == "and" for m in wf.methods):
        out.append("Along AND paths κ depends on the step's own noise (it is O(Δτ^-1/2)), so the Itô log q "
                   "estimates there are biased by a few nats (equally for every member); trust the exact columns.")
    if "fallbacks" in metrics and metrics["fallbacks"].fillna(0).sum() > 0:
        out.append(f"AND fell back to equal weights in {int(metrics['fallbacks'].fillna(0).sum())} sample-steps "
                   "(member scores nearly equal, usually near t = 1).")
    bad = int((metrics["n"] - metrics["n_valid"]).sum())
    if bad:
        out.append(f"{bad} samples are invalid (non-finite); they count in every share's denominator.")
    return out
