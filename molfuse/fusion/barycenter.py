"""KL-barycenter fusion (ScoreFusion, MATH §2): fused score Σ λ_i s_i, λ learned by an exact QP."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..convert import ScoreFn
from ..models import names
from ..schedules import Schedule
from ..spaces import Space
from ._common import check_members, member_fns, stack_scores
from .weights import as_weights

__all__ = ["LinearCombination", "Barycenter", "guidance", "BarycenterFit", "fit_barycenter_weights",
           "solve_simplex_qp", "WINDOWS"]

WINDOWS = ("full", "vanilla")


class LinearCombination:
    """Score model ``Σ_i c_i s_i(x, t)`` with any finite coefficients (MATH §2).

    Off the simplex this is guidance-style algebra, not a barycenter; use
    :class:`Barycenter` for ``p ∝ Π p_i^{λ_i}`` and :func:`guidance` for CFG.
    """

    prediction = "score"
    _simplex = False
    _what = "LinearCombination"

    def __init__(self, models: Sequence[Any], weights: Any, schedule: Schedule | None = None,
                 name: str | None = None):
        self.models = check_members(models, self._what, minimum=1)
        self._fns, self.schedule, self.space = member_fns(self.models, schedule)
        self.weights = as_weights(weights, len(self.models), self._what, simplex=self._simplex)
        self.name = name or f"{self._what.lower()}({', '.join(names(self.models))})"

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        # members with weight exactly 0 contribute nothing and are not evaluated (a fitted λ
        # on the simplex is often sparse; this saves their network calls)
        active = [i for i, w in enumerate(self.weights.tolist()) if w != 0.0]
        if not active:
            return torch.zeros_like(x)
        s = stack_scores([self._fns[i] for i in active], x, t, cond, mask)  # (B, K_active, ...)
        w = self.weights[active].to(device=s.device, dtype=s.dtype).reshape(1, -1, *([1] * (s.dim() - 2)))
        return (w * s).sum(1)


class Barycenter(LinearCombination):
    """KL barycenter ``p_λ ∝ Π_i p_i^{λ_i}``: score ``Σ λ_i s_i`` with λ on the simplex (MATH §2).

    The path-wise sum is the barycenter of the diffused marginals at every t; it equals the
    diffusion of the time-0 barycenter only in special cases (equal-covariance Gaussians).

    Args:
        models: K >= 2 score models sharing one convention.
        weights: (K,) λ on the simplex (checked).
        schedule: needed when a member predicts eps/x0/v and declares no schedule.
    """

    _simplex = True
    _what = "Barycenter"

    def __init__(self, models: Sequence[Any], weights: Any, schedule: Schedule | None = None,
                 name: str | None = None):
        check_members(models, "Barycenter", minimum=2)
        super().__init__(models, weights, schedule, name)


def guidance(cond_model: Any, uncond_model: Any, scale: float, schedule: Schedule | None = None) -> LinearCombination:
    """Classifier-free guidance ``(1 + w) s_c − w s`` as a named linear combination (MATH §2)."""
    return LinearCombination([cond_model, uncond_model], [1.0 + scale, -scale], schedule, name=f"cfg(w={scale})")


@dataclass
class BarycenterFit:
    """Result of :func:`fit_barycenter_weights`.

    Attributes:
        weights: (K,) λ on the simplex, float64.
        train_loss, heldout_loss: σ²-weighted DSM loss per sample (summed over
            coordinates) of the fused score on the fitting / held-out samples (NaN if none).
        per_model: one row per member: ``model, weight, train_loss, heldout_loss``.
        A, b, c: the quadratic ``L(λ) = λᵀAλ − 2bᵀλ + c`` estimated on the fitting samples.
    """

    weights: Tensor
    train_loss: float
    heldout_loss: float
    per_model: pd.DataFrame
    A: np.ndarray
    b: np.ndarray
    c: float
    window: tuple[float, float]
    n_train: int
    n_heldout: int
    models: list = field(default_factory=list, repr=False)

    def barycenter(self, schedule: Schedule | None = None) -> Barycenter:
        """The fitted :class:`Barycenter` over the same members."""
        return Barycenter(self.models, self.weights, schedule)


def solve_simplex_qp(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact minimiser of ``λᵀAλ − 2bᵀλ`` over the simplex (A symmetric PSD, K <= 12).

    Enumerates supports and solves each face's KKT system; a convex QP's minimiser is a
    stationary point of the face whose relative interior holds it, so the best feasible
    stationary point is the global minimum.
    """
    A, b = np.asarray(A, float), np.asarray(b, float)
    k = len(b)
    if k > 12:
        raise ValueError(f"exact simplex QP enumerates 2^K supports; K={k} is too many (max 12)")
    best, best_val = None, math.inf
    for r in range(1, k + 1):
        for supp in itertools.combinations(range(k), r):
            idx = list(supp)
            kkt = np.zeros((r + 1, r + 1))
            kkt[:r, :r], kkt[:r, r], kkt[r, :r] = 2 * A[np.ix_(idx, idx)], 1.0, 1.0
            rhs = np.concatenate([2 * b[idx], [1.0]])
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:r]
            if (sol < -1e-12).any():
                continue
            lam = np.zeros(k)
            lam[idx] = np.clip(sol, 0.0, None)
            lam /= lam.sum()
            val = lam @ A @ lam - 2 * b @ lam
            if val < best_val - 1e-15:
                best, best_val = lam, val
    return best


def _window(window: str, t_min: float, vanilla_t_max: float) -> tuple[float, float]:
    if window == "full":
        return (t_min, 1.0)
    if window == "vanilla":
        return (t_min, vanilla_t_max)
    raise ValueError(f"window must be one of {WINDOWS}; got {window!r}")


