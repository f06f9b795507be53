"""The contracts a modality implements: dataclasses of what it brings (architectures, data kinds,
model kinds, evaluator, file judge, reports, writers, potentials, objectives) and what it is
handed (a run's samples, the evaluation context). No behaviour beyond small helpers; the
registries that find them are in :mod:`molfuse.plugins.registry`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["MissingModalityError", "TrainingData", "DataKind", "ModelKind", "MethodRun", "EvalContext", "Evaluated", "Evaluator", "Report", "FileJudge", "Writer", "Potential", "Modality", "ObjectiveKind"]


class MissingModalityError(LookupError):
    """A modality (or something only a modality provides) is unknown or cannot be imported here."""


@dataclass
class TrainingData:
    """States in model space for training or fitting, and what the card should say about them.

    Attributes:
        x: (n, ...) states in model space (zero on padding for point clouds).
        description: JSON-able description of the data (source, split, counts, hashes).
        normalisation: the modality's own map between data and model space (opaque to the
            card format, checked by the modality), e.g. images ``{scale, shift, levels}``.
        mask: (n, N) bool node masks of point clouds, or None.
        cond: (n,) class labels or (n, k) properties, or None.
        condition: ``"none"``, ``"class_label"`` or ``"properties"``.
        space: the state space config (``{"kind": "euclidean"}`` or
            ``{"kind": "point_cloud", "centred": 3}``, MATH §6).
        node_counts: ``{n: count}`` of point-cloud sizes (the atom count is part of the sample).
    """

    x: Any
    description: dict
    normalisation: dict = field(default_factory=dict)
    mask: Any = None
    cond: Any = None
    condition: str = "none"
    space: dict = field(default_factory=lambda: {"kind": "euclidean"})
    node_counts: dict | None = None


@dataclass(frozen=True)
class DataKind:
    """``data: {kind: <name>, ...}``: ``build(spec) -> TrainingData``. ``fields`` is the YAML schema
    (key -> default or base.checks.REQUIRED; None leaves checking to ``build``)."""

    build: Callable[[dict], TrainingData]
    fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ModelKind:
    """``models.<name>: {kind: <name>, ...}`` in a workflow: ``builder(spec, schedule) -> model``.

    The model exposes ``sample_shape`` (or ``dim``) and ``modality``; an optional
    ``checkpoint`` path is hashed into provenance. ``fields`` as in :class:`DataKind`.
    ``modality(spec) -> name`` says, before anything is built, which modality a spec's model
    has (kinds that belong to no modality, e.g. ``checkpoint`` reading its card); a
    modality's own kinds have that modality.
    """

    builder: Callable[..., Any]
    fields: Mapping[str, Any] | None = None
    modality: Callable[[dict], str] | None = None


@dataclass
class MethodRun:
    """One method's samples as a workflow hands them to an evaluator and to writers.

    ``x`` (n, ...) in model space, ``mask`` (n, N) or None, per sample ``seed`` / ``chunk``,
    optional ``ito`` (n, K) Itô log q per member, ``fallbacks``, ``chosen`` (member index),
    ``reason`` (n,) why a sample is invalid ("" if valid), ``score_model`` (when the method
    is one score model), ``mixture`` (member weights when it samples Σ w_i p_i), the member
    ``weights`` and ``options`` of the method, and ``table``: the columns every method has
    (``id, method, index, chunk, seed, valid, reason`` and, where the operator gives them,
    ``chosen_model``, ``fallbacks``, ``ito_log_q_nats_<m>``), one row per sample."""

    name: str
    operator: str
    members: list[str]
    x: Any
    seed: Any
    chunk: Any
    mask: Any = None
    ito: Any = None
    fallbacks: Any = None
    chosen: Any = None
    reason: Any = None
    score_model: Any = None
    mixture: list[float] | None = None
    wall_time_s: float = 0.0
    weights: list[float] | None = None
    options: dict = field(default_factory=dict)
    table: Any = None
    cache: dict = field(default_factory=dict, repr=False)  # writers' and evaluator's scratch; "settings": the
    # parsed evaluation settings


@dataclass
class EvalContext:
    """What an evaluator may read: the run folder, its parsed ``evaluation`` settings, the built
    models, the convention, the run's seed and sampler settings."""

    folder: Path
    settings: dict
    models: dict[str, Any]
    schedule: Any
    seed: int
    t_end: float
    n_samples: int
    threads: int | None = None
    target: str | None = None


@dataclass
class Evaluated:
    """One method's evaluation: ``per_sample.csv`` rows (``id, method, index, chunk, seed, valid,
    reason`` then the evaluator's), its ``metrics.csv`` row and pictures (paths relative to
    the run folder)."""

    table: Any
    row: dict
    pictures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluator:
    """How a modality judges samples.

    - ``evaluate(ctx, run) -> Evaluated`` once per method after sampling;
    - ``parse(settings, path) -> dict`` validates the workflow's ``evaluation:`` mapping (the
      evaluator's YAML schema; errors name the field) and returns it resolved;
    - ``check(ctx) -> None`` before sampling (settings the models cannot use);
    - ``metric_columns`` / ``sample_columns``: the order of its columns in ``metrics.csv`` /
      ``per_sample.csv`` (a name ending in ``_`` is a group per member, in workflow order);
    - ``headline``: the columns ``molfuse run`` prints; ``notes``: the paragraph under the
      metrics table in ``summary.md``; ``caveats(ctx, metrics) -> [str]``;
    - ``figure(ctx, runs) -> [str]``: pictures drawn across methods (``runs``: name -> MethodRun);
    - ``provenance(ctx) -> dict``: what ``provenance.json`` records under ``evaluation`` (versions
      and hashes of what the evaluator used).
    """

    evaluate: Callable[..., Evaluated]
    parse: Callable[[Any, str], dict] | None = None
    check: Callable[..., None] | None = None
    metric_columns: tuple[str, ...] = ()
    sample_columns: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()
    notes: str = ""
    caveats: Callable[..., list[str]] | None = None
    figure: Callable[..., list[str]] | None = None
    provenance: Callable[..., dict] | None = None


