"""Reverse-SDE and probability-flow ODE samplers as plain functions (MATH §1, §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .convert import score_fn
from .density import ito_increment, prior_log_prob, score_and_divergence
from .errors import SamplerError
from .schedules import Schedule

__all__ = ["SampleResult", "sample", "time_grid", "gaussian", "check_sampler_args"]


@dataclass
class SampleResult:
    """Samples and, when tracked, their log-density estimates.

    Attributes:
        x: samples (n, ...) at time ``t_end``.
        log_density: (n,) float64 estimate of ``log q_{t_end}(x)`` in nats, or None.
        t_end: the time the sampler stopped at.
    """

    x: Tensor
    log_density: Tensor | None
    t_end: float


def time_grid(steps: int, t_end: float) -> list[float]:
    """Uniform grid ``1 = t_0 > ... > t_steps = t_end`` (float64 values)."""
    return torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64).tolist()


def gaussian(shape: Sequence[int], generator: torch.Generator | None, device, dtype) -> Tensor:
    """Standard normal draw made on the generator's device, then moved (seeds portable)."""
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)


def check_sampler_args(steps: int, t_end: float, method: str, methods: Sequence[str] = ("sde", "ode")) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise SamplerError(f"steps must be a positive integer; got {steps!r}")
    if not 0.0 < t_end < 1.0:
        raise SamplerError(f"t_end must lie in (0, 1); got {t_end}")
    if method not in methods:
        raise SamplerError(f"method must be one of {tuple(methods)}; got {method!r}")


def sample(model: Any, schedule: Schedule, shape: Sequence[int], steps: int = 500, method: str = "sde",
           cond: Any = None, generator: torch.Generator | None = None, track_log_density: bool = False,
           t_end: float = 1e-3, divergence: str = "hutchinson", device: str | torch.device | None = None,
           dtype: torch.dtype | None = None, progress: bool = False) -> SampleResult:
    """Draw ``shape[0]`` samples by Euler(-Maruyama) steps in reverse time ``τ = 1 - t``.

    SDE: ``Δx = (−f + g² s) Δτ + g sqrt(Δτ) z``; ODE: ``Δx = (−f + ½ g² s) Δτ`` (MATH §1).
    With ``track_log_density`` the SDE uses the Itô estimator (no divergence, MATH §3) and the
    ODE integrates ``d log q = −∇·v dτ`` with an ``"exact"`` or ``"hutchinson"`` divergence.

    Args:
        model: score model (any prediction type; converted with ``schedule``).
        shape: (n, ...) output shape.
        steps: number of steps on a uniform time grid from 1 to ``t_end``.
        generator: source of all randomness (initial noise, SDE noise, probes).
        device, dtype: where and in what precision ``x`` lives (log densities are float64).
    """
    check_sampler_args(steps, t_end, method)
    fn = score_fn(model, schedule)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    x = gaussian(shape, generator, device, dtype) * schedule.prior_std()
    logq = prior_log_prob(x, schedule) if track_log_density else None
    d = x[0].numel()
    ts = time_grid(steps, t_end)
    for t, tn in tqdm(list(zip(ts[:-1], ts[1:])), disable=not progress, desc=f"sample[{method}]"):
        dtau, dla, g2 = t - tn, float(schedule.dlog_alpha(t)), float(schedule.g2(t))
        if method == "sde":
            s = fn(x, t, cond)
            dx = (-dla * x + g2 * s) * dtau + (g2 * dtau) ** 0.5 * gaussian(x.shape, generator, device, dtype)
            if logq is not None:
                logq = logq + ito_increment(x, dx, s, dtau, dla, g2)  # MATH §3
        else:
            if logq is not None:
                s, div = score_and_divergence(fn, x, t, cond, divergence, generator=generator)
                logq = logq + dtau * (d * dla - 0.5 * g2 * div)  # d log q / dτ = −∇·v
            else:
                s = fn(x, t, cond)
            dx = (-dla * x + 0.5 * g2 * s) * dtau
        x = (x + dx).detach()
    return SampleResult(x=x, log_density=logq, t_end=t_end)
