"""Score-model protocol, analytic Gaussian mixtures (exact score and log q_t), ``bind``.

:class:`GaussianMixture` lives on plain vectors; :class:`CentredGaussianMixture` on padded,
masked states of several sizes (MATH §6) — centred point clouds by default, or any masked
:class:`~molfuse.spaces.Space` such as the residue chains of :class:`~molfuse.spaces.Chain` — so
that every estimator can be checked against exact values on masked states too.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from .errors import ConventionError
from .schedules import Schedule, VPSchedule
from .spaces import EUCLIDEAN, PointCloud, Space

__all__ = ["ScoreModel", "GaussianMixture", "CentredGaussianMixture", "Bound", "bind"]


@runtime_checkable
class ScoreModel(Protocol):
    """Anything callable as ``model(x, t, cond=None) -> Tensor`` (same shape as ``x``).

    Optional attributes: ``prediction`` (``"score"``, ``"eps"``, ``"x0"``, ``"v"``; default
    ``"score"``), ``schedule`` (the convention it was trained in, MATH §1) and ``space`` (the
    state space, MATH §6). A model that knows its exact ``log q_t`` offers
    ``log_prob(x, t)`` (``log_prob(x, t, mask)`` on point clouds; (batch,) nats), which
    :func:`~molfuse.density.log_likelihood` uses as its end term at t = 1.
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
    space = EUCLIDEAN  # plain vectors: no node mask (MATH §6)

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


