"""Closed-form checks on masked states of mixed sizes in one padded batch (MATH §6).

The members are :class:`~molfuse.models.CentredGaussianMixture` models on a masked space, so
every estimate has an exact value per size: the Itô log q and the ODE likelihood (which see
the degrees of freedom ``D = space.dof``), OR proportions, AND balance, barycenter weights and
the FKC product's mode mass. Three kinds of states (:class:`States`):

- :data:`CLOUDS`: centred 3-D point clouds of 3, 5 and 8 nodes (padded to 8), ``D = 3(n − 1)``;
- :data:`CHAINS`: per-residue (cos θ, sin θ, cos τ, sin τ) rows of chains of 5, 8 and 12
  residues (padded to 12) on ``Chain(CHAIN_TRIMS)``, the protein angle state, ``D = 4n − 10``;
- :data:`GRAPHS`: molecule graphs of 3, 5 and 8 atoms (padded to 8) on ``MoleculeGraph(4, 2)``:
  centred positions, one atom channel and two bond channels per unordered pair, rows
  (batch, 8, 4 + 8·2), ``D = 4n − 3 + n(n − 1)`` (15 / 37 / 85).

Each function returns one row per size, its ``dof`` column from the members' space. ``space=``
swaps in another state space for the sampler (the tests pass deliberately broken ones — a wrong
``D``, noise that is not projected — and check which tables then fail); the exact values and the
``max_off`` column (the largest entry of ``x − P x``: 0 on the subspace) always use the members'.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
from torch import Tensor

from ..density import log_likelihood
from ..fusion import fit_barycenter_weights, fkc_sample, superpose
from ..models import CentredGaussianMixture
from ..sampling import sample
from ..schedules import Schedule, VPSchedule
from ..spaces import Chain, MoleculeGraph, PointCloud, Space

__all__ = ["States", "CLOUDS", "CHAINS", "GRAPHS", "CHAIN_TRIMS", "SIZES", "cloud_members", "size_masks",
           "off_subspace", "ito_by_size", "likelihood_by_size", "or_by_size", "and_by_size", "barycenter_by_size",
           "fkc_by_size"]


@dataclass(frozen=True)
class States:
    """The masked states a check runs on: the members' space, the sizes mixed in one padded
    batch (nodes or residues), the channels per node (and per partner node, for pair features),
    and the label the ``check`` column carries."""

    space: Space
    sizes: tuple[int, ...]
    channels: int
    label: str
    pair_channels: int = 0

    @property
    def max_nodes(self) -> int:
        return max(self.sizes)

    def width(self, n: int) -> int:
        """Channels per row of a state of n nodes (``F + n·B`` with pair features)."""
        return self.channels + n * self.pair_channels


CHAIN_TRIMS = ((1, 1), (1, 1), (1, 2), (1, 2))  # Cα bond angles θ_1..θ_{n−2}, dihedrals τ_1..τ_{n−3}
CLOUDS = States(PointCloud(3), (3, 5, 8), 3, "cloud")
CHAINS = States(Chain(CHAIN_TRIMS), (5, 8, 12), 4, "chain")
GRAPHS = States(MoleculeGraph(node_channels=4, pair_channels=2), (3, 5, 8), 4, "graph", pair_channels=2)
SIZES = CLOUDS.sizes
T_END_FKC = 1e-3


def _templates(k: int, sizes: Sequence[int], channels: int, seed: int, spread: float, shift: float = 0.0,
               pair_channels: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in sizes:
        mu = spread * torch.randn(k, n, channels + n * pair_channels, generator=g, dtype=torch.float64)
        mu[..., 0] += shift * torch.linspace(-1, 1, n, dtype=torch.float64)  # stretched along channel 0
        out[n] = mu
    return out


def cloud_members(schedule: Schedule | None = None, sizes: Sequence[int] = SIZES, channels: int = 3,
                  seed: int = 0, space: Space | None = None,
                  pair_channels: int = 0) -> tuple[CentredGaussianMixture, CentredGaussianMixture]:
    """Two members: ``a`` (two components, variances 0.3 / 0.5) and ``b`` (one, stretched, 0.4),
    on ``space`` (default centred point clouds; ``pair_channels`` B widens a size-n template to
    ``channels + n·B`` for molecule graphs)."""
    schedule = schedule or VPSchedule()
    a = CentredGaussianMixture(_templates(2, sizes, channels, seed, 1.0, pair_channels=pair_channels), [0.3, 0.5],
                               [0.6, 0.4], schedule=schedule, name="a", max_nodes=max(sizes), space=space)
    b = CentredGaussianMixture(_templates(1, sizes, channels, seed + 1, 0.5, shift=2.5, pair_channels=pair_channels),
                               [0.4], schedule=schedule, name="b", max_nodes=max(sizes), space=space)
    return a, b


def _members(states: States) -> tuple[CentredGaussianMixture, CentredGaussianMixture]:
    return cloud_members(sizes=states.sizes, channels=states.channels, space=states.space,
                         pair_channels=states.pair_channels)


def size_masks(n: int, sizes: Sequence[int], max_nodes: int) -> Tensor:
    """(n, max_nodes) masks with the sizes in turn (equal counts, interleaved in one batch)."""
    counts = torch.as_tensor(list(sizes)).repeat(math.ceil(n / len(sizes)))[:n]
    return torch.arange(max_nodes)[None, :] < counts[:, None]


def off_subspace(x: Tensor, mask: Tensor, space: Space) -> Tensor:
    """(n,) largest ``|x − P x|`` entry: a centre of mass, padding or a trimmed end that is not zero."""
    return (x - space.project(x, mask)).abs().flatten(1).amax(1)


def _reduce(key: str, v: Tensor) -> float:
    """``max_*``: the largest value; ``se_*``: the standard error of the mean; else the mean."""
    if key.startswith("max_"):
        return float(v.max())
    if key.startswith("se_"):
        return float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean())


def _per_size(mask: Tensor, dof: Tensor, **columns: Tensor) -> pd.DataFrame:
    """One row per size: ``nodes``, ``dof`` (D of that size), ``n`` and each column reduced."""
    sizes = mask.sum(1)
    rows = []
    for n in sorted(set(sizes.tolist())):
        sel = sizes == n
        rows.append({"nodes": n, "dof": int(dof[sel][0]), "n": int(sel.sum()),
                     **{k: _reduce(k, v[sel]) for k, v in columns.items()}})
    return pd.DataFrame(rows)


def ito_by_size(n: int = 600, steps: int = 200, seed: int = 0, space: Space | None = None,
                states: States = CLOUDS) -> pd.DataFrame:
    """Itô ``log q`` along reverse-SDE paths of member ``a`` vs its exact ``log q_{t_end}`` (MATH §3, §6).

    Columns per size: ``mae_nats``, ``bias_nats`` (estimate − exact) and ``max_off`` (the
    largest entry off the subspace: 0 for samples on it).
    """
    a, _ = _members(states)
    mask = size_masks(n, states.sizes, a.max_nodes)
    r = sample(a, a.schedule, (n, *a.sample_shape), steps=steps, generator=torch.Generator().manual_seed(seed),
               track_log_density=True, dtype=torch.float64, mask=mask, space=space)
    err = r.log_density - a.log_prob(r.x, r.t_end, mask)
    return _per_size(mask, a.space.dof(r.x.shape, mask), mae_nats=err.abs(), bias_nats=err,
                     max_off=off_subspace(r.x, mask, a.space)).assign(check=f"ito_{states.label}", steps=steps,
                                                                      seed=seed)


def likelihood_by_size(n: int = 24, steps: int = 60, seed: int = 0, divergence: str = "exact",
                       space: Space | None = None, states: States = CLOUDS) -> pd.DataFrame:
    """Probability-flow ODE ``log p`` (exact divergence on the subspace) vs the exact density."""
    a, _ = _members(states)
    g = torch.Generator().manual_seed(seed)
    x0, mask = a.sample(n, g, sizes=size_masks(n, states.sizes, a.max_nodes).sum(1))
    t0 = 1e-5
    ll = log_likelihood(a, x0, a.schedule, steps=steps, divergence=divergence, generator=g, t_start=t0, mask=mask,
                        space=space)
    err = ll - a.log_prob(x0, t0, mask)
    return _per_size(mask, a.space.dof(x0.shape, mask), mae_nats=err.abs(), bias_nats=err, se_bias_nats=err,
                     max_abs_err_nats=err.abs()).assign(check=f"likelihood_{states.label}_{divergence}", steps=steps,
                                                        seed=seed)


def _exact_or_share(a: CentredGaussianMixture, b: CentredGaussianMixture, omega: float, mask: Tensor, t: float,
                    g: torch.Generator) -> Tensor:
    """Per sample 1.0 where ``a`` has the higher exact density, for exact draws of the mixture
    ``ω p_a + (1 − ω) p_b`` diffused to ``t`` (the share OR at T = 1 should reproduce)."""
    n = mask.shape[0]
    xa, _ = a.sample(n, g, sizes=mask.sum(1))
    xb, _ = b.sample(n, g, sizes=mask.sum(1))
    pick = (torch.rand(n, generator=g, dtype=torch.float64) < omega)[:, None, None]
    x0 = torch.where(pick, xa, xb)
    z = a.space.noise(x0.shape, mask, g, dtype=torch.float64)
    xt = a.schedule.diffuse(x0, torch.full((n,), t, dtype=torch.float64), z)
    return (a.log_prob(xt, t, mask) > b.log_prob(xt, t, mask)).double()


def or_by_size(omega: float = 0.8, n: int = 1500, steps: int = 200, seed: int = 0,
               space: Space | None = None, states: States = CLOUDS) -> pd.DataFrame:
    """OR with ``ℓ = log ω`` reproduces the mixture's share per size (MATH §4): ``measured``
    (OR samples) against ``expected`` (exact mixture draws, 4n of them), with its z-score."""
    a, b = _members(states)
    mask = size_masks(n, states.sizes, a.max_nodes)
    g = torch.Generator().manual_seed(seed)
    r = superpose([a, b], a.schedule, (n, *a.sample_shape), mode="or", weights=[omega, 1 - omega], steps=steps,
                  generator=g, dtype=torch.float64, mask=mask, space=space)
    measured = (a.log_prob(r.x, r.t_end, mask) > b.log_prob(r.x, r.t_end, mask)).double()
    ref_mask = size_masks(4 * n, states.sizes, a.max_nodes)
    expected = _exact_or_share(a, b, omega, ref_mask, r.t_end, torch.Generator().manual_seed(seed + 7))
    out = _per_size(mask, a.space.dof(r.x.shape, mask), measured=measured)
    ref = _per_size(ref_mask, a.space.dof(r.x.shape, ref_mask), expected=expected).set_index("nodes")["expected"]
    out["expected"] = out["nodes"].map(ref)
    p = out["expected"].clip(0.01, 0.99)
    out["std_err"] = (p * (1 - p) / out["n"] + p * (1 - p) / (4 * out["n"])).pow(0.5)
    out["z"] = (out["measured"] - out["expected"]) / out["std_err"]
    return out.assign(check=f"or_{states.label}_share", omega=omega, steps=steps, seed=seed)


def and_by_size(n: int = 600, steps: int = 200, seed: int = 0, space: Space | None = None,
                states: States = CLOUDS) -> pd.DataFrame:
    """AND balance per size: exact ``|log q_a − log q_b|`` at ``t_end`` on AND samples
    (``gap_and_nats``) against the same gap on samples of ``a`` alone (``gap_single_nats``),
    and the bias of AND's Itô estimate with ``ito_correction`` (``ito_bias_nats``)."""
    a, b = _members(states)
    mask = size_masks(n, states.sizes, a.max_nodes)
    shape = (n, *a.sample_shape)
    r = superpose([a, b], a.schedule, shape, mode="and", steps=steps, generator=torch.Generator().manual_seed(seed),
                  dtype=torch.float64, mask=mask, space=space, ito_correction=True)
    la, lb = a.log_prob(r.x, r.t_end, mask), b.log_prob(r.x, r.t_end, mask)
    ref = sample(a, a.schedule, shape, steps=steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                 mask=mask, space=space)
    ra, rb = a.log_prob(ref.x, r.t_end, mask), b.log_prob(ref.x, r.t_end, mask)
    return _per_size(mask, a.space.dof(shape, mask), gap_and_nats=(la - lb).abs(), gap_single_nats=(ra - rb).abs(),
                     ito_bias_nats=r.log_q[:, 0] - la, max_off=off_subspace(r.x, mask, a.space)).assign(
        check=f"and_{states.label}_balance", steps=steps, seed=seed)


