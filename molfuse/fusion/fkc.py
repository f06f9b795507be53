"""Feynman–Kac correctors (FKC, Skreta et al., ICML 2025; MATH §7): weighted particles that
sample ``π_t ∝ Π_i (q^i_t)^{b_i}`` — products (``b_i = 1``), annealing (``q^β``), guidance
(``q_u^{1−w} q_c^{w}``) — where summing the scores does not.

Each step moves every particle by ``Δx = (−f + c S) Δτ + σ sqrt(Δτ) z`` with ``S = Σ b_i s^i``,
``c = (g² + σ²)/2``, and adds to its log-weight (MATH §7; no divergence: it cancels when every
score enters with coefficient c)

    Δ log w = [(B − 1) a D + ½ g² (‖S‖² − Σ b_i ‖s^i‖²)] Δτ,   B = Σ b_i, a = dlogα/dt.

Particles are resampled when the normalised effective sample size falls below a threshold. With
``σ = g`` every member's Itô log-density (MATH §3) is tracked along the path, so a sample's
provenance stays visible; with other noise it is not (the estimator needs noise ``g sqrt(Δτ) z``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..density import ito_increment, prior_log_prob
from ..errors import SamplerError
from ..sampling import check_sampler_args, check_state, reverse_step, time_grid
from ..schedules import Schedule
from ..spaces import Space
from ._common import check_members, member_fns, member_probe, stack_scores

__all__ = ["FKCResult", "RESAMPLING", "fkc_log_weight_rate", "fkc_sample", "normalised_ess", "resample_indices", "size_groups"]

RESAMPLING = ("systematic", "multinomial", "none")


@dataclass
class FKCResult:
    """Output of :func:`fkc_sample`.

    Attributes:
        x: particles (n, ...) at ``t_end``; equally weighted when ``final_resample``, else
            weighted by ``log_weight``.
        log_weight: (n,) float64 log-weights, normalised so that ``logsumexp = log n`` (all zero
            for equal weights); after a final resampling, each particle's weight before it.
        log_q: (n, K) float64 Itô estimates of each member's ``log q^i_{t_end}(x)`` (nats), or
            None when the noise is not ``g sqrt(Δτ) z``.
        ess: (steps,) float64 normalised ESS after each step's weight update (before resampling);
            with several sizes, the smallest over the size groups.
        resamples: at how many steps some particles were resampled (the final resampling not counted).
        ancestors: (n,) long, the index of the start particle each output descends from.
        exponents: the ``b_i``; ``t_end``; ``mask`` of point-cloud particles (resampled with them).
    """

    x: Tensor
    log_weight: Tensor
    log_q: Tensor | None
    ess: Tensor
    resamples: int
    ancestors: Tensor
    exponents: tuple[float, ...]
    t_end: float
    mask: Tensor | None = None


def fkc_log_weight_rate(scores: Tensor, exponents: Tensor, dlog_alpha: float, g2: float,
                        dof: Tensor | float) -> Tensor:
    """``d log w / dτ = (B − 1) a D + ½ g² (‖S‖² − Σ b_i ‖s^i‖²)`` per particle (MATH §7), float64.

    Args:
        scores: (n, K, ...) member scores at the particles.
        exponents: (K,) the ``b_i``.
        dlog_alpha: ``a = d log α / dt`` at t; ``g2`` = ``g²(t)``.
        dof: degrees of freedom D per particle ((n,) or a number).
    """
    n, k = scores.shape[:2]
    s = scores.reshape(n, k, -1).to(torch.float64)
    b = exponents.to(s)
    big_s = torch.einsum("k,nkd->nd", b, s)
    own = torch.einsum("k,nk->n", b, (s * s).sum(-1))
    d = dof.to(s) if isinstance(dof, Tensor) else float(dof)
    return (float(b.sum()) - 1.0) * dlog_alpha * d + 0.5 * g2 * ((big_s * big_s).sum(-1) - own)


def normalised_ess(log_w: Tensor) -> Tensor:
    """``(Σ w)² / (n Σ w²)`` in (0, 1] from log-weights (n,)."""
    lw = log_w - log_w.max()
    return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / lw.numel()


def resample_indices(log_w: Tensor, generator: torch.Generator | None, kind: str = "systematic") -> Tensor:
    """n ancestor indices drawn in proportion to ``exp(log_w)``: systematic (one uniform, stratified
    positions; lower variance) or multinomial."""
    n = log_w.numel()
    p = torch.softmax(log_w.to(torch.float64), 0)
    if kind == "multinomial":
        return torch.multinomial(p.cpu(), n, replacement=True, generator=generator).to(log_w.device)
    if kind != "systematic":
        raise SamplerError(f"resampling must be one of {RESAMPLING[:2]} here; got {kind!r}")
    u = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device if generator else None)
    pos = ((torch.arange(n, dtype=torch.float64) + u.cpu()) / n).to(p.device)
    cdf = torch.cumsum(p, 0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, pos, right=True).clamp_max(n - 1)


def size_groups(dof: Tensor) -> list[Tensor]:
    """Indices of the particles that share one dimension D (one node count), in order of D.

    The target is a product on each size's own space: ``(B − 1) a D`` differs between sizes and
    the sizes' normalising constants are not tracked, so weights compare, and resampling mixes,
    only particles of one size. The node-count distribution stays the one the start drew
    (MATH §6: the normalised product of the members' histograms)."""
    values = torch.unique(dof)
    return [torch.nonzero(dof == v).flatten() for v in values]


def _take(v: Any, idx: Tensor, n: int) -> Any:
    """Rows ``idx`` of a per-particle tensor; anything else (a shared condition) unchanged."""
    return v[idx] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v


def fkc_sample(models: Sequence[Any], schedule: Schedule | None, shape: Sequence[int],
               exponents: Sequence[float] | None = None, steps: int = 500,
               generator: torch.Generator | None = None, cond: Any = None, t_end: float = 1e-3,
               noise_ratio: float = 1.0, ess_threshold: float = 0.5, resampling: str = "systematic",
               final_resample: bool = True, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, mask: Tensor | None = None, space: Space | None = None,
               grid_power: float = 1.0, progress: bool = False) -> FKCResult:
    """Sample ``Π_i (q^i)^{b_i}`` with Feynman–Kac weighted particles (MATH §7).

    Args:
        models: K >= 1 score models in one convention (any prediction type; a member may be a
            barycenter, a soup or a bound condition). Guidance ``q_u^{1−w} q_c^{w}`` is
            ``[unconditional, conditional]`` with exponents ``[1 − w, w]``.
        shape: (n, ...) particles; n is the number of particles (resampling mixes only these).
        exponents: the ``b_i`` (default all 1: the product of experts). ``B = Σ b_i`` must be > 0.
        noise_ratio: ``σ² / g²`` of the proposal (1: the reverse SDE, and the members' Itô log q
            are tracked; > 1: extra noise ``σ² = g²(1 + 2λ)``, λ = (ratio − 1)/2, which MATH §7
            finds roughly halves the error at equal cost; 0: the ODE-like proposal, which
            collapses when B ≠ 1 and is warned about). The weights do not depend on it.
        ess_threshold: resample when the normalised ESS falls below it (0: never; 1: every step).
        resampling: ``systematic`` (default), ``multinomial`` or ``none``.
        final_resample: end with one resampling so the particles are equally weighted.
        generator: source of every draw (start, noise, resampling).
        mask, space: node mask and state space of point clouds (MATH §6); masks and per-particle
            conditions travel with resampled particles. Clouds of different sizes are weighted
            and resampled apart (:func:`size_groups`): each size's particles sample the product
            on that size's space, and the node counts stay as drawn.

    The start is ``N(0, v I / B)`` (v the prior variance): the normalised product of the B
    members' priors, so the start weights are equal.

    Raises:
        SamplerError: bad exponents, thresholds, noise or resampling kind.
    """
    check_sampler_args(steps, t_end, "sde")
    models = check_members(models, "fkc_sample", minimum=1)
    fns, schedule, space = member_fns(models, schedule, space)
    space.check(shape, mask)
    k = len(models)
    b = torch.ones(k, dtype=torch.float64) if exponents is None else torch.as_tensor(exponents, dtype=torch.float64)
    if b.shape != (k,) or not torch.isfinite(b).all():
        raise SamplerError(f"fkc_sample: exponents must be {k} finite numbers, one per member; got {exponents!r}")
    big_b = float(b.sum())
    if not big_b > 0:
        raise SamplerError(f"fkc_sample: the exponents must sum to B > 0 (the target ∝ Π q^b must be normalisable); "
                           f"got B = {big_b}")
    if not (noise_ratio >= 0 and math.isfinite(noise_ratio)):
        raise SamplerError(f"fkc_sample: noise_ratio = σ²/g² must be a finite number >= 0; got {noise_ratio}")
    if not 0.0 <= ess_threshold <= 1.0:
        raise SamplerError(f"fkc_sample: ess_threshold must lie in [0, 1]; got {ess_threshold}")
    if resampling not in RESAMPLING:
        raise SamplerError(f"fkc_sample: resampling must be one of {RESAMPLING}; got {resampling!r}")
    if noise_ratio == 0 and abs(big_b - 1.0) > 1e-12:
        warnings.warn("fkc_sample: noise_ratio = 0 (no proposal noise) with B ≠ 1: resampled duplicates never "
                      "separate and the particle set collapses (MATH §7)", stacklevel=2)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    mask = None if mask is None else mask.to(device)
    n = shape[0]
    x = space.noise(shape, mask, generator, device, dtype) * (schedule.prior_std() / math.sqrt(big_b))
    dof = space.dof(shape, mask).to(device)
    track = noise_ratio == 1.0
    log_q = None
    if track:  # each member's density at t = 1 is its prior's, whatever the start distribution
        log_q = prior_log_prob(x, schedule, dof)[:, None].repeat(1, k)
    log_w = torch.zeros(n, dtype=torch.float64, device=device)
    ancestors = torch.arange(n, device=device)
    groups = size_groups(dof)
    ess_trace, resamples = [], 0
    bshape = (1, k, *([1] * (x.dim() - 1)))
    b_dev = b.to(device)
    ts = time_grid(steps, t_end, grid_power)
    for t, tn in tqdm(list(zip(ts[:-1], ts[1:])), disable=not progress, desc="fkc"):
        dtau, dla, g2 = t - tn, float(schedule.dlog_alpha(t)), float(schedule.g2(t))
        s = stack_scores(fns, x, t, cond, mask)  # (n, K, ...)
        big_s = (b_dev.to(s.dtype).reshape(bshape) * s).sum(1)
        sigma2 = noise_ratio * g2
        noise = (sigma2 * dtau) ** 0.5 * space.noise(x.shape, mask, generator, device, dtype) if sigma2 > 0 else None
        dx = reverse_step(x, big_s, dla, 0.5 * (g2 + sigma2), dtau, noise)
        log_w = log_w + fkc_log_weight_rate(s, b_dev, dla, g2, dof) * dtau
        if track:
            log_q = log_q + ito_increment(x, dx, s, dtau, dla, g2, dof)
        x = check_state(x + dx, t, models, s, member_probe(schedule, space, x, t, cond, mask)).detach()
        x = x if space.trivial else space.project(x, mask)
        idx, ess, resampled = torch.arange(n, device=device), [], False
        for rows in groups:
            log_w[rows] = log_w[rows] - log_w[rows].max()
            ess.append(float(normalised_ess(log_w[rows])))
            if resampling != "none" and ess[-1] < ess_threshold:
                idx[rows] = rows[resample_indices(log_w[rows], generator, resampling)]
                log_w[rows] = 0.0
                resampled = True
        ess_trace.append(min(ess))
        if resampled:
            x, ancestors, mask = x[idx], ancestors[idx], _take(mask, idx, n)
            cond = _take(cond, idx, n)
            log_q = None if log_q is None else log_q[idx]
            resamples += 1
    for rows in groups:
        log_w[rows] = log_w[rows] - torch.logsumexp(log_w[rows], 0) + math.log(len(rows))
    if final_resample and resampling != "none":
        idx = torch.arange(n, device=device)
        for rows in groups:
            idx[rows] = rows[resample_indices(log_w[rows], generator, resampling)]
        x, ancestors, mask, log_w = x[idx], ancestors[idx], _take(mask, idx, n), log_w[idx]
        log_q = None if log_q is None else log_q[idx]
    return FKCResult(x=x, log_weight=log_w, log_q=log_q, ess=torch.tensor(ess_trace, dtype=torch.float64),
                     resamples=resamples, ancestors=ancestors, exponents=tuple(float(v) for v in b), t_end=t_end,
                     mask=mask)
