"""Optional metric families of the backbone evaluator, plugged in by name (designability, diversity).

The geometry of :mod:`.geometry` is always measured. Heavier or optional metric families (a
designability proxy from an inverse-folding model, pairwise TM-scores and novelty) plug in as
a :class:`MetricHook`: one optional key of the ``evaluation:`` schema that switches it on and
carries its settings, a pure function that scores one method's backbones, and the columns it
adds. Registered hooks are part of the schema (:func:`.schema.parse_evaluation`, which runs while
the workflow is read, before any model is loaded: ``parse`` is where a missing optional
package or weights file is refused), of the evaluator's check before sampling (``prepare``), of
every method's rows (:func:`.evaluate.score_backbones`), of the ``backbone_reference`` report
(real fragments and random walks get the same columns), of ``provenance.json`` (``record``) and
of the pictures.

Adding one (e.g. :mod:`.diversity_hook`)::

    HOOK = MetricHook(key="diversity", default=None, parse=parse, compute=compute,
                      metric_columns=("n_clusters",), sample_columns=("novelty_tm",))

and one line in the package ``__init__`` before ``MODALITY`` is built:
``register_metric_hook(diversity_hook.HOOK)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["MetricHook", "HookContext", "register_metric_hook", "unregister_metric_hook", "metric_hooks", "active"]


@dataclass(frozen=True)
class HookContext:
    """What a hook may read besides the backbones.

    Attributes:
        name: the method (or reference row) being scored.
        settings: the whole parsed ``evaluation:`` mapping (every hook's value included).
        seed: a seed for anything random the hook draws (derived from the run's seed and ``name``).
        folder: the run folder (for files the hook writes, e.g. ``designs/<name>/``), or None.
        threads: torch threads the run uses, or None.
    """

    name: str
    settings: dict
    seed: int = 0
    folder: Path | None = None
    threads: int | None = None


@dataclass(frozen=True)
class MetricHook:
    """One optional metric family of the backbone evaluator.

    Attributes:
        key: the ``evaluation:`` key that switches it on; its value is the hook's settings.
        default: the value when the key is absent (None: off unless asked for). A value of
            ``None`` (or a parsed ``False``) leaves the hook off: it is not called.
        parse: ``parse(value, path) -> value`` for every value but None (the default included),
            checked (errors name ``path``, e.g. with :func:`molfuse.base.checks.fail`).
        compute: ``compute(traces, valid, value, ctx) -> (columns, row)`` for one method:
            ``traces`` a list of (L_i, 3) Å Cα arrays (NaN rows for a failed sample), ``valid``
            (n,) bool the geometry verdict, ``value`` the parsed settings, ``ctx`` a
            :class:`HookContext`; returns a DataFrame of n rows (per-backbone columns) or None
            and a dict of summary entries for ``metrics.csv`` (entries the evaluator already has,
            ``n`` and ``validity`` say, keep the evaluator's value). A backbone it cannot score is a
            NaN with a reason, never an exception. The table may be a ``valid`` / ``reason``
            table of its own: ``index``, ``n_res`` and ``valid`` are dropped (the geometry has
            them) and ``reason`` becomes ``<key>_reason`` (:func:`.evaluate.hook_columns`).
        metric_columns / sample_columns: the order of its columns in ``metrics.csv`` /
            ``per_sample.csv`` (after the geometry's).
        headline: the metric columns ``molfuse run`` should print.
        figure: optional ``figure(folder, tables) -> [paths]`` across methods (``tables``:
            method -> its per-sample DataFrame), e.g. a TM-score heatmap.
        notes: a sentence for ``summary.md`` saying what the columns are (and are not).
        prepare: optional ``prepare(value) -> None``, run once before sampling (the evaluator's
            ``check``): loads what ``compute`` will need (weights, a folding model) so that a
            broken file fails the run before any work; raises with a message saying what to do.
        record: optional ``record(value) -> dict``: what ``provenance.json`` records under
            ``evaluation.<key>`` beyond the parsed settings (package versions, weight hashes).
    """

    key: str
    default: Any
    parse: Callable[[Any, str], Any]
    compute: Callable[[Sequence[np.ndarray], np.ndarray, Any, HookContext], tuple[pd.DataFrame | None, dict]]
    metric_columns: tuple[str, ...] = ()
    sample_columns: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()
    figure: Callable[[Path, dict], list[str]] | None = None
    notes: str = ""
    prepare: Callable[[Any], None] | None = None
    record: Callable[[Any], dict] | None = None


_HOOKS: dict[str, MetricHook] = {}


def register_metric_hook(hook: MetricHook, replace: bool = False) -> MetricHook:
    """Make ``hook`` part of the evaluator (idempotent for the same object).

    Raises:
        ValueError: another hook already uses ``hook.key`` (a key that shadows a built-in
            setting is refused when a workflow is read, :func:`.schema.parse_evaluation`).
    """
    if hook.key in _HOOKS and _HOOKS[hook.key] is not hook and not replace:
        raise ValueError(f"a metric hook with key {hook.key!r} is already registered")
    _HOOKS[hook.key] = hook
    return hook


def unregister_metric_hook(key: str) -> MetricHook | None:
    """Remove the hook of ``key`` (tests, notebooks); returns it, or None when none had that key."""
    return _HOOKS.pop(key, None)


def metric_hooks() -> list[MetricHook]:
    """The registered hooks, in registration order."""
    return list(_HOOKS.values())


def active(settings: dict) -> list[tuple[MetricHook, Any]]:
    """``(hook, value)`` of the hooks a parsed ``evaluation:`` mapping switches on."""
    return [(h, settings.get(h.key)) for h in metric_hooks() if settings.get(h.key) not in (None, False)]