def barycenter_by_size(lam: Sequence[float] = (0.2, 0.5, 0.3), n: int = 1200, n_mc: int = 24000, seed: int = 0,
                       space: Space | None = None, states: States = CLOUDS) -> pd.DataFrame:
    """λ recovery on three single-Gaussian members of equal variance whose exact barycenter
    ``N(Σ λ_i μ_i(n), c I)`` (per size) is the target (MATH §2): one fit per size and one on
    the mixed-size batch (``nodes = 0``)."""
    schedule = VPSchedule()
    members = [CentredGaussianMixture(_templates(1, states.sizes, states.channels, seed + 10 + i, 1.5,
                                                 pair_channels=states.pair_channels), [0.5],
                                      schedule=schedule, name=f"g{i}", space=states.space) for i in range(3)]
    lam_t = torch.tensor(lam, dtype=torch.float64)
    target = CentredGaussianMixture({s: sum(w * m.means(s) for w, m in zip(lam_t, members)) for s in states.sizes},
                                    [0.5], schedule=schedule, space=states.space)
    g = torch.Generator().manual_seed(seed)
    x, mask = target.sample(n, g, sizes=size_masks(n, states.sizes, target.max_nodes).sum(1))
    dof = target.space.dof(x.shape, mask)
    rows = []
    for nodes in (*states.sizes, 0):
        sel = torch.ones(n, dtype=torch.bool) if nodes == 0 else mask.sum(1) == nodes
        fit = fit_barycenter_weights(members, x[sel], schedule, n_mc=n_mc, generator=g, mask=mask[sel], space=space)
        rows.append({"nodes": nodes, "dof": int(dof[sel][0]) if nodes else 0, "n": int(sel.sum()),
                     "max_abs_weight_err": float((fit.weights - lam_t).abs().max()),
                     **{f"lambda_{i}": float(w) for i, w in enumerate(fit.weights)}})
    return pd.DataFrame(rows).assign(check=f"barycenter_{states.label}", n_mc=n_mc, seed=seed)


