"""Prediction-type conversions and model contracts (MATH §1). The only place they live.

A score model is any callable ``model(x, t, cond=None) -> Tensor`` with an optional
attribute ``prediction`` in ``{"score", "eps", "x0", "v"}`` (``"score"`` when absent), an
optional ``schedule`` (:class:`~molfuse.schedules.Schedule`) it was trained with and an
optional ``space`` (:class:`~molfuse.spaces.Space`, MATH §6). A model whose batches carry a
node mask is called ``model(x, t, cond=cond, mask=mask)``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .base.checks import check_finite
from .errors import ConventionError
from .schedules import Schedule
from .spaces import Space, resolve_space

__all__ = ["PREDICTIONS", "to_score", "prediction_of", "resolve_schedule", "ScoreFn", "score_fn", "model_name"]

PREDICTIONS = ("score", "eps", "x0", "v")
ScoreFn = Callable[..., Tensor]  # fn(x, t, cond=None, mask=None) -> score


def _bcast(c: Tensor, x: Tensor) -> Tensor:
    """Per-sample coefficient (batch,) -> broadcastable against x (batch, ...)."""
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


def to_score(output: Tensor, prediction: str, x: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """Convert a network output to the score ``grad_x log q_t(x)`` (MATH §1).

    Args:
        output: network output, same shape as ``x`` (batch, ...).
        prediction: one of ``"score"``, ``"eps"``, ``"x0"``, ``"v"``.
        x: noisy input (batch, ...).
        t: times (batch,).
        schedule: the convention the output is expressed in.
    """
    if prediction == "score":
        return output
    alpha, sigma = _bcast(schedule.alpha(t), x), _bcast(schedule.sigma(t), x)
    if prediction == "eps":
        return -output / sigma  # s = -eps_hat / sigma
    if prediction == "x0":
        return -(x - alpha * output) / sigma**2  # eps_hat = (x - alpha x0_hat) / sigma
    if prediction == "v":
        eps = (sigma * x + alpha * output) / (alpha**2 + sigma**2)  # v = alpha eps - sigma x0
        return -eps / sigma
    raise ConventionError(f"unknown prediction type {prediction!r}; expected one of {PREDICTIONS}")


def prediction_of(model: Any) -> str:
    """The model's declared prediction type (``"score"`` when it declares none)."""
    pred = getattr(model, "prediction", "score")
    if pred not in PREDICTIONS:
        raise ConventionError(f"{model_name(model)} declares prediction={pred!r}; expected one of {PREDICTIONS}")
    return pred


def resolve_schedule(models: Sequence[Any], schedule: Schedule | None = None) -> Schedule | None:
    """The one schedule the models share, checked against ``schedule`` if given.

    Raises:
        ConventionError: two models (or a model and ``schedule``) declare different
            schedules, or a non-score model has no schedule to convert with.
    """
    declared = [(m, getattr(m, "schedule", None)) for m in models]
    for m, s in declared:
        if s is None:
            continue
        if not isinstance(s, Schedule):
            raise ConventionError(f"{model_name(m)}.schedule is {type(s).__name__}, not a molfuse Schedule")
        if schedule is None:
            schedule = s
        elif s != schedule:
            raise ConventionError(
                f"schedule mismatch: {model_name(m)} was trained with {s!r} but {schedule!r} is in use; "
                "convert the model to one convention or use its own schedule (MATH §1)"
            )
    if schedule is None and any(prediction_of(m) != "score" for m, _ in declared):
        raise ConventionError("a model predicts eps/x0/v but no schedule is known to convert it to a score")
    return schedule


def score_fn(model: Any, schedule: Schedule | None, space: Space | None = None) -> ScoreFn:
    """Wrap ``model`` as ``fn(x, t, cond=None, mask=None) -> score`` with its contract checked.

    ``t`` may be a float or a (batch,) tensor; the wrapped model always receives a (batch,)
    tensor of the dtype of ``x``. The output shape is checked against ``x``, and a NaN / inf
    output raises :class:`~molfuse.errors.NonFiniteError` naming the model and t. On a
    constrained space (MATH §6) the input and the score are projected onto the subspace
    (so the score's divergence is the subspace's), and ``mask`` is passed to the model.
    """
    pred = prediction_of(model)
    schedule = resolve_schedule([model], schedule)
    space = resolve_space([model], space)
    name = model_name(model)
    nodes = _card_nodes(model)

    def fn(x: Tensor, t: Tensor | float, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        tb = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        kwargs = {} if cond is None else {"cond": cond}
        if not space.trivial:
            if nodes is not None:
                _check_nodes(name, nodes, x, mask)
            x = space.project(x, mask)
            if mask is not None:
                kwargs["mask"] = mask
        elif mask is not None:
            raise ConventionError(f"{name} lives on {space!r}, which has no node mask; got one")
        out = model(x, tb, **kwargs)
        if out.shape != x.shape:
            raise ConventionError(f"{name} returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        if not bool(torch.isfinite(out).all()):
            check_finite(out, f"model {name!r} at {_when(tb)}")
        s = to_score(out, pred, x, tb, schedule)
        return s if space.trivial else space.project(s, mask)

    return fn


def _card_nodes(model: Any) -> int | None:
    """The node count of a checkpoint's states (its card's ``shape[0]``), if it has a card."""
    card = getattr(model, "card", None)
    shape = card.get("shape") if isinstance(card, dict) else None
    return int(shape[0]) if isinstance(shape, (list, tuple)) and shape else None


def _check_nodes(name: str, nodes: int, x: Tensor, mask: Tensor | None) -> None:
    """Refuse states with more real nodes than the model was built for (MATH §6)."""
    real = int(mask.sum(1).max()) if mask is not None and mask.numel() else (x.shape[1] if x.dim() > 1 else 0)
    if real > nodes:
        raise ConventionError(f"{name} was trained on states of at most {nodes} nodes (its card's shape) but got "
                              f"{real} real nodes{' (mask)' if mask is not None else ''}; draw at most {nodes}")


def _when(t: Tensor) -> str:
    lo, hi = float(t.min()), float(t.max())
    return f"t={lo:.4g}" if lo == hi else f"t in [{lo:.4g}, {hi:.4g}]"


def model_name(model: Any) -> str:
    """How errors name a model: its ``name``, else its class name."""
    return getattr(model, "name", None) or type(model).__name__
