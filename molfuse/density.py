"""Log-density estimators: the Itô estimator (MATH §3) and probability-flow ODE likelihoods.

Every estimator takes the degrees of freedom ``D`` per sample (MATH §6): a wrong ``D`` shifts
each absolute log q by ``ΔD (Σ dlogα Δτ − ½ log 2π)`` nats, differently for each size.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from .convert import score_fn
from .errors import SamplerError
from .schedules import Schedule
from .spaces import Space, resolve_space

__all__ = ["ito_increment", "score_and_divergence", "prior_log_prob", "end_log_prob", "log_likelihood",
           "DIVERGENCES"]

DIVERGENCES = ("exact", "hutchinson")


def _flat64(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def ito_increment(x: Tensor, dx: Tensor, scores: Tensor, dtau: float, dlog_alpha: float, g2: float,
                  dof: Tensor | int | None = None) -> Tensor:
    """One step of the Itô density estimator for one or several models (MATH §3).

    ``Δ log q^i = D Δτ dlogα − Δτ ½ g² ‖s^i‖² + ⟨Δx + Δτ dlogα x, s^i⟩`` with the scores
    taken at the pre-step point ``x`` and ``Δx`` the step actually taken (its noise must be
    exactly ``g sqrt(Δτ) z``).

    Args:
        x: pre-step point (batch, ...).
        dx: step taken (batch, ...).
        scores: (batch, ...) for one model, or (batch, K, ...) stacked for K >= 1 models.
        dtau: reverse-time step ``Δτ > 0``; ``dlog_alpha``, ``g2`` at the pre-step time t.
        dof: degrees of freedom D, an int or (batch,) per sample (default: coordinates per
            sample; ``3(n-1)`` for n centred 3-D nodes, MATH §6). Padding entries of ``x``,
            ``dx`` and the scores are zero (projected), so the sums run over real entries.

    Returns:
        (batch,) float64 increments in nats for scores shaped like ``x``; (batch, K) for stacked
        scores, whatever K (one member included).

    Raises:
        SamplerError: the scores are shaped neither like ``x`` nor (batch, K, ...) around it.
    """
    b = x.shape[0]
    xf, dxf = _flat64(x), _flat64(dx)
    d = xf.shape[1] if dof is None else dof
    single = scores.shape == x.shape
    if not single and (scores.dim() != x.dim() + 1 or scores.shape[0] != b or scores.shape[2:] != x.shape[1:]):
        raise SamplerError(f"ito_increment: scores of shape {tuple(scores.shape)} for states {tuple(x.shape)}; "
                           "expected the states' shape (one model) or (batch, K, ...) (K models)")
    s = scores.reshape(b, -1, xf.shape[1]).to(torch.float64)  # (B, K, D)
    move = (dxf + dtau * dlog_alpha * xf)[:, None, :]
    if isinstance(d, Tensor):
        d = d.to(device=xf.device, dtype=torch.float64)[:, None]
    inc = d * dtau * dlog_alpha - 0.5 * dtau * g2 * (s * s).sum(-1) + (move * s).sum(-1)
    return inc[:, 0] if single else inc


def score_and_divergence(fn: Callable[..., Tensor], x: Tensor, t: float, cond: Any = None,
                         method: str = "exact", probe: Tensor | None = None,
                         generator: torch.Generator | None = None,
                         mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Score and its divergence ``∇·s`` at ``x`` (batch, ...) -> ((batch, ...), (batch,) float64).

    ``"exact"`` takes one backward pass per coordinate (small D); ``"hutchinson"`` one
    vector-Jacobian product with a Rademacher probe (given, or drawn from ``generator``).
    ``fn`` is a :func:`~molfuse.convert.score_fn`: on a constrained space it projects its input
    and output, so both give the divergence on the subspace, ``tr(P ∇s P)`` (MATH §6).
    """
    if method not in DIVERGENCES:
        raise SamplerError(f"divergence must be one of {DIVERGENCES}; got {method!r}")
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        s = fn(xg, t, cond, mask)
        if method == "hutchinson":
            if probe is None:
                probe = _rademacher(x.shape, generator).to(x)
            (vjp,) = torch.autograd.grad(s, xg, probe)
            div = (_flat64(vjp) * _flat64(probe)).sum(-1)
        else:
            sf, n = s.reshape(x.shape[0], -1), x[0].numel()
            div = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            for i in range(n):
                (gi,) = torch.autograd.grad(sf[:, i].sum(), xg, retain_graph=i < n - 1)
                div += gi.reshape(x.shape[0], -1)[:, i].to(torch.float64)
    return s.detach(), div.detach()


