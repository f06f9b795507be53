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

With a ``potential`` U the same particles sample ``Π_i (q^i)^{b_i} exp(−λ U)`` (MATH §8): the
weights also collect the telescoping increments of ``φ_t = −λ_t U(x̂0)`` (:mod:`.steer`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..density import ito_increment, prior_log_prob
from ..errors import SamplerError
from ..sampling import advance, check_sampler_args, denoise_end, reverse_path, reverse_step, time_grid
from ..schedules import Schedule
from ..spaces import Space
from ._common import check_members, member_fns, member_probe, stack_scores
from .steer import Potential, Tilt

__all__ = ["FKCResult", "RESAMPLING", "fkc_log_weight_rate", "fkc_sample", "normalised_ess", "resample_indices", "size_groups",
           "check_fkc_options"]

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
        energy: (n,) float64 ``U(x)`` of the output particles when sampled with a potential, else None.
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
    energy: Tensor | None = None


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


def check_fkc_options(k: int, exponents: Sequence[float] | None, noise_ratio: float, ess_threshold: float,
                      resampling: str) -> Tensor:
    """The one check of the Feynman–Kac sampler's options, for the Python API and workflows alike:
    the exponents ``b`` (K,) float64, after refusing what cannot be sampled.

    Raises:
        SamplerError: naming the option (``.field``).
    """
    b = torch.ones(k, dtype=torch.float64) if exponents is None else torch.as_tensor(exponents, dtype=torch.float64)
    if b.shape != (k,) or not torch.isfinite(b).all():
        raise SamplerError(f"fkc_sample: exponents must be {k} finite numbers, one per member; got {exponents!r}",
                           "exponents")
    big_b = float(b.sum())
    if not big_b > 0:
        raise SamplerError(f"fkc_sample: the exponents must sum to B > 0 (the target ∝ Π q^b must be normalisable); "
                           f"got B = {big_b}", "exponents")
    if not (noise_ratio >= 0 and math.isfinite(noise_ratio)):
        raise SamplerError(f"fkc_sample: noise_ratio = σ²/g² must be a finite number >= 0; got {noise_ratio}",
                           "noise_ratio")
    if not 0.0 <= ess_threshold <= 1.0:
        raise SamplerError(f"fkc_sample: ess_threshold must lie in [0, 1]; got {ess_threshold}", "ess_threshold")
    if resampling not in RESAMPLING:
        raise SamplerError(f"fkc_sample: resampling must be one of {RESAMPLING}; got {resampling!r}", "resampling")
    if noise_ratio == 0 and abs(big_b - 1.0) > 1e-12:
        warnings.warn("fkc_sample: noise_ratio = 0 (no proposal noise) with B ≠ 1: resampled duplicates never "
                      "separate and the particle set collapses (MATH §7)", stacklevel=3)
    return b


def _resample_groups(log_w: Tensor, groups: list[Tensor], threshold: float, kind: str,
                     generator: torch.Generator | None) -> tuple[Tensor | None, float]:
    """Within each size group: shift the log-weights (in place), measure the ESS and, below
    ``threshold``, draw ancestors and reset the group's weights to zero. Returns the ancestor
    indices (None when no group resampled) and the smallest ESS."""
    n = log_w.numel()
    idx, ess, resampled = torch.arange(n, device=log_w.device), [], False
    for rows in groups:
        log_w[rows] = log_w[rows] - log_w[rows].max()
        ess.append(float(normalised_ess(log_w[rows])))
        if kind != "none" and ess[-1] < threshold:
            idx[rows] = rows[resample_indices(log_w[rows], generator, kind)]
            log_w[rows] = 0.0
            resampled = True
    return (idx if resampled else None), min(ess)


def _finish(log_w: Tensor, groups: list[Tensor], resample: bool, kind: str, generator: torch.Generator | None,
            *rows_of: Any) -> tuple[Any, ...]:
    """Normalise the log-weights within each size group (``logsumexp = log n_group``, in place)
    and, with ``resample``, draw each group's particles once more: ``rows_of`` taken at the
    drawn indices (unchanged otherwise)."""
    n = log_w.numel()
    for rows in groups:
        log_w[rows] = log_w[rows] - torch.logsumexp(log_w[rows], 0) + math.log(len(rows))
    if not resample:
        return rows_of
    idx = torch.arange(n, device=log_w.device)
    for rows in groups:
        idx[rows] = rows[resample_indices(log_w[rows], generator, kind)]
    return tuple(_take(v, idx, n) for v in rows_of)


def fkc_sample(models: Sequence[Any], schedule: Schedule | None, shape: Sequence[int],
               exponents: Sequence[float] | None = None, steps: int = 500,
               generator: torch.Generator | None = None, cond: Any = None, t_end: float = 1e-3,
               noise_ratio: float = 1.0, ess_threshold: float = 0.5, resampling: str = "systematic",
               final_resample: bool = True, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, mask: Tensor | None = None, space: Space | None = None,
               grid_power: float = 1.0, progress: bool = False, potential: Potential | None = None,
               potential_scale: float = 1.0, ramp: str = "alpha2", denoise: bool = False) -> FKCResult:
    """Sample ``Π_i (q^i)^{b_i}`` (MATH §7), or with ``potential`` ``Π_i (q^i)^{b_i} exp(−λ U)`` (MATH §8),
    with Feynman–Kac weighted particles.

    Args:
        models: K >= 1 score models in one convention (any prediction type; a member may be a
            barycenter, a soup or a bound condition). Guidance ``q_u^{1−w} q_c^{w}`` is
            ``[unconditional, conditional]`` with exponents ``[1 − w, w]``.
        shape: (n, ...) particles; n is the number of particles (resampling mixes only these).
        exponents: the ``b_i`` (default all 1: the product of experts). ``B = Σ b_i`` must be > 0.
            One member with ``b = 1`` and a potential is plain steering of that model.
        noise_ratio: ``σ² / g²`` of the proposal (1: the reverse SDE, and the members' Itô log q
            are tracked; > 1: extra noise ``σ² = g²(1 + 2λ)``, λ = (ratio − 1)/2, which MATH §7
            finds roughly halves the error at equal cost; 0: the ODE-like proposal, which
            collapses when B ≠ 1 and is warned about). The weights do not depend on it.
        ess_threshold: resample when the normalised ESS falls below it (0: never; 1: every step).
        resampling: ``systematic`` (default), ``multinomial`` or ``none``.
        final_resample: end with one resampling so the particles are equally weighted.
        generator: source of every draw (start, noise, resampling).
        mask, space: node mask and state space of point clouds or chains (MATH §6); masks and
            per-particle conditions travel with resampled particles. Clouds of different sizes
            are weighted and resampled apart (:func:`size_groups`): each size's particles sample
            the product on that size's space, and the node counts stay as drawn.
        potential: ``U(x, mask) -> (n,)`` energies, evaluated (without gradient) on the denoised
            estimate ``x̂0 = (x_t + σ_t² S / B) / α_t = Σ_i (b_i / B) x̂0^i`` (the b-weighted mean of
            the members' Tweedie estimates; MATH §8's ``S`` when B = 1) at every step, and on the
            particle itself at ``t_end`` (:class:`~molfuse.fusion.steer.Tilt`). ``S`` itself
            overshoots when B ≠ 1 (at t = 1 a product of two gives ``x̂0 ≈ −x / α``): tilting a product
            of two Gaussians by ``½ x²`` (λ = 2, 2000 particles, seeds 0-4) kept 424-484 lineages with
            ``S / B`` against 130-160 with ``S`` (438-502 without a potential).
        potential_scale: λ >= 0 of ``exp(−λ U)``.
        ramp: how ``λ_t`` grows to λ over the path, one of :data:`~molfuse.fusion.steer.RAMPS`
            (default ``alpha2``: ``λ α_t² / α_{t_end}²``). The end target is exact for any ramp.
        denoise: end with the Tweedie step (:func:`~molfuse.sampling.denoise_end`) on the
            product's score ``S = Σ b_i s^i`` at ``t_end`` (near t = 0 the score of the product's
            noised density), after the last resampling; weights, ``log_q`` and ``energy`` stay
            those of the particles before it.

    The start is ``N(0, v I / B)`` (v the prior variance): the normalised product of the B
    members' priors, so the start weights are equal (times ``exp φ_1`` with a potential).

    Raises:
        SamplerError: bad exponents, thresholds, noise, resampling kind, potential or ramp.
        NonFiniteError: a member or the potential gave NaN / inf.
    """
    check_sampler_args(steps, t_end, "sde")
    models = check_members(models, "fkc_sample", minimum=1)
    fns, schedule, space = member_fns(models, schedule, space)
    space.check(shape, mask)
    k = len(models)
    b = check_fkc_options(k, exponents, noise_ratio, ess_threshold, resampling)
    tilt = None if potential is None else Tilt(potential, potential_scale, ramp, schedule, space, t_end)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    mask = None if mask is None else mask.to(device)
    n, big_b = shape[0], float(b.sum())  # a potential's x̂0 reads the mean score S / B (docstring)
    x = space.noise(shape, mask, generator, device, dtype) * (schedule.prior_std() / math.sqrt(big_b))
    dof = space.dof(shape, mask).to(device)
    track = noise_ratio == 1.0
    log_q = None
    if track:  # each member's density at t = 1 is its prior's, whatever the start distribution
        log_q = prior_log_prob(x, schedule, dof)[:, None].repeat(1, k)
    ancestors = torch.arange(n, device=device)
    groups = size_groups(dof)
    ess_trace, resamples = [], 0
    b_dev = b.to(device)
    fuse = lambda s: (b_dev.to(s.dtype).reshape(1, k, *([1] * (s.dim() - 2))) * s).sum(1)  # noqa: E731  S = Σ b_i s^i
    t0 = time_grid(steps, t_end, grid_power)[0]  # where reverse_path starts
    s = stack_scores(fns, x, t0, cond, mask)  # (n, K, ...) at the particles' current (x, t)
    phi = None if tilt is None else tilt.phi(x, fuse(s) / big_b, t0, mask)
    log_w = torch.zeros(n, dtype=torch.float64, device=device) if phi is None else phi.clone()  # §8: + φ_1(x_1)
    for st in reverse_path(schedule, steps, t_end, grid_power, progress, "fkc"):
        t, tn, dtau, dla, g2 = st.t, st.tn, st.dtau, st.dlog_alpha, st.g2
        sigma2 = noise_ratio * g2
        noise = (sigma2 * dtau) ** 0.5 * space.noise(x.shape, mask, generator, device, dtype) if sigma2 > 0 else None
        dx = reverse_step(x, fuse(s), dla, 0.5 * (g2 + sigma2), dtau, noise)
        log_w = log_w + fkc_log_weight_rate(s, b_dev, dla, g2, dof) * dtau
        if track:
            log_q = log_q + ito_increment(x, dx, s, dtau, dla, g2, dof)
        x = advance(x, dx, t, models, s, member_probe(schedule, space, x, t, cond, mask), space, mask)
        last = st.last
        s = None if last else stack_scores(fns, x, tn, cond, mask)
        if tilt is not None:  # §8: + φ_{t−Δτ}(x_{t−Δτ}) − φ_t(x_t); the last φ is −λ U(x) on x itself
            phi_new = tilt.final(x, mask) if last else tilt.phi(x, fuse(s) / big_b, tn, mask)
            log_w, phi = log_w + phi_new - phi, phi_new
        idx, ess = _resample_groups(log_w, groups, ess_threshold, resampling, generator)
        ess_trace.append(ess)
        if idx is not None:
            x, s, phi, ancestors, mask, cond, log_q = (_take(v, idx, n) for v in (x, s, phi, ancestors, mask, cond,
                                                                                     log_q))
            resamples += 1
    x, ancestors, mask, log_w, log_q = _finish(log_w, groups, final_resample and resampling != "none", resampling,
                                               generator, x, ancestors, mask, log_w, log_q)
    energy = None if tilt is None else tilt.energy(x, mask, t_end)
    if denoise:  # Tweedie on the product's score Σ b_i s^i at t_end, after the weights are settled
        x = denoise_end(x, fuse(stack_scores(fns, x, t_end, cond, mask)), t_end, schedule, space, mask).detach()
    return FKCResult(x=x, log_weight=log_w, log_q=log_q, ess=torch.tensor(ess_trace, dtype=torch.float64),
                     resamples=resamples, ancestors=ancestors, exponents=tuple(float(v) for v in b), t_end=t_end,
                     mask=mask, energy=energy)