@dataclass(frozen=True)
class Report:
    """A cross-method report (``reports: [{kind: ..., ...}]``): ``write(folder, name, metrics,
    options) -> (markdown, pictures)``; ``options`` key -> default or REQUIRED; ``check(options,
    path) -> options``. A report with ``samples`` also reads the methods' samples."""

    write: Callable[..., tuple[str, list[str]]]
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict, str], dict] = lambda o, path: o
    samples: bool = False  # True: write(..., ctx=EvalContext, runs={method: MethodRun}, modality=Modality)


@dataclass(frozen=True)
class FileJudge:
    """How a modality judges samples molfuse did not draw (``molfuse evaluate``), with the same
    ``evaluation:`` settings a workflow takes (parsed by the modality's ``Evaluator.parse``).

    - ``kinds``: what it reads, e.g. ``("*.sdf", "*.smi")``, named in help and errors;
    - ``accepts(path) -> bool``: whether ``path`` (a file or a folder) is one of them;
    - ``judge(path, settings, folder, name) -> Evaluated``: one row per item (an unreadable item
      is a row with its reason; an unreadable input, one row saying why), the ``metrics.csv`` row
      and the pictures it wrote under ``folder`` (paths relative to it);
    - ``figure(settings, folder, tables) -> [str]``: pictures across inputs (``tables``: input
      name -> its judged rows);
    - ``provenance(settings) -> dict`` and ``caveats(settings) -> [str]``: the settings and the
      reference sets behind the numbers, for ``provenance.json`` and ``summary.md``;
    - ``metric_columns``, ``sample_columns``, ``notes``: as for :class:`Evaluator`.
    """

    kinds: tuple[str, ...]
    accepts: Callable[[Path], bool]
    judge: Callable[..., Evaluated]
    figure: Callable[..., list[str]] | None = None
    provenance: Callable[[dict], dict] | None = None
    caveats: Callable[[dict], list[str]] | None = None
    metric_columns: tuple[str, ...] = ()
    sample_columns: tuple[str, ...] = ()
    notes: str = ""


Writer = Callable[[Path, MethodRun, dict], list[str]]  # (run folder, run, normalisation) -> files written


@dataclass(frozen=True)
class Potential:
    """An energy a modality offers for steering samplers (MATH §8: ``π ∝ Π q_i^{b_i} exp(−λ U)``).

    ``fn(x, mask, normalisation, **params) -> (batch,)``: model-space states ``x`` (batch, ...)
    (the sampler's denoised estimates, then the samples), their node mask or None, the card's
    ``normalisation``; energies in the potential's own unit, float64-compatible, no gradient needed.
    Its keyword parameters with defaults are what a workflow may set (``potentials: [{name, weight,
    <param>: value}]``); ``bounds`` (param -> (lo, hi), None for open) and ``check(params, path) ->
    params`` (relations between params) are checked while the workflow is read. A modality may also
    register a plain function; it is read as ``Potential(fn)``.
    """

    fn: Callable[..., Any]
    bounds: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    check: Callable[[dict, str], dict] | None = None
    description: str = ""

    def __call__(self, x: Any, mask: Any, normalisation: Mapping[str, Any], **params: Any) -> Any:
        return self.fn(x, mask, normalisation, **params)


@dataclass(frozen=True)
class Modality:
    """Everything one modality adds (see the module doc). ``check_card(card)`` validates the
    entries of a checkpoint card the modality owns (``normalisation``, ``conditioning``).
    ``set_distance(ctx, a, b) -> {metric: value}`` compares two methods' sample sets (the
    ``fidelity`` report: a student's style against its teacher, a teacher against itself).
    ``potentials``: name -> :class:`Potential` (or a plain ``fn(x, mask, normalisation, **params)``),
    the energies a workflow's ``steer`` method may name. ``files``: how ``molfuse evaluate`` judges
    a user's own sample files (:class:`FileJudge`), or None."""

    name: str
    requires: tuple[str, ...] = ()
    extra: str | None = None
    architectures: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    data_kinds: Mapping[str, DataKind] = field(default_factory=dict)
    model_kinds: Mapping[str, ModelKind] = field(default_factory=dict)
    evaluator: Evaluator | None = None
    reports: Mapping[str, Report] = field(default_factory=dict)
    writers: Mapping[str, Writer] = field(default_factory=dict)
    check_card: Callable[[dict], None] | None = None
    description: str = ""
    set_distance: Callable[..., dict] | None = None
    potentials: Mapping[str, Potential | Callable[..., Any]] = field(default_factory=dict)
    files: FileJudge | None = None

    def install_hint(self) -> str:
        return f"pip install 'molfuse[{self.extra}]'" if self.extra else f"pip install {' '.join(self.requires)}"

    def missing(self) -> list[str]:
        """The required packages that cannot be imported here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]



@dataclass(frozen=True)
class ObjectiveKind:
    """A training objective other than denoising, named by ``objective: {kind: ...}`` in a training
    workflow (e.g. ``distill``, the DMM merge). ``fields`` are its spec's fields with defaults;
    ``build(spec, net, schedule, data, seed)`` returns ``(objective module, training data, card
    entries)`` for :func:`molfuse.training.train` (see :class:`molfuse.training.DiffusionModule`)."""

    build: Callable[..., Any]
    fields: Mapping[str, Any]
