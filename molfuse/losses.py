"""Pure loss functions on score models (MATH §1, §2).

Core module: imports only the molfuse core (schedules, conversions), so fusion operators,
training code and tests can all compare losses computed the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .convert import score_fn
from .schedules import Schedule

__all__ = ["dsm_loss"]


def dsm_loss(
    model: Any,
    x0: Tensor,
    schedule: Schedule,
    t: Tensor | float,
    eps: Tensor,
    cond: Any = None,
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
    view = (batch,) + (1,) * (x0.dim() - 1)
    alpha = schedule.alpha(tb).to(x0.dtype).reshape(view)
    sigma = schedule.sigma(tb).to(x0.dtype).reshape(view)
    xt = alpha * x0 + sigma * eps  # MATH §1 noising path
    s = score_fn(model, schedule)(xt, tb, cond)
    return (sigma * s + eps).pow(2).flatten(1).sum(1)  # MATH §2 sigma^2-weighted DSM
