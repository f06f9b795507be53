"""Steering by potentials (MATH §8): the twist ``φ_t(x_t) = −λ_t U(x̂0(x_t, t))`` that
:func:`~molfuse.fusion.fkc.fkc_sample` adds to its Feynman–Kac weights, so its particles sample

    π_0(x) ∝ Π_i q^i_0(x)^{b_i} · exp(−λ U(x)).

``U`` is a user's energy on denoised states, ``U(x0_hat, mask) -> (batch,)`` (clashes, valence, a
classifier's negative log-probability); it needs no gradient. The sampler adds ``φ_1(x_1)`` to the
start weights, ``φ_{t−Δτ}(x_{t−Δτ}) − φ_t(x_t)`` at each step and ends with ``φ_{t_end}(x) = −λ U(x)``
on the particle itself, so the increments telescope to ``−λ U(x)`` whatever the ramp ``λ_t`` and the
estimate ``x̂0``: those only change the variance (how many lineages survive).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..errors import NonFiniteError, SamplerError
from ..sampling import denoised
from ..schedules import Schedule
from ..spaces import Space

__all__ = ["RAMPS", "Potential", "Tilt", "ramp_fraction", "denoised"]

Potential = Callable[[Tensor, "Tensor | None"], Tensor]

RAMPS = ("alpha2", "linear", "constant")
"""How ``λ_t / λ`` grows from t = 1 to t_end (1 at t_end for each):

- ``alpha2``: ``α_t² / α_{t_end}²``, the signal fraction of ``x_t`` (≈ 4.5e-5 at t = 1 for the
  default VP schedule): the potential enters as ``x̂0`` starts to mean something (default);
- ``linear``: ``(1 − t) / (1 − t_end)``, zero at t = 1;
- ``constant``: λ from the start (no ramp; ``x̂0`` at t = 1 is nearly the mean of the data, so
  early weights are noisy and fewer lineages survive).
"""


def ramp_fraction(ramp: str, t: float, t_end: float, schedule: Schedule) -> float:
    """``λ_t / λ`` at time ``t`` for ramp ``ramp`` (:data:`RAMPS`)."""
    if ramp == "alpha2":
        return math.exp(2.0 * (float(schedule.log_alpha(t)) - float(schedule.log_alpha(t_end))))
    if ramp == "linear":
        return (1.0 - t) / (1.0 - t_end)
    if ramp == "constant":
        return 1.0
    raise SamplerError(f"ramp must be one of {RAMPS}; got {ramp!r}")


class Tilt:
    """The potential term of a steered Feynman–Kac sampler (MATH §8).

    Args:
        potential: ``U(x, mask) -> (batch,)`` energies (any float dtype; read as float64).
        scale: λ >= 0 (nats per unit of U).
        ramp: one of :data:`RAMPS`.
        schedule, space, t_end: of the sampler (x̂0 needs α_t and σ_t; it is projected onto the
            state's subspace before U sees it).
    """

    def __init__(self, potential: Potential, scale: float, ramp: str, schedule: Schedule | None, space: Space,
                 t_end: float):
        if not callable(potential):
            raise SamplerError("potential must be a callable U(x0_hat, mask) -> (batch,); "
                               f"got {type(potential).__name__}")
        if not (math.isfinite(scale) and scale >= 0):
            raise SamplerError(f"potential_scale λ must be a finite number >= 0; got {scale}")
        if ramp not in RAMPS:
            raise SamplerError(f"ramp must be one of {RAMPS}; got {ramp!r}")
        if schedule is None:
            raise SamplerError("a potential is evaluated on x̂0 = (x + σ_t² s) / α_t, which needs the schedule; "
                               "pass schedule= or members that declare one")
        self.potential, self.scale, self.ramp = potential, float(scale), ramp
        self.schedule, self.space, self.t_end = schedule, space, t_end

    def energy(self, x: Tensor, mask: Tensor | None, t: float) -> Tensor:
        """``U(x, mask)`` (n,) float64; a SamplerError / NonFiniteError naming ``t`` when it is not."""
        with torch.no_grad():
            u = self.potential(x, mask)
        if not isinstance(u, Tensor) or tuple(u.shape) != (x.shape[0],):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise SamplerError(f"the potential must return one energy per particle, shape ({x.shape[0]},); got {got}")
        u = u.detach().to(torch.float64)
        if not bool(torch.isfinite(u).all()):
            bad = int((~torch.isfinite(u)).sum())
            raise NonFiniteError(f"the potential returned NaN / inf for {bad} of {len(u)} particles at t={t:.4g}")
        return u

    def phi(self, x: Tensor, score: Tensor, t: float, mask: Tensor | None) -> Tensor:
        """``φ_t(x) = −λ_t U(x̂0(x, t))`` (n,) float64, for the fused score ``score`` at (x, t)."""
        lam = self.scale * ramp_fraction(self.ramp, t, self.t_end, self.schedule)
        x0 = denoised(x, score, t, self.schedule)
        x0 = x0 if self.space.trivial else self.space.project(x0, mask)
        return -lam * self.energy(x0, mask, t)

    def final(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``φ_{t_end}(x) = −λ U(x)`` on the particle itself (n,) float64: what makes the end target exact."""
        return -self.scale * self.energy(x, mask, self.t_end)
