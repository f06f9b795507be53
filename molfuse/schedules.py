"""The one noising convention of molfuse (MATH §1).

``x_t = alpha(t) x_0 + sigma(t) eps`` with ``t in [0, 1]``; ``t = 0`` is data. Every model,
sampler and estimator reads its coefficients from a :class:`Schedule`; :meth:`Schedule.diffuse`
is the one place data are noised, and :data:`SCHEDULES` the one registry of schedule kinds
(workflows and checkpoint cards both read it through :func:`schedule_from_config`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .base.checks import as_float, fail, fields
from .base.configured import Configured
from .errors import ConventionError

__all__ = ["Schedule", "VPSchedule", "SCHEDULES", "schedule_from_config", "check_schedule_spec"]


def _as_tensor(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


class Schedule(Configured, ABC):
    """A noising path ``x_t = alpha_t x_0 + sigma_t eps`` and its forward SDE (MATH §1).

    Subclasses give ``log_alpha`` and its time derivative ``dlog_alpha``; ``sigma`` and
    ``g2`` follow (variance preserving unless ``sigma2`` and ``dsigma2`` are overridden). All methods take ``t`` as a float or a tensor of any shape and return a
    tensor of the same shape (float64 for a float input).
    """

    @abstractmethod
    def log_alpha(self, t: Tensor | float) -> Tensor:
        """``log alpha_t``."""

    @abstractmethod
    def dlog_alpha(self, t: Tensor | float) -> Tensor:
        """``d/dt log alpha_t``; the drift is ``f_t(x) = dlog_alpha(t) x``."""

    @abstractmethod
    def config(self) -> dict:
        """A JSON-able description; two schedules are the same convention iff equal."""

    def alpha(self, t: Tensor | float) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        """``sigma_t``; for the variance-preserving path ``sqrt(1 - alpha_t^2)``."""
        return torch.sqrt(self.sigma2(t))

    def sigma2(self, t: Tensor | float) -> Tensor:
        # -expm1(2 log alpha) = 1 - alpha^2 without cancellation near t = 0.
        return -torch.expm1(2.0 * self.log_alpha(t))

    def dsigma2(self, t: Tensor | float) -> Tensor:
        """``d/dt sigma_t^2``; for ``sigma^2 = 1 - alpha^2`` it is ``-2 alpha^2 dlog_alpha``."""
        t = _as_tensor(t)
        return -2.0 * torch.exp(2.0 * self.log_alpha(t)) * self.dlog_alpha(t)

    def g2(self, t: Tensor | float) -> Tensor:
        """Squared diffusion ``g_t^2 = 2 sigma_t^2 d/dt log(sigma_t / alpha_t)`` (MATH §1)."""
        t = _as_tensor(t)
        return self.dsigma2(t) - 2.0 * self.sigma2(t) * self.dlog_alpha(t)

    def diffuse(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The noising path ``x_t = alpha_t x0 + sigma_t eps`` (MATH §1), per sample.

        Args:
            x0: clean data (batch, ...).
            t: (batch,) times; alpha and sigma are computed in the dtype of ``t`` and cast to
                that of ``x0``.
            eps: noise shaped like ``x0`` (on the state's subspace for constrained states).
        """
        view = (x0.shape[0],) + (1,) * (x0.dim() - 1)
        alpha = self.alpha(t).to(x0.dtype).reshape(view)
        sigma = self.sigma(t).to(x0.dtype).reshape(view)
        return alpha * x0 + sigma * eps

    def prior_std(self) -> float:
        """Std of the reference noise at ``t = 1`` (``alpha_1^2 + sigma_1^2 = 1`` for VP)."""
        return 1.0



class VPSchedule(Schedule):
    """Variance-preserving path with linear ``beta(t) = beta_min + t (beta_max - beta_min)``.

    ``log alpha_t = -1/2 (beta_min t + 1/2 (beta_max - beta_min) t^2)``, ``g_t^2 = beta(t)``.

    Args:
        beta_min: ``beta(0)`` (default 0.1).
        beta_max: ``beta(1)`` (default 20.0).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not (math.isfinite(beta_min) and math.isfinite(beta_max)) or beta_min <= 0:
            raise ValueError(f"VPSchedule needs 0 < beta_min, finite values; got {beta_min}, {beta_max}")
        if beta_max < beta_min:
            raise ValueError(f"VPSchedule needs beta_max >= beta_min; got {beta_min} > {beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: Tensor | float) -> Tensor:
        return self.beta_min + _as_tensor(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t)
        return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

    def dlog_alpha(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor | float) -> Tensor:
        return self.beta(t)  # equals the generic formula exactly for VP

    def config(self) -> dict:
        return {"kind": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max}


# kind -> (class, default parameters); the one registry of schedule kinds.
SCHEDULES: dict[str, tuple[Callable[..., Schedule], dict[str, float]]] = {
    "vp": (VPSchedule, {"beta_min": 0.1, "beta_max": 20.0}),
}


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """The :class:`Schedule` a config ``{kind: vp, beta_min: .., beta_max: ..}`` describes.

    Raises:
        ConventionError: unknown kind or parameters the kind rejects.
    """
    if not isinstance(config, Mapping):
        raise ConventionError(f"a schedule config is a mapping {{kind: ..}}; got {config!r}")
    kind = config.get("kind", "vp")
    if kind not in SCHEDULES:
        raise ConventionError(f"schedule kind {kind!r} is not supported (known: {', '.join(SCHEDULES)})")
    cls, defaults = SCHEDULES[kind]
    params = {**defaults, **{k: v for k, v in config.items() if k != "kind"}}
    unknown = set(params) - set(defaults)
    if unknown:
        raise ConventionError(f"schedule kind {kind!r} takes {', '.join(defaults)}; got {', '.join(sorted(unknown))}")
    try:
        return cls(**{k: float(v) for k, v in params.items()})
    except (TypeError, ValueError) as e:
        raise ConventionError(f"schedule {dict(config)}: {e}") from None


def check_schedule_spec(d: Any, path: str = "schedule") -> dict:
    """A workflow's ``schedule:`` mapping checked (WorkflowError naming the field) and filled in."""
    d = {} if d is None else d
    kind = d.get("kind", "vp") if isinstance(d, Mapping) else None
    if kind not in SCHEDULES:
        fail(f"{path}.kind", f"unknown schedule kind {kind!r}; known: {', '.join(SCHEDULES)}")
    f = fields(d, path, {"kind": "vp", **SCHEDULES[kind][1]})
    return {"kind": kind, **{k: as_float(v, f"{path}.{k}", 0.0, open_lo=True) for k, v in f.items() if k != "kind"}}