@torch.no_grad()
def _quadratic_terms(fns: list[ScoreFn], x0: Tensor, schedule: Schedule, window: tuple[float, float],
                     draws: int, batch_size: int, generator: torch.Generator | None, cond: Any,
                     space: Space, mask: Tensor | None = None):
    """Monte Carlo A (K, K), b (K,), c with the same (t, ε) draws for every model (MATH §2).

    ε is drawn on the state's subspace and padding entries are zero (MATH §6), so the inner
    products below run over the real entries.
    """
    k = len(fns)
    A, b, c, n = np.zeros((k, k)), np.zeros(k), 0.0, 0
    xs = x0.repeat_interleave(draws, dim=0)
    ms = None if mask is None else mask.repeat_interleave(draws, dim=0)
    gdev = generator.device if generator is not None else x0.device
    for start in range(0, xs.shape[0], batch_size):
        x = xs[start:start + batch_size]
        m = None if ms is None else ms[start:start + batch_size]
        t = torch.empty(x.shape[0], dtype=torch.float64, device=gdev).uniform_(*window, generator=generator).to(x.device)
        eps = space.noise(x.shape, m, generator, x.device, x.dtype)
        xt = schedule.diffuse(x, t, eps)  # MATH §1
        sigma = schedule.sigma(t).to(x.dtype)
        ss = stack_scores(fns, xt, t.to(x.dtype), cond, m).reshape(x.shape[0], k, -1).to(torch.float64)
        ss = ss * sigma.reshape(-1, 1, 1).to(torch.float64)  # σ s_i
        ef = eps.reshape(x.shape[0], -1).to(torch.float64)
        A += torch.einsum("bid,bjd->ij", ss, ss).cpu().numpy()
        b += -torch.einsum("bid,bd->i", ss, ef).cpu().numpy()
        c += float((ef * ef).sum())
        n += x.shape[0]
    return A / n, b / n, c / n


def fit_barycenter_weights(models: Sequence[Any], data: Tensor, schedule: Schedule, window: str = "full",
                           n_mc: int = 20000, heldout_fraction: float = 0.2, t_min: float = 1e-3,
                           vanilla_t_max: float = 0.05, batch_size: int = 1024,
                           generator: torch.Generator | None = None, cond: Any = None,
                           mask: Tensor | None = None, space: Space | None = None) -> BarycenterFit:
    """Learn barycenter weights λ from target samples by σ²-weighted DSM, solved exactly (MATH §2).

    ``L(λ) = E_{t,x0,ε} ‖σ_t Σ λ_i s_i(x_t, t) + ε‖² = λᵀAλ − 2bᵀλ + c`` is estimated by Monte
    Carlo on the fitting samples and minimised over the simplex exactly.

    Args:
        models: K >= 2 frozen score models.
        data: (n, ...) target samples in the models' data space.
        window: ``"full"`` (``t ~ U[t_min, 1]``, ScoreFusion) or ``"vanilla"``
            (``t ~ U[t_min, vanilla_t_max]``, vanilla KL fusion near t = 0).
        n_mc: about how many (x0, t, ε) draws estimate A and b (each sample reused).
        heldout_fraction: share of ``data`` kept out of the fit to report held-out loss.
        mask, space: node masks (n, N) and state space of point-cloud data (MATH §6).

    Raises:
        NonFiniteError: a member returned NaN / inf (the message names it and t).

    Warns when the fit is worse on held-out data than the best single member.
    """
    models = check_members(models, "fit_barycenter_weights", minimum=2)
    fns, schedule, space = member_fns(models, schedule, space)
    space.check(data.shape, mask)
    win = _window(window, t_min, vanilla_t_max)
    n = data.shape[0]
    n_held = int(round(heldout_fraction * n)) if n >= 4 else 0
    if n - n_held < 1:
        raise ValueError(f"fit_barycenter_weights needs at least one fitting sample; got n={n}")
    perm = torch.randperm(n, generator=generator, device=generator.device if generator else "cpu").to(data.device)
    train, held = data[perm[n_held:]], data[perm[:n_held]]
    m_train, m_held = (None, None) if mask is None else (mask[perm[n_held:]], mask[perm[:n_held]])
    draws = max(1, math.ceil(n_mc / train.shape[0]))
    A, b, c = _quadratic_terms(fns, train, schedule, win, draws, batch_size, generator, cond, space, m_train)
    lam = solve_simplex_qp(A, b)
    loss = lambda A_, b_, c_, w: float(w @ A_ @ w - 2 * b_ @ w + c_)  # noqa: E731
    eye = np.eye(len(models))
    rows = {"model": names(models), "weight": lam, "train_loss": [loss(A, b, c, e) for e in eye]}
    held_loss = math.nan
    if n_held:
        draws_h = max(1, math.ceil(n_mc / n_held))
        Ah, bh, ch = _quadratic_terms(fns, held, schedule, win, draws_h, batch_size, generator, cond, space, m_held)
        held_loss = loss(Ah, bh, ch, lam)
        rows["heldout_loss"] = [loss(Ah, bh, ch, e) for e in eye]
        best = int(np.argmin(rows["heldout_loss"]))
        if held_loss > rows["heldout_loss"][best] * (1 + 5e-3):  # beyond Monte Carlo ties
            warnings.warn(f"fitted barycenter's held-out DSM loss {held_loss:.4g} is above member "
                          f"{rows['model'][best]!r} alone ({rows['heldout_loss'][best]:.4g}): too few target "
                          "samples, or the members do not cover the target", stacklevel=2)
    else:
        rows["heldout_loss"] = [math.nan] * len(models)
    return BarycenterFit(torch.as_tensor(lam), loss(A, b, c, lam), held_loss, pd.DataFrame(rows),
                         A, b, c, win, train.shape[0], n_held, models)
