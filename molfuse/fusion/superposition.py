"""Superposition of diffusion models, OR and AND (SuperDiff, MATH §3-4).

Every member's log-density is tracked with the Itô estimator along the fused reverse-SDE
path, and the per-sample member weights κ are chosen from those densities at each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..convert import model_name
from ..density import ito_increment, prior_log_prob
from ..errors import SamplerError
from ..sampling import advance, check_sampler_args, denoise_end, reverse_path, reverse_step, step_noise
from ..schedules import Schedule
from ..spaces import Space
from ._common import check_members, member_fns, member_probe, stack_scores
from .weights import LogWeights

__all__ = ["SuperpositionResult", "superpose", "or_weights", "and_weights", "and_ito_correction", "ito_correction_for",
           "check_superpose_options",
           "MODES"]

MODES = ("or", "and")


@dataclass
class SuperpositionResult:
    """Output of :func:`superpose`.

    Attributes:
        x: samples (n, ...) at ``t_end``.
        log_q: (n, K) float64 Itô estimates of ``log q^i_{t_end}(x)`` per member, nats.
        kappa: (n, K) member weights used in the last step.
        fallbacks: (n,) int, AND steps that fell back to equal weights (degenerate system).
        t_end: the time the sampler stopped at.
        mask: the node mask (n, N) of point-cloud samples, or None.
    """

    x: Tensor
    log_q: Tensor
    kappa: Tensor
    fallbacks: Tensor
    t_end: float
    mask: Tensor | None = None


def or_weights(log_q: Tensor, temperature: float, bias: Tensor) -> Tensor:
    """OR: ``κ = softmax_i(T log q^i + ℓ_i)`` per sample (MATH §4). (n, K) -> (n, K).

    With ``T = 1`` and ``ℓ = log ω`` the fused path samples the mixture ``Σ ω_i p_i``; as
    ``T → ∞`` κ tends to the one-hot argmax of ``log q^i``; ``ℓ`` shifts the logits.
    """
    return torch.softmax(temperature * log_q + bias, dim=1)


def and_weights(s: Tensor, noise: Tensor, dtau: float, g2: float, bias: Tensor,
                tol: float = 1e-8, extra: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """AND: κ (Σκ = 1, not clipped) equalising every member's Itô increment (MATH §4).

    With ``c = g² Δτ``, ``a_ij = c ⟨s^j, s^i⟩`` and ``b_i = −½ c ‖s^i‖² + ⟨g sqrt(Δτ) z, s^i⟩ − ℓ_i Δτ``
    (terms common to all members cancel), MATH §4 solves ``[A, −1; 1ᵀ, 0][κ; d] = [−b; 1]``.
    Eliminating ``d`` and ``κ_K = 1 − Σ_{j<K} κ_j`` leaves the (K−1)×(K−1) symmetric system
    in the score differences ``Δ_i = s^i − s^K``:
    ``⟨Δ_i, Δ_j⟩ κ_j = (b_K − b_i) / c − ⟨Δ_i, s^K⟩`` (K = 2: the closed form), solved by
    Cholesky. When the differences are (numerically) dependent — identical members, or all
    models agreeing near t = 1 — the Cholesky pivot vanishes: fall back to equal weights.

    Args:
        s: (n, K, D) member scores at the pre-step point, float64.
        noise: (n, D) the noise the sampler adds this step, float64.
        bias: (K,) ℓ; from a common start ``log q^i − log q^j`` tends to ``(ℓ_i − ℓ_j)(1 − t_end)``.
        extra: (n, K) κ-independent terms added to ``b`` (the Itô correction of
            :func:`and_ito_correction`), so the corrected increments are the ones equalised.

    Returns:
        κ (n, K); a (n,) bool mask of fallbacks; and (n, K) the member-specific part of each
        Itô increment after the step, ``−½ c ‖s^i‖² + c ⟨Σ_j κ_j s^j, s^i⟩ + ⟨noise, s^i⟩``
        (+ ``extra``), from the Gram matrix (add ``D Δτ dlogα`` for the full increment).
    """
    n, k, _ = s.shape
    c = g2 * dtau
    gram = torch.einsum("nid,njd->nij", s, s)  # (n, K, K)
    zs = torch.einsum("nd,nid->ni", noise, s)
    own = -0.5 * c * torch.diagonal(gram, dim1=1, dim2=2) + zs + (0.0 if extra is None else extra)
    b = own - bias * dtau
    last = gram[:, :, -1]  # <s^i, s^K>
    dgram = (gram - last[:, :, None] - last[:, None, :] + gram[:, -1:, -1:])[:, :-1, :-1]
    rhs = (b[:, -1:] - b[:, :-1]) / c - (last[:, :-1] - gram[:, -1:, -1])
    chol, info = torch.linalg.cholesky_ex(dgram)
    scale = torch.diagonal(gram, dim1=1, dim2=2).amax(1).clamp_min(1e-300)
    pivot = torch.diagonal(chol, dim1=1, dim2=2).pow(2).amin(1)
    bad = (info != 0) | ~(pivot > tol * scale)
    safe = torch.where(bad[:, None, None], torch.eye(k - 1, dtype=s.dtype, device=s.device), chol)
    head = torch.cholesky_solve(rhs[..., None], safe)[..., 0]
    kappa = torch.cat([head, 1.0 - head.sum(1, keepdim=True)], dim=1)
    bad = bad | ~torch.isfinite(kappa).all(1)
    kappa = torch.where(bad[:, None], torch.full_like(kappa, 1.0 / k), kappa)
    inc = own + c * torch.einsum("nij,nj->ni", gram, kappa)
    return kappa, bad, inc


def ito_correction_for(mode: str, ito_correction: bool | None) -> bool:
    """Whether AND's Itô estimate takes the exact correction (:func:`and_ito_correction`).

    ``None``, the default of :func:`superpose` and of the workflow operator alike, is the exact
    estimator: True for AND (MATH §4); OR has no correction to take. ``False`` opts into the
    uncorrected AND estimator, which is cheaper but whose absolute ``log q`` is biased low.

    Raises:
        SamplerError: a value other than None / True / False, or True for OR.
    """
    if ito_correction is None:
        return mode == "and"
    if not isinstance(ito_correction, bool):
        raise SamplerError(f"ito_correction must be true, false or left out (the exact AND estimator); "
                           f"got {ito_correction!r}")
    if ito_correction and mode != "and":
        raise SamplerError(f"ito_correction only applies to mode 'and' (OR tracks log q with the plain Itô "
                           f"estimator, which is exact there); got mode {mode!r}")
    return ito_correction


def and_ito_correction(x: Tensor, fns: Sequence[Any], t: float, cond: Any, dtau: float,
                       g2: float, mask: Tensor | None = None,
                       names: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """Scores and the Itô correction AND needs: ``−½ g² Δτ tr(P ∇s^i)`` per member (n, K).

    Solving AND with the step's own noise removes the noise component in the span of the
    score differences (projector ``P``): the effective noise is ``(I − P) g sqrt(Δτ) z``. The
    Itô formula then gains ``−½ g² tr(P ∇s^i) dτ``, which MATH §3's estimator (derived for
    full noise) lacks. ``tr(P ∇s^i)`` is taken exactly with one vector-Jacobian product per
    member and difference direction (∇s is symmetric for a true score). Rows that fall back
    to equal weights (full noise) must not get it. On a constrained space the score
    differences already lie on the subspace, so ``P`` projects within it (MATH §6).

    Raises:
        SamplerError: a member's score does not depend on ``x`` through autograd (a detached
            or non-torch network), so ``∇s`` cannot be taken; ``names`` name the members.
    """
    n, k = x.shape[0], len(fns)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        outs = [f(xg, t, cond, mask) for f in fns]
        for i, o in enumerate(outs):
            if not o.requires_grad:
                who = names[i] if names is not None else f"member {i}"
                raise SamplerError(f"superpose AND: the score of {who!r} is not differentiable in x (no autograd "
                                   "graph), so the exact Itô correction cannot take ∇s; pass ito_correction=False "
                                   "for the uncorrected estimator (only differences of its log q mean anything)")
        s = torch.stack(outs, dim=1)
        diffs = (s[:, :-1] - s[:, -1:]).detach().reshape(n, k - 1, -1).to(torch.float64)
        q = torch.linalg.qr(diffs.transpose(1, 2)).Q.to(s.dtype)  # (n, D, K-1) orthonormal basis
        trace = torch.zeros(n, k, dtype=torch.float64, device=x.device)
        for i in range(k):
            for m in range(k - 1):
                v = q[:, :, m].reshape(x.shape)
                (hv,) = torch.autograd.grad((s[:, i] * v).sum(), xg, retain_graph=True)
                trace[:, i] += (hv * v).reshape(n, -1).sum(-1).to(torch.float64)
    return s.detach(), -0.5 * g2 * dtau * trace


def check_superpose_options(mode: str, temperature: float, method: str = "sde", noise_scale: float = 1.0) -> None:
    """The one check of superposition's options, for the Python API and workflows alike.

    Raises:
        SamplerError: naming the option (``.field``): an unknown mode, a method or noise scale that
            breaks the Itô estimator, a temperature that is not positive and finite, or one set
            for AND (it only enters OR).
    """
    if mode not in MODES:
        raise SamplerError(f"mode must be one of {MODES}; got {mode!r}", "mode")
    if method != "sde":
        raise SamplerError("superposition tracks densities with the Itô estimator, which holds only on the "
                           f"reverse SDE (MATH §3); method={method!r} is refused, use method='sde'", "method")
    if noise_scale != 1.0:
        raise SamplerError(f"noise_scale={noise_scale} rescales the injected noise and breaks the Itô density "
                           "estimator (MATH §3): it needs exactly g sqrt(dτ) z", "noise_scale")
    if not (temperature > 0 and torch.isfinite(torch.tensor(float(temperature)))):
        raise SamplerError(f"temperature must be a positive finite number; got {temperature}", "temperature")
    if mode == "and" and temperature != 1.0:
        raise SamplerError("temperature only enters mode 'or' (κ = softmax(T log q + ℓ)); AND has none: drop it",
                           "temperature")


def superpose(models: Sequence[Any], schedule: Schedule, shape: Sequence[int], mode: str = "or",
              temperature: float = 1.0, bias: Any = None, steps: int = 500,
              generator: torch.Generator | None = None, cond: Any = None, t_end: float = 1e-3,
              method: str = "sde", noise_scale: float = 1.0, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None, progress: bool = False, tol: float = 1e-8,
              ito_correction: bool | None = None, weights: Any = None, mask: Tensor | None = None,
              space: Space | None = None, grid_power: float = 1.0, denoise: bool = False) -> SuperpositionResult:
    """Sample the superposition of K >= 2 models (SuperDiff OR / AND, MATH §4).

    Each step: member scores ``s^i`` at ``x``; noise ``z`` drawn; κ from OR
    (``softmax(T log q + ℓ)``) or AND (linear solve); ``Δx = (−f + g² Σ κ_i s^i) Δτ + g sqrt(Δτ) z``;
    every ``log q^i`` advanced by the Itô estimator with that same ``Δx`` (float64,
    re-centred per sample each step, offset kept).

    Args:
        models: K >= 2 score models sharing one convention (converted to scores).
        shape: (n, ...) sample shape.
        mode: ``"or"`` (mixture) or ``"and"`` (equal density).
        temperature: T of OR (1 samples the mixture; large T approaches argmax).
        bias: (K,) ℓ in nats, or a :class:`~molfuse.fusion.LogWeights`. OR: logit offsets.
            AND: rates that make the densities differ by ``ℓ_i − ℓ_j`` over the path.
            Default zeros.
        weights: OR mixture weights ω (> 0, on the simplex) instead of ``bias`` (``ℓ = log ω``).
        method, noise_scale: only ``"sde"`` and ``1.0``; anything else breaks the estimator
            and is refused.
        tol: AND degeneracy threshold on the score-difference Gram matrix (relative).
        ito_correction: AND only; the default (None) is the exact estimator, as in workflows
            (:func:`ito_correction_for`). Solving κ with the step's noise projects that noise
            off the span of score differences, which the plain Itô estimate of ``log q``
            (MATH §3) does not see: the exact correction (:func:`and_ito_correction`) is added
            to every increment and the corrected increments are equalised. It costs K(K−1)
            vector-Jacobian products per step and needs differentiable members. ``False`` opts
            into the uncorrected estimator: cheaper, κ still as MATH §4 prescribes, but its
            ``log_q`` is biased low (about 5 nats per extra member on the 2-D Gaussian checks,
            not shrinking with steps), so only differences of it mean anything.
        mask, space: node mask (n, N) and state space of point-cloud members (MATH §6); the
            Itô increments then use each sample's own degrees of freedom.
        denoise: end with the Tweedie step (:func:`~molfuse.sampling.denoise_end`) at ``t_end``.
            OR: on ``Σ κ_i s^i`` with κ re-evaluated there (at T = 1 the mixture's posterior
            member weights, which makes the step the mixture's own Tweedie estimate). AND: on the
            members' mean score, i.e. the mean of their Tweedie estimates. AND has no score of its
            own, and its last κ must not be used: it cancels that step's noise, so it grows like
            ``1 / sqrt(Δτ)`` (thousands on a power-3 grid) and ``σ² Σ κ_i s^i`` would throw the
            sample far off (measured: geometry agreement 0.18 instead of 0.86 on molecule graphs).
            ``log_q`` stays the estimate at the state before the step.
    """
    check_superpose_options(mode, temperature, method, noise_scale)
    check_sampler_args(steps, t_end, method)
    ito_correction = ito_correction_for(mode, ito_correction)
    models = check_members(models, "superpose", minimum=2)
    fns, schedule, space = member_fns(models, schedule, space)
    space.check(shape, mask)
    k = len(models)
    if weights is not None and bias is not None:
        raise SamplerError("superpose: give bias (ℓ) or weights (ω, ℓ = log ω), not both")
    ell = (LogWeights.from_weights(weights, k, "superpose weights") if weights is not None
           else LogWeights.of(bias, k, "superpose bias"))
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    mask = None if mask is None else mask.to(device)
    ell_t = ell.log.to(device)
    x = space.noise(shape, mask, generator, device, dtype) * schedule.prior_std()
    dof = space.dof(shape, mask).to(device)
    log_q = prior_log_prob(x, schedule, dof)[:, None].repeat(1, k)
    offset = torch.zeros(x.shape[0], dtype=torch.float64, device=device)
    fallbacks = torch.zeros(x.shape[0], dtype=torch.long, device=device)
    kappa = torch.full((x.shape[0], k), 1.0 / k, dtype=torch.float64, device=device)
    kshape = (x.shape[0], k, *([1] * (x.dim() - 1)))
    for st in reverse_path(schedule, steps, t_end, grid_power, progress, f"superpose[{mode}]"):
        t, dtau, dla, g2 = st.t, st.dtau, st.dlog_alpha, st.g2
        corr = None
        if mode == "and" and ito_correction:
            s, corr = and_ito_correction(x, fns, t, cond, dtau, g2, mask, [model_name(m) for m in models])
        else:
            s = stack_scores(fns, x, t, cond, mask)  # (n, K, ...)
        noise = step_noise(space, x.shape, mask, g2, dtau, generator, device, dtype)
        if mode == "or":
            kappa = or_weights(log_q, temperature, ell_t)
            dx = reverse_step(x, (kappa.to(s.dtype).reshape(kshape) * s).sum(1), dla, g2, dtau, noise)
            log_q = log_q + ito_increment(x, dx, s, dtau, dla, g2, dof)  # MATH §3, same Δx for every member
        else:
            s64 = s.reshape(x.shape[0], k, -1).to(torch.float64)
            z64 = noise.reshape(x.shape[0], -1).to(torch.float64)
            kappa, bad, inc = and_weights(s64, z64, dtau, g2, ell_t, tol, corr)
            if corr is not None:  # fallback rows (equal κ, full noise) take no correction
                inc = inc - torch.where(bad[:, None], corr, torch.zeros_like(corr))
            fallbacks += bad.long()
            dx = reverse_step(x, (kappa.to(s.dtype).reshape(kshape) * s).sum(1), dla, g2, dtau, noise)
            log_q = log_q + (dof * dtau * dla)[:, None] + inc  # the Itô increment from the Gram matrix (MATH §3)
        top = log_q.amax(1)
        log_q, offset = log_q - top[:, None], offset + top
        x = advance(x, dx, t, models, s, member_probe(schedule, space, x, t, cond, mask), space, mask)
    if denoise:
        s = stack_scores(fns, x, t_end, cond, mask)
        k_end = or_weights(log_q, temperature, ell_t) if mode == "or" else torch.full_like(kappa, 1.0 / k)
        x = denoise_end(x, (k_end.to(s.dtype).reshape(kshape) * s).sum(1), t_end, schedule, space, mask).detach()
    return SuperpositionResult(x=x, log_q=log_q + offset[:, None], kappa=kappa, fallbacks=fallbacks, t_end=t_end,
                               mask=mask)