def _rademacher(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    dev = generator.device if generator is not None else "cpu"
    return torch.randint(0, 2, shape, generator=generator, device=dev).to(torch.float32) * 2 - 1


def prior_log_prob(x: Tensor, schedule: Schedule, dof: Tensor | int | None = None) -> Tensor:
    """``log N(x; 0, prior_std^2 I)`` in nats, (batch,) float64: the reference density at t = 1,
    on a subspace of ``dof`` dimensions per sample (default: every coordinate; MATH §6)."""
    xf = _flat64(x)
    d = xf.shape[1] if dof is None else dof
    if isinstance(d, Tensor):
        d = d.to(device=xf.device, dtype=torch.float64)
    v = schedule.prior_std() ** 2
    return -0.5 * (xf * xf).sum(-1) / v - 0.5 * d * math.log(2 * math.pi * v)


def log_likelihood(model: Any, x0: Tensor, schedule: Schedule, steps: int = 200, divergence: str = "exact",
                   cond: Any = None, generator: torch.Generator | None = None, t_start: float = 1e-5,
                   rho: float = 1.0, mask: Tensor | None = None, space: Space | None = None) -> Tensor:
    """``log p_0(x0)`` per sample in nats via the probability-flow ODE (MATH §3), RK4 in t.

    Integrates ``dx/dt = f - ½ g² s`` from ``t_start`` to 1 and
    ``log p_0(x0) = log p_1(x_1) + ∫ (D dlogα − ½ g² ∇·s) dt``. With ``"hutchinson"`` one
    Rademacher probe per sample is held fixed along the path (an unbiased estimate).

    The end term ``log p_1(x_1)`` is the model's own when it knows it: a model with a
    ``log_prob(x, t)`` method (``log_prob(x, t, mask)`` for point clouds; exact ``log q_t`` in
    nats, (batch,), as :class:`~molfuse.models.GaussianMixture` has) supplies it at t = 1
    (:func:`end_log_prob`). Any other model ends on the reference ``N(0, v I)``
    (:func:`prior_log_prob`), which is off by ``log N(x_1; 0, v I) − log q_1(x_1)`` whatever
    the step count (about 1e-2 nats per cloud of 3-8 nodes with VP 0.1 → 20).

    Args:
        x0: data (batch, ...), in the model's data space (no dequantisation here).
        steps: RK4 steps on a uniform grid of [t_start, 1].
        t_start: where the path starts (the score is usually not trained at t = 0).
        rho: the grid ``t_i = (t_start^(1/ρ) + i/steps (1 - t_start^(1/ρ)))^ρ``; 1 is
            uniform, larger values crowd the steps near ``t_start`` where the score of
            image data changes fastest (ρ = 3 with 40 steps: see the images README).
        mask, space: node mask and state space of point-cloud data (MATH §6); the density is
            on the subspace, with ``D`` its dimension per sample.
    """
    if steps < 1:
        raise SamplerError(f"steps must be >= 1; got {steps}")
    if not rho >= 1.0:
        raise SamplerError(f"rho must be >= 1 (1 = uniform grid); got {rho}")
    space = resolve_space([model], space)
    space.check(x0.shape, mask)
    fn = score_fn(model, schedule, space)
    probe = _rademacher(x0.shape, generator).to(x0) if divergence == "hutchinson" else None
    d = space.dof(x0.shape, mask).to(x0.device)

    def rhs(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        s, div = score_and_divergence(fn, x, t, cond, divergence, probe, mask=mask)
        dla, g2 = float(schedule.dlog_alpha(t)), float(schedule.g2(t))
        return dla * x - 0.5 * g2 * s, d * dla - 0.5 * g2 * div

    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    lo = t_start ** (1.0 / rho)
    ts = (lo + u * (1.0 - lo)).pow(rho).tolist()
    ts[0], ts[-1] = t_start, 1.0
    x = space.project(x0.detach().clone(), mask)
    acc = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    for t, tn in zip(ts[:-1], ts[1:]):
        h = tn - t
        k1, l1 = rhs(x, t)
        k2, l2 = rhs(x + 0.5 * h * k1, t + 0.5 * h)
        k3, l3 = rhs(x + 0.5 * h * k2, t + 0.5 * h)
        k4, l4 = rhs(x + h * k3, tn)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        acc = acc + h / 6 * (l1 + 2 * l2 + 2 * l3 + l4)
    return end_log_prob(model, x, schedule, d, mask) + acc


def end_log_prob(model: Any, x: Tensor, schedule: Schedule, dof: Tensor | int | None = None,
                 mask: Tensor | None = None) -> Tensor:
    """``log q_1(x)`` in nats, (batch,) float64: the model's own ``log_prob(x, 1.0[, mask])`` when it
    has one (exact for analytic models), else the reference ``N(0, v I)`` on ``dof`` dimensions.

    Raises:
        SamplerError: the model's ``log_prob`` returns another shape or a non-finite value.
    """
    own = getattr(model, "log_prob", None)
    if not callable(own):
        return prior_log_prob(x, schedule, dof)
    lp = own(x, 1.0) if mask is None else own(x, 1.0, mask)
    lp = torch.as_tensor(lp).to(device=x.device, dtype=torch.float64)
    if lp.shape != (x.shape[0],) or not bool(torch.isfinite(lp).all()):
        name = getattr(model, "name", None) or type(model).__name__
        raise SamplerError(f"{name}.log_prob(x, 1.0) must give (batch,) = ({x.shape[0]},) finite nats; got shape "
                           f"{tuple(lp.shape)}" + ("" if lp.shape != (x.shape[0],) else " with NaN / inf"))
    return lp
