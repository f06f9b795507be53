"""The workflow as validated dataclasses: :func:`load_workflow` parses YAML (or a dict) into them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import WorkflowError
from ..schedules import Schedule
from .checks import REQUIRED, _choice, _fail, _fields, _float, _int, _name
from .registry import _MODEL_KINDS, _OPERATORS, _SCHEDULES


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
    evaluation: dict = field(default_factory=dict)
    reports: tuple[dict, ...] = ()

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
        } | ({"evaluation": dict(self.evaluation)} if self.evaluation else {}) \
          | ({"reports": [dict(r) for r in self.reports]} if self.reports else {})


_TOP = {"name": REQUIRED, "description": "", "seed": 0, "output": "results", "run_name": None, "schedule": None,
        "models": REQUIRED, "target": None, "n_samples": 1000, "sampler": None, "methods": REQUIRED,
        "evaluation": None, "reports": None}
# evaluation settings read by the image evaluator (molfuse.modalities.images.evaluate)
_EVALUATION = {"target_classes": None, "reference_classes": None, "classifier": None, "heldout": None,
               "bits_per_dim": None, "dsm_loss": None}
_HELDOUT = {"n": 64, "seed": 0, "classes": None, "weights": None}
_BPD = {"steps": 20, "rho": 7.0, "t_start": 1.0e-5}
_DSM = {"n_t": 8, "t_min": 1.0e-3}


def load_workflow(source: str | Path | Mapping, output: str | Path | None = None, run_name: str | None = None,
                  device: str | None = None, seed: int | None = None) -> Workflow:
    """Parse and validate a workflow given as a YAML file path or as the same content in a dict.

    ``output``, ``run_name``, ``device`` and ``seed`` override the file (CLI ``--out``,
    ``--name``, ``--device``, ``--seed``). A missing ``run_name`` becomes the current timestamp.

    Raises:
        WorkflowError: naming the first offending field.
    """
    raw = _read(source)
    top = _fields(raw, "", _TOP)
    if output is not None:
        top["output"] = str(output)
    if run_name is not None:
        top["run_name"] = run_name
    if seed is not None:
        top["seed"] = seed
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
        n_samples=_int(top["n_samples"], "n_samples", 1), sampler=sampler, methods=parsed,
        evaluation=_parse_evaluation(top["evaluation"]), reports=_parse_reports(top["reports"]))


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


def _parse_evaluation(d: Any) -> dict:
    """``{target_classes?: {class: weight}, reference_classes?: [class], classifier?: path}``;
    only the keys given are kept (so config.yaml of a workflow without them is unchanged)."""
    if d is None:
        return {}
    f = _fields(d, "evaluation", _EVALUATION)
    out: dict[str, Any] = {}
    if f["target_classes"] is not None:
        tc = f["target_classes"]
        if not isinstance(tc, Mapping) or not tc:
            _fail("evaluation.target_classes", f"expected a mapping class -> weight, e.g. {{7: 0.6, 9: 0.4}}; got {tc!r}")
        out["target_classes"] = {_class(k, f"evaluation.target_classes.{k}"):
                                 _float(v, f"evaluation.target_classes.{k}", 0.0) for k, v in tc.items()}
        if sum(out["target_classes"].values()) <= 0:
            _fail("evaluation.target_classes", "weights must have a positive sum")
    if f["reference_classes"] is not None:
        rc = f["reference_classes"]
        if not isinstance(rc, list) or not rc:
            _fail("evaluation.reference_classes", f"expected a non-empty list of classes; got {rc!r}")
        out["reference_classes"] = [_class(c, f"evaluation.reference_classes[{i}]") for i, c in enumerate(rc)]
        if len(set(out["reference_classes"])) < len(rc):
            _fail("evaluation.reference_classes", f"classes are listed twice: {rc}")
    if f["classifier"] is not None:
        if not isinstance(f["classifier"], str):
            _fail("evaluation.classifier", f"expected a path to a classifier folder; got {f['classifier']!r}")
        out["classifier"] = f["classifier"]
    if f["heldout"] is not None or f["bits_per_dim"] is not None or f["dsm_loss"] is not None:
        out["heldout"] = _parse_heldout(f["heldout"] or {}, out)
    if f["bits_per_dim"] is not None:
        b = _fields({} if f["bits_per_dim"] is True else f["bits_per_dim"], "evaluation.bits_per_dim", _BPD)
        out["bits_per_dim"] = {"steps": _int(b["steps"], "evaluation.bits_per_dim.steps", 1),
                               "rho": _float(b["rho"], "evaluation.bits_per_dim.rho", 1.0),
                               "t_start": _float(b["t_start"], "evaluation.bits_per_dim.t_start", 0.0, 0.1,
                                                 open_lo=True)}
    if f["dsm_loss"] is not None:
        b = _fields({} if f["dsm_loss"] is True else f["dsm_loss"], "evaluation.dsm_loss", _DSM)
        out["dsm_loss"] = {"n_t": _int(b["n_t"], "evaluation.dsm_loss.n_t", 1),
                           "t_min": _float(b["t_min"], "evaluation.dsm_loss.t_min", 0.0, 0.5, open_lo=True)}
    return out


def _parse_reports(d: Any) -> tuple[dict, ...]:
    """``[{kind: <registered report>, ...options}]`` (see :mod:`.reports`)."""
    from .registry import _REPORTS

    if d is None:
        return ()
    if not isinstance(d, list):
        _fail("reports", f"expected a list of reports, got {d!r}")
    out = []
    for i, r in enumerate(d):
        path = f"reports[{i}]"
        if not isinstance(r, Mapping) or r.get("kind") not in _REPORTS:
            _fail(f"{path}.kind", f"expected one of {', '.join(sorted(_REPORTS))}; got {r!r}")
        rep = _REPORTS[r["kind"]]
        out.append(rep.check(_fields(r, path, {"kind": REQUIRED, **rep.options}), path))
    return tuple(out)


def _parse_heldout(d: Any, ev: dict) -> dict:
    """Held-out real images for bits/dim and DSM loss: ``n`` test images of a class population
    (``classes`` or ``weights``; default the target classes, else all), drawn with ``seed``."""
    f = _fields(d, "evaluation.heldout", _HELDOUT)
    out = {"n": _int(f["n"], "evaluation.heldout.n", 1), "seed": _int(f["seed"], "evaluation.heldout.seed", 0)}
    if f["classes"] is not None and f["weights"] is not None:
        _fail("evaluation.heldout", "give classes or weights, not both")
    if f["weights"] is not None:
        if not isinstance(f["weights"], Mapping) or not f["weights"]:
            _fail("evaluation.heldout.weights", f"expected a mapping class -> weight; got {f['weights']!r}")
        out["weights"] = {_class(k, f"evaluation.heldout.weights.{k}"): _float(v, f"evaluation.heldout.weights.{k}", 0.0)
                          for k, v in f["weights"].items()}
    elif f["classes"] is not None:
        if not isinstance(f["classes"], list) or not f["classes"]:
            _fail("evaluation.heldout.classes", f"expected a non-empty list of classes; got {f['classes']!r}")
        out["weights"] = {_class(c, f"evaluation.heldout.classes[{i}]"): 1.0 for i, c in enumerate(f["classes"])}
    else:
        out["weights"] = dict(ev.get("target_classes") or {c: 1.0 for c in range(10)})
    return out


def _class(v: Any, path: str) -> int:
    """A class label: a non-negative integer (YAML may give ``"7"``)."""
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    return _int(v, path, 0)


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

