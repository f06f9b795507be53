"""Extension points: model kinds, operators, evaluators and schedules by name, and what they get and return."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from ..sampling import sample
from ..schedules import Schedule, VPSchedule

if TYPE_CHECKING:
    import pandas as pd


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


@dataclass(frozen=True)
class Evaluator:
    """How to evaluate one modality's samples (chosen by :func:`modality_of` of a method's models).

    ``evaluate(wf, method, run, models) -> Evaluated`` runs once per method after sampling;
    ``run`` holds the model-space samples ``x`` (n, ...) and their ``seed`` / ``chunk`` per
    sample (plus ``ito``, ``fallbacks``, ``chosen`` when the operator gave them). It writes
    ``samples/<method>.npy`` in the modality's format. ``check(wf, models) -> None`` runs
    before sampling and raises a WorkflowError for settings the modality cannot use.
    ``notes`` is the paragraph under the metrics table in ``summary.md``.
    """

    evaluate: Callable[..., "Evaluated"]
    check: Callable[..., None] | None = None
    notes: str = ""


@dataclass(frozen=True)
class Report:
    """A cross-method report a workflow can ask for (``reports: [{kind: ..., ...}]``).

    ``write(wf, metrics, options) -> (markdown, pictures)`` runs after evaluation with the
    metrics table; it writes its CSV / PNG files under ``wf.folder`` (atomically) and returns
    a markdown section for ``summary.md`` and the pictures (paths relative to the folder).
    ``options`` maps each allowed key to its default (or REQUIRED); ``check(options, path)``
    validates them.
    """

    write: Callable[..., tuple[str, list[str]]]
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict, str], dict] = lambda o, path: o


_MODEL_KINDS: dict[str, ModelKind] = {}
_REPORTS: dict[str, Report] = {}
_OPERATORS: dict[str, Operator] = {}
_EVALUATORS: dict[str, Evaluator] = {}
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


def register_evaluator(modality: str, evaluate: Callable[..., "Evaluated"], check: Callable[..., None] | None = None,
                       notes: str = "", replace: bool = False) -> None:
    """Evaluate methods whose models have modality ``modality`` with ``evaluate`` (see :class:`Evaluator`)."""
    if modality in _EVALUATORS and not replace:
        raise ValueError(f"evaluator for modality {modality!r} is already registered (pass replace=True)")
    _EVALUATORS[modality] = Evaluator(evaluate, check, notes)


def register_report(kind: str, write: Callable[..., tuple[str, list[str]]], options: Mapping[str, Any] | None = None,
                    check: Callable[[dict, str], dict] | None = None, replace: bool = False) -> None:
    """Make ``reports: [{kind: <kind>}]`` available (see :class:`Report`)."""
    if kind in _REPORTS and not replace:
        raise ValueError(f"report {kind!r} is already registered (pass replace=True)")
    _REPORTS[kind] = Report(write, dict(options or {}), check or (lambda o, path: o))


def modality_of(model: Any) -> str:
    """``model.modality``, else its card's ``modality``, else ``"images"`` for a (C, H, W)
    sample shape and ``"vectors"`` otherwise."""
    declared = getattr(model, "modality", None) or (getattr(model, "card", None) or {}).get("modality")
    if declared:
        return str(declared)
    shape = getattr(model, "sample_shape", None)
    return "images" if shape is not None and len(shape) == 3 else "vectors"


# ---------------------------------------------------------------- what an operator gets and returns
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
    uses (given or fitted), extra provenance (fit losses, warnings) and, for operators whose
    samples follow one score model (single, barycenter, ensemble), that ``model``; for those
    whose samples follow a mixture of the members' densities (random_choice, OR at T = 1),
    its weights ``mixture`` (one per member, on the simplex)."""

    draw: Callable[[int, torch.Generator], Draw]
    weights: list[float] | None = None
    info: dict = field(default_factory=dict)
    model: Any = None  # the method's score model when it has one (likelihood and DSM metrics)
    mixture: list[float] | None = None  # samples follow sum_i w_i p_i of the members (likelihood)


@dataclass
class Evaluated:
    """One method's evaluation: ``per_sample.csv`` rows (from ``id, method, index, chunk, seed,
    valid, reason``), its ``metrics.csv`` row (the runner adds method, operator, models,
    weights and wall time) and pictures (paths relative to the run folder) for ``summary.md``."""

    table: "pd.DataFrame"
    row: dict
    pictures: list[str] = field(default_factory=list)


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``(seed, *parts)``: first 8 bytes of sha256 of their JSON (stable
    across processes and Python versions, unlike ``hash()``)."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

