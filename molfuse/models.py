"""Score-model protocol, analytic Gaussian mixtures (exact score and log q_t), ``bind``."""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from .errors import ConventionError
from .schedules import Schedule, VPSchedule

__all__ = ["ScoreModel", "GaussianMixture", "Bound", "bind"]


@runtime_checkable
class ScoreModel(Protocol):
    """Anything callable as ``model(x, t, cond=None) -> Tensor`` (same shape as ``x``).

    Optional attributes: ``prediction`` (``"score"``, ``"eps"``, ``"x0"``, ``"v"``; default
    ``"score"``) and ``schedule`` (the convention it was trained in, MATH §1).
    """

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor: ...


class GaussianMixture:
    """Gaussian mixture data distribution diffused along ``schedule``: exact score and log q_t.

    At time t component k is ``N(alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I)``.

    Args:
        means: (K, D) component means.
        covs: (K, D, D) positive-definite covariances (or (K,) / (K, D) for isotropic /
            diagonal).
        weights: (K,) mixture weights on the simplex (default uniform).
        schedule: noising convention (default ``VPSchedule()``).
    """

    prediction = "score"

    def __init__(self, means, covs, weights=None, schedule: Schedule | None = None, name: str | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must be (K, D); got shape {tuple(self.means.shape)}")
        k, d = self.means.shape
        self.covs = _full_covs(torch.as_tensor(covs, dtype=torch.float64), k, d)
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must be {k} non-negative numbers summing to 1; got {w.tolist()}")
        self.weights = w
        self.schedule = schedule if schedule is not None else VPSchedule()
        self.name = name
        torch.linalg.cholesky(self.covs)  # raises on a covariance that is not positive definite

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Component means and covariances of q_t: (K, D), (K, D, D) for a scalar t, with a
        leading batch dimension for a (B,) tensor of times."""
        tt = torch.as_tensor(t, dtype=torch.float64)
        a, s2 = self.schedule.alpha(tt), self.schedule.sigma2(tt)
        a, s2 = a.reshape(a.shape + (1, 1)), s2.reshape(s2.shape + (1, 1, 1))
        eye = torch.eye(self.dim, dtype=torch.float64)
        return a * self.means, a[..., None] ** 2 * self.covs + s2 * eye

    def _terms(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Per-component log(w_k N(x)) (B, K) and component scores (B, K, D), float64."""
        x64 = x.to(torch.float64) if x.requires_grad else x.detach().to(torch.float64)
        if x64.dim() != 2 or x64.shape[1] != self.dim:
            raise ConventionError(f"GaussianMixture of dim {self.dim} got input of shape {tuple(x.shape)}")
        tt = torch.as_tensor(t, dtype=torch.float64).flatten().cpu()
        if tt.numel() == 1 or bool((tt == tt[0]).all()):
            m, c = self.marginal(tt[0])  # one time for the whole batch: (K, D), (K, D, D)
            m, c = m[None], c[None]
        else:
            if tt.numel() != x64.shape[0]:
                raise ConventionError(f"t has {tt.numel()} entries for a batch of {x64.shape[0]}")
            m, c = self.marginal(tt)  # (B, K, D), (B, K, D, D)
        m, c = m.to(x64.device), c.to(x64.device)
        chol = torch.linalg.cholesky(c)
        diff = x64[:, None, :] - m  # (B, K, D)
        z = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logn = -0.5 * (z**2).sum(-1) - 0.5 * logdet - 0.5 * self.dim * math.log(2 * math.pi)
        prec_diff = torch.cholesky_solve(diff[..., None], chol)[..., 0]
        return logn + torch.log(self.weights.to(x64.device)), -prec_diff

    def log_prob(self, x: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """Exact ``log q_t(x)`` in nats, (B,) float64."""
        logc, _ = self._terms(x, t)
        return torch.logsumexp(logc, dim=-1)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Exact ``grad_x log q_t(x)``, (B, D) in the dtype of ``x``."""
        logc, comp = self._terms(x, t)
        resp = torch.softmax(logc, dim=-1)
        return (resp[..., None] * comp).sum(1).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.score(x, t)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples from the data distribution (t = 0), (n, D) float64."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[comp] + (chol[comp] @ z[..., None])[..., 0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.means.shape[0]}, D={self.dim}{', name=' + self.name if self.name else ''})"


def _full_covs(c: Tensor, k: int, d: int) -> Tensor:
    if c.dim() == 1 and c.shape == (k,):
        return c[:, None, None] * torch.eye(d, dtype=torch.float64)
    if c.dim() == 2 and c.shape == (k, d):
        return torch.diag_embed(c)
    if c.dim() == 3 and c.shape == (k, d, d):
        return c
    raise ValueError(f"covs must be (K,), (K, D) or (K, D, D) with K={k}, D={d}; got {tuple(c.shape)}")


class Bound:
    """A score model with its condition fixed: ``Bound(net, cond)(x, t) == net(x, t, cond)``."""

    def __init__(self, model: Any, cond: Any):
        self.model, self.cond = model, cond
        self.prediction = getattr(model, "prediction", "score")
        self.schedule = getattr(model, "schedule", None)
        self.name = f"{getattr(model, 'name', None) or type(model).__name__}[{cond}]"

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        if cond is not None:
            raise ConventionError(f"{self.name} already has its condition bound; got another one")
        c = self.cond
        if isinstance(c, Tensor) and c.dim() > 0 and c.shape[0] == 1 and x.shape[0] != 1:
            c = c.expand(x.shape[0], *c.shape[1:])
        return self.model(x, t, cond=c)


def bind(model: Any, cond: Any) -> Bound:
    """Fix the condition of ``model`` (class label, prompt, property target)."""
    return Bound(model, cond)


def names(models: Sequence[Any]) -> list[str]:
    """Readable names for a list of models."""
    return [getattr(m, "name", None) or f"model_{i}" for i, m in enumerate(models)]