def _product_members(states: States) -> tuple[CentredGaussianMixture, CentredGaussianMixture, dict[int, Tensor]]:
    """Two mixtures with modes ±2u (variances 0.3 / 0.6) and ±1.5u (variance 1), u a unit
    template on the subspace of each size: the product's mass on the side ``<x, u> > 0``
    depends on D through the mode variances (``v^{D/2}``), so every size has its own answer."""
    us = {}
    for n in states.sizes:
        u = torch.randn(1, n, states.width(n), generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        u = states.space.project(u, None)[0]
        us[n] = u / u.norm()
    a = CentredGaussianMixture({n: torch.stack([2.0 * u, -2.0 * u]) for n, u in us.items()}, [0.3, 0.6], [0.5, 0.5],
                               name="plus", space=states.space)
    c = CentredGaussianMixture({n: torch.stack([1.5 * u, -1.5 * u]) for n, u in us.items()}, [1.0, 1.0], [0.5, 0.5],
                               name="both", space=states.space)
    return a, c, us


def _product_mass(a: CentredGaussianMixture, c: CentredGaussianMixture, n: int, dof: float, u: Tensor,
                  t: float) -> float:
    """P(<x, u> > 0) under the exact product ``q_a q_c`` at ``t`` on the D-dimensional subspace of
    size n: a mixture of the pairwise products of the isotropic components (MATH §7)."""
    al, s2 = float(a.schedule.alpha(t)), float(a.schedule.sigma2(t))
    comps = [[(float(m.weights[k]), al * m.means(n)[k], al**2 * float(m.variances[k]) + s2)
              for k in range(len(m.weights))] for m in (a, c)]
    logw, pos = [], []
    for (wa, ma, va), (wc, mc, vc) in itertools.product(*comps):
        v = 1.0 / (1.0 / va + 1.0 / vc)
        mu = v * (ma / va + mc / vc)
        logw.append(math.log(wa * wc) - 0.5 * float((ma - mc).pow(2).sum()) / (va + vc)
                    - 0.5 * dof * math.log(2 * math.pi * (va + vc)))
        pos.append(0.5 * (1 + math.erf(float((mu * u).sum()) / math.sqrt(2 * v))))
    return float((torch.softmax(torch.tensor(logw), 0) * torch.tensor(pos)).sum())


def fkc_by_size(n: int = 600, steps: int = 200, seed: int = 0, corrected: bool = True, space: Space | None = None,
                states: States = CLOUDS) -> pd.DataFrame:
    """The FKC product ``q_a q_c`` per size (MATH §7) against its exact mass on the side ``<x, u> > 0``.

    ``corrected=False`` is the plain reverse SDE on the score sum (no weights), which misses
    it. Columns: ``measured``, ``expected``, ``abs_err``, ``lineages`` (distinct start particles
    left), ``sizes_kept`` (1 when every particle descends from a start particle of its size; the
    ``n`` column then equals the drawn counts) and ``max_off``.
    """
    a, c, us = _product_members(states)
    mask = size_masks(n, states.sizes, a.max_nodes)
    r = fkc_sample([a, c], a.schedule, (n, *a.sample_shape), steps=steps, generator=torch.Generator().manual_seed(seed),
                   t_end=T_END_FKC, dtype=torch.float64, mask=mask, space=space,
                   noise_ratio=3.0 if corrected else 1.0, resampling="systematic" if corrected else "none",
                   final_resample=corrected)
    got = r.mask.sum(1)
    u = torch.zeros_like(r.x)
    for size, un in us.items():
        u[got == size] = a.space.resize(un, a.max_nodes)
    side = (a.space.inner(r.x, u, r.mask) > 0).double()
    kept = mask.sum(1)[r.ancestors] == got
    dof = a.space.dof(r.x.shape, r.mask)
    out = _per_size(r.mask, dof, measured=side, sizes_kept=kept.double(), max_off=off_subspace(r.x, r.mask, a.space))
    out["expected"] = [_product_mass(a, c, s, d, us[s], T_END_FKC) for s, d in zip(out["nodes"], out["dof"])]
    out["abs_err"] = (out["measured"] - out["expected"]).abs()
    out["lineages"] = [int(r.ancestors[got == s].unique().numel()) for s in out["nodes"]]
    return out.assign(check=f"fkc_{states.label}_product" if corrected else f"score_sum_{states.label}_product",
                      steps=steps, seed=seed)
