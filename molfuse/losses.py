"""Pure loss functions on score models (MATH §1, §2).

Core module: imports only the molfuse core (schedules, conversions), so fusion operators,
training code and tests can all compare losses computed the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .convert import PREDICTIONS, prediction_of, score_fn
from .errors import ConventionError
from .schedules import Schedule
from .spaces import Space, resolve_space

__all__ = ["dsm_loss", "denoising_loss", "drop_condition", "training_draws"]


def dsm_loss(
    model: Any,
    x0: Tensor,
    schedule: Schedule,
    t: Tensor | float,
    eps: Tensor,
    cond: Any = None,
    mask: Tensor | None = None,
    space: Space | None = None,
) -> Tensor:
    """Per-sample ``sigma_t^2``-weighted denoising score matching loss (MATH §2).

    ``x_t = alpha_t x0 + sigma_t eps`` and ``loss = ||sigma_t s(x_t, t) + eps||^2`` summed over
    every coordinate. For an eps-predicting model this is ``||eps - eps_hat||^2`` because
    ``s = -eps_hat / sigma_t`` (MATH §1). The model's prediction type is converted with
    :func:`molfuse.convert.score_fn`, so any ``prediction`` mixes correctly.

    Args:
        model: a score model (``prediction`` in score / eps / x0 / v).
        x0: clean data (batch, ...).
        schedule: the noising convention; must match ``model.schedule`` if it declares one.
        t: times, a float or (batch,).
        eps: standard normal noise, same shape as ``x0``.
        cond: optional condition passed to the model.
        mask, space: node mask and state space of point-cloud data (MATH §6); ``eps`` must
            then lie on the subspace (``space.noise``), and the sum runs over real entries.

    Returns:
        (batch,) loss in the dtype of ``x0``.

    Raises:
        ConventionError: the model declares another schedule than ``schedule``.
        ValueError: ``eps`` and ``x0`` have different shapes, or ``t`` is not (batch,).
    """
    if eps.shape != x0.shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has {tuple(x0.shape)}")
    batch = x0.shape[0]
    tb = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if tb.dim() > 1 or (tb.dim() == 1 and tb.shape[0] != batch):
        raise ValueError(f"t must be a float or (batch,) = ({batch},); got shape {tuple(tb.shape)}")
    tb = tb.expand(batch)
    space = resolve_space([model], space)
    xt = schedule.diffuse(x0, tb, eps)  # MATH §1 noising path
    s = score_fn(model, schedule, space)(xt, tb, cond, mask)
    sigma = schedule.sigma(tb).to(x0.dtype).reshape((batch,) + (1,) * (x0.dim() - 1))
    r = sigma * s + eps  # MATH §2 sigma^2-weighted DSM
    return r.pow(2).flatten(1).sum(1) if space.trivial else space.sqnorm(r, mask).to(x0.dtype)


def denoising_loss(
    net: Any,
    x0: Tensor,
    schedule: Schedule,
    cond: Any = None,
    t: Tensor | float | None = None,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
    t_min: float = 1e-3,
    prediction: str | None = None,
    mask: Tensor | None = None,
    space: Space | None = None,
    t_power: float = 1.0,
) -> Tensor:
    """Per-sample training loss: :func:`dsm_loss` averaged over degrees of freedom (MATH §1, §2, §6).

    Draws ``t ~ U[t_min, 1]`` and ``eps ~ N(0, I)`` from ``generator`` unless given, and
    returns ``mean_coords ||sigma_t s(x_t, t) + eps||^2`` with ``x_t = alpha_t x0 + sigma_t eps``.
    For an eps-network this is ``mean ||eps_hat - eps||^2``. Every prediction type (score / eps /
    x0 / v) is converted to a score by :mod:`molfuse.convert` and trained on this same
    ``sigma_t^2``-weighted objective, so all of them share one minimiser and one scale
    (an x0-network's own error is thereby weighted by ``alpha_t^2 / sigma_t^2``, a v-network's
    by ``alpha_t^2``).

    The mean over coordinates keeps the loss O(1) whatever the data size (a network that
    predicts 0 scores 1). For DSM values in nats-comparable units (summed over coordinates,
    as the barycenter fit and the fusion reports use), call :func:`dsm_loss`.

    Args:
        net: a network ``net(x, t[, cond=])`` with a ``prediction`` attribute.
        x0: clean data in model space (batch, ...).
        schedule: the noising convention.
        cond: optional condition passed to ``net``.
        t: times (batch,) or a float; drawn when None.
        eps: noise shaped like ``x0``; drawn when None.
        generator: source of the draws (on the device of ``x0``).
        t_min: lower end of the time window (avoids ``sigma_t -> 0``).
        t_power: ``p`` of the drawn times ``t = t_min + (1 - t_min) u^p``, ``u ~ U[0, 1]``: 1 is
            uniform, ``p > 1`` puts more draws at small t (density ∝ ``t^(1/p - 1)``). It re-weights
            the loss over t, not its minimiser (the score at every t).
        prediction: the prediction type the caller expects; must equal the net's.
        mask, space: node mask and state space (MATH §6): the noise is drawn on the subspace
            and the loss divided by each sample's degrees of freedom, not its coordinates.

    Returns:
        (batch,) loss in the dtype of ``x0``.

    Raises:
        ConventionError: ``prediction`` differs from the net's declared one, or is unknown.
    """
    declared = prediction_of(net)
    if prediction is not None and prediction != declared:
        raise ConventionError(f"expected a {prediction!r}-network but the net declares prediction={declared!r} "
                              f"(one of {PREDICTIONS}); fix the net or the caller, never mix silently")
    space = resolve_space([net], space)
    if t is None or eps is None:
        t_drawn, eps_drawn = training_draws(x0, space, generator, t_min, t_power, mask, draw_t=t is None,
                                            draw_eps=eps is None)
        t = t_drawn if t is None else t
        eps = eps_drawn if eps is None else eps
    loss = dsm_loss(net, x0, schedule, t, eps, cond=cond, mask=mask, space=space)
    return loss / (x0[0].numel() if space.trivial else space.dof(x0.shape, mask).to(loss))


def training_draws(x0: Tensor, space: Space, generator: torch.Generator | None = None, t_min: float = 1e-3,
                   t_power: float = 1.0, mask: Tensor | None = None, draw_t: bool = True,
                   draw_eps: bool = True) -> tuple[Tensor | None, Tensor | None]:
    """The random draws of :func:`denoising_loss` for a batch ``x0``, in its order: times
    ``t = t_min + (1 - t_min) u^p`` (when ``draw_t``), then the noise on the state space (when
    ``draw_eps``); None for what is not drawn.

    A process of a data-parallel run draws them for the whole global batch and keeps its slice,
    so its losses are those of the single-process run."""
    t = None
    if draw_t:
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1); got {t_min}")
        if not t_power > 0.0:
            raise ValueError(f"t_power must be > 0; got {t_power}")
        u = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        t = t_min + (1.0 - t_min) * (u if t_power == 1.0 else u**t_power)
    return t, space.noise(x0.shape, mask, generator, x0.device, x0.dtype) if draw_eps else None


def drop_condition(cond: Tensor, p: float, null_value: Any, generator: torch.Generator | None = None) -> Tensor:
    """Classifier-free dropout: each sample's condition becomes ``null_value`` with probability ``p``.

    Args:
        cond: conditions (batch, ...): class labels (batch,) or property vectors (batch, k).
        p: drop probability in [0, 1].
        null_value: the "no condition" value (e.g. the null class index), broadcastable
            against one sample's condition.
        generator: source of the Bernoulli draws (on the device of ``cond``).

    Returns:
        A new tensor like ``cond`` (``cond`` itself is not modified).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must lie in [0, 1]; got {p}")
    drop = torch.rand(cond.shape[0], generator=generator, device=cond.device) < p
    null = torch.as_tensor(null_value, dtype=cond.dtype, device=cond.device)
    return torch.where(drop.reshape((-1,) + (1,) * (cond.dim() - 1)), null, cond)