class CentredGaussianMixture:
    """Gaussian mixture on masked states of several sizes; exact score and log q_t (MATH §6).

    A state ``x`` (batch, N, F) with n real nodes (or residues) lives on the subspace ``S_n`` of
    its ``space``, of dimension ``D = space.dof``: ``n F - centred`` for a
    :class:`~molfuse.spaces.PointCloud` (the default, 3 centred channels), ``Σ_c (n - head_c -
    tail_c)`` for a :class:`~molfuse.spaces.Chain` (a coordinate-aligned subspace: the padding and
    trimmed entries are zero and the rest is free), ``n F - centred + B n (n - 1) / 2`` for a
    :class:`~molfuse.spaces.MoleculeGraph` (each free pair once). Component k is the isotropic Gaussian
    ``N(mu_k(n), c_k I)`` on ``S_n`` with a template ``mu_k(n)`` per size; at time t it is
    ``N(alpha_t mu_k(n), (alpha_t^2 c_k + sigma_t^2) I)`` on ``S_n``, so
    ``log q_t(x) = logsumexp_k [log w_k - |P x - alpha mu_k|^2 / (2 v_k) - D/2 log(2 pi v_k)]``
    with ``P`` the projection onto ``S_n`` and densities against Lebesgue measure on ``S_n``; the
    score is ``P ∇`` of it (zero off the subspace).

    Args:
        templates: ``{n: (K, n, F) means}`` for every size n the mixture covers (projected
            onto ``S_n`` here, so uncentred or untrimmed templates are fine); (K, n, F + n·B)
            states of n nodes on a ``MoleculeGraph`` (padded here with ``space.resize``).
        variances: (K,) ``c_k > 0``.
        weights: (K,) component weights on the simplex (default uniform), the same for every n.
        centred: leading channels that are centred, for the default ``PointCloud(centred)``
            (3 for 3-D positions); not with ``space``.
        max_nodes: N of the padded batch (default the largest n).
        space: any masked space (``PointCloud``, ``Chain``, ``MoleculeGraph``) instead of ``PointCloud(centred)``.
    """

    prediction = "score"

    def __init__(self, templates: dict, variances, weights=None, centred: int | None = None,
                 schedule: Schedule | None = None, name: str | None = None, max_nodes: int | None = None,
                 space: Space | None = None):
        if not templates:
            raise ValueError("templates must map at least one size n to (K, n, F) means")
        self.sizes = sorted(int(n) for n in templates)
        self.variances = torch.as_tensor(variances, dtype=torch.float64).flatten()
        k = len(self.variances)
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6 or (self.variances <= 0).any():
            raise ValueError(f"need {k} positive variances and {k} weights on the simplex; got "
                             f"{self.variances.tolist()}, {w.tolist()}")
        self.weights, self.space = w, _masked_space(centred, space)
        self.schedule = schedule if schedule is not None else VPSchedule()
        self.name = name
        self.max_nodes = int(max_nodes or self.sizes[-1])
        padded = []
        for n in self.sizes:
            mu = torch.as_tensor(templates[n], dtype=torch.float64)
            try:
                self.space.check(mu.shape, torch.ones(mu.shape[:2], dtype=torch.bool))
            except ConventionError as e:
                raise ConventionError(f"templates[{n}] of shape {tuple(mu.shape)} on {self.space!r}: {e}") from None
            if mu.shape[:2] != (k, n) or n > self.max_nodes:
                raise ValueError(f"templates[{n}] must be ({k}, {n}, channels) with n <= max_nodes = "
                                 f"{self.max_nodes}; got {tuple(mu.shape)}")
            full = self.space.resize(self.space.project(mu, None), self.max_nodes)  # on S_n, padded to N nodes
            if padded and full.shape[-1] != padded[0].shape[-1]:
                want = self.space.resize(padded[0], n).shape[-1]
                raise ValueError(f"templates[{n}] must be ({k}, {n}, {want}) like templates[{self.sizes[0]}]; "
                                 f"got {tuple(mu.shape)}")
            padded.append(full)
        self._means = torch.stack(padded)  # (S, K, N, F)
        self.channels = self._means.shape[-1]
        self._index = {n: i for i, n in enumerate(self.sizes)}
        self.node_counts = {n: 1.0 for n in self.sizes}  # what a sampler draws sizes from (uniform)

    @property
    def sample_shape(self) -> tuple[int, int]:
        return (self.max_nodes, self.channels)

    def means(self, n: int) -> Tensor:
        """(K, n, F) float64 component means ``mu_k(n)`` of size n, on ``S_n``."""
        if n not in self._index:
            raise ConventionError(f"{self!r} has no template for n = {n} (templated sizes {self.sizes})")
        return self.space.resize(self._means[self._index[n]], n).clone()

    def _means_for(self, mask: Tensor) -> Tensor:
        sizes = mask.sum(1).tolist()
        missing = sorted({n for n in sizes if n not in self._index})
        if missing:
            raise ConventionError(f"{self!r} has no template for n = {missing} real nodes or residues "
                                  f"(templated sizes {self.sizes})")
        return self._means[[self._index[n] for n in sizes]].to(mask.device)  # (B, K, N, F)

    def _terms(self, x: Tensor, t: Tensor | float, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-component log(w_k N(x)) (B, K) and component scores (B, K, N, F), float64."""
        x64 = x.to(torch.float64) if x.requires_grad else x.detach().to(torch.float64)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        self.space.check(x.shape, mask)
        if x.shape[1:] != (self.max_nodes, self.channels):
            raise ConventionError(f"{self!r} takes (batch, {self.max_nodes}, {self.channels}); got {tuple(x.shape)}")
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device).flatten().expand(x.shape[0])
        a = self.schedule.alpha(tt)[:, None]
        v = a**2 * self.variances.to(x.device) + self.schedule.sigma2(tt)[:, None]  # (B, K)
        diff = self.space.project(x64[:, None] - a[:, :, None, None] * self._means_for(mask), mask)  # P x - α μ_k
        dof = self.space.dof(x.shape, mask).to(x.device)[:, None]
        logn = -0.5 * self.space.sqnorm(diff, mask, lead=1) / v - 0.5 * dof * torch.log(2 * math.pi * v)
        return logn + torch.log(self.weights.to(x.device)), -diff / v[:, :, None, None]

    def log_prob(self, x: Tensor, t: Tensor | float = 0.0, mask: Tensor | None = None) -> Tensor:
        """Exact ``log q_t(x)`` on the subspace, nats, (B,) float64."""
        logc, _ = self._terms(x, t, mask)
        return torch.logsumexp(logc, dim=-1)

    def score(self, x: Tensor, t: Tensor | float, mask: Tensor | None = None) -> Tensor:
        """Exact score on the subspace (zero off it: padding, trimmed ends, centre of mass), (B, N, F)
        in the dtype of ``x``."""
        logc, comp = self._terms(x, t, mask)
        resp = torch.softmax(logc, dim=-1)
        return (resp[:, :, None, None] * comp).sum(1).to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor | float, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        return self.score(x, t, mask)

    def sample(self, n: int, generator: torch.Generator | None = None,
               sizes: Sequence[int] | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` exact samples at t = 0 and their masks: (n, N, F) float64, (n, N) bool.

        ``sizes``: the node count of each sample (default: uniform over the templated sizes).
        """
        if sizes is None:
            pick = torch.randint(len(self.sizes), (n,), generator=generator)
            sizes = torch.as_tensor(self.sizes)[pick]
        sizes = torch.as_tensor(sizes).flatten()
        mask = torch.arange(self.max_nodes)[None, :] < sizes[:, None]
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = self.space.noise((n, self.max_nodes, self.channels), mask, generator, dtype=torch.float64)
        mu = self._means_for(mask)[torch.arange(n), comp]
        return mu + self.variances[comp].sqrt()[:, None, None] * z, mask

    def __repr__(self) -> str:
        return (f"CentredGaussianMixture(K={len(self.weights)}, sizes={self.sizes}, F={self.channels}, {self.space!r}"
                f"{', name=' + self.name if self.name else ''})")


def _masked_space(centred: int | None, space: Space | None) -> Space:
    """``space``, or ``PointCloud(centred)`` (3 centred channels by default); a space without masks is refused."""
    if space is None:
        return PointCloud(3 if centred is None else centred)
    if centred is not None:
        raise ConventionError(f"CentredGaussianMixture takes either centred= (for PointCloud(centred)) or space=; "
                              f"got centred={centred!r} and space={space!r}")
    if not isinstance(space, Space) or space.trivial:
        raise ConventionError(f"CentredGaussianMixture needs a masked space (PointCloud, Chain); got {space!r}")
    return space


class Bound:
    """A score model with its condition fixed: ``Bound(net, cond)(x, t) == net(x, t, cond)``."""

    def __init__(self, model: Any, cond: Any):
        self.model, self.cond = model, cond
        self.prediction = getattr(model, "prediction", "score")
        self.schedule = getattr(model, "schedule", None)
        self.space = getattr(model, "space", None)
        self.name = f"{getattr(model, 'name', None) or type(model).__name__}[{cond}]"

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None, **kwargs: Any) -> Tensor:
        if cond is not None:
            raise ConventionError(f"{self.name} already has its condition bound; got another one")
        c = self.cond
        if isinstance(c, Tensor) and c.dim() > 0 and c.shape[0] == 1 and x.shape[0] != 1:
            c = c.expand(x.shape[0], *c.shape[1:])
        return self.model(x, t, cond=c, **kwargs)


def bind(model: Any, cond: Any) -> Bound:
    """Fix the condition of ``model`` (class label, prompt, property target)."""
    return Bound(model, cond)


def names(models: Sequence[Any]) -> list[str]:
    """Readable names for a list of models."""
    return [getattr(m, "name", None) or f"model_{i}" for i, m in enumerate(models)]
