"""Closed-form checks on masked, centred point clouds of mixed sizes in one padded batch (MATH §6).

The members are :class:`~molfuse.models.CentredGaussianMixture` models over 3-D clouds of
3, 5 and 8 nodes (padded to 8), so every estimate has an exact value per size: the Itô
log q and the ODE likelihood (which see the degrees of freedom ``D = 3(n − 1)``), OR
proportions, AND balance and barycenter weights. Each function returns one row per size;
``space=`` swaps in another state space (the tests pass deliberately broken ones — a wrong
``D``, noise that is not centred — and check that these tables then fail).
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch
from torch import Tensor

from ..density import log_likelihood
from ..fusion import fit_barycenter_weights, superpose
from ..models import CentredGaussianMixture
from ..sampling import sample
from ..schedules import Schedule, VPSchedule
from ..spaces import Space

__all__ = ["SIZES", "cloud_members", "size_masks", "ito_by_size", "likelihood_by_size", "or_by_size", "and_by_size",
           "barycenter_by_size", "centre_of_mass"]

SIZES = (3, 5, 8)


def _templates(k: int, sizes: Sequence[int], channels: int, seed: int, spread: float, shift: float = 0.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in sizes:
        mu = spread * torch.randn(k, n, channels, generator=g, dtype=torch.float64)
        mu[..., 0] += shift * torch.linspace(-1, 1, n, dtype=torch.float64)  # stretched along x
        out[n] = mu
    return out


def cloud_members(schedule: Schedule | None = None, sizes: Sequence[int] = SIZES, channels: int = 3,
                  seed: int = 0) -> tuple[CentredGaussianMixture, CentredGaussianMixture]:
    """Two members: ``a`` (two components, variances 0.3 / 0.5) and ``b`` (one, stretched, 0.4)."""
    schedule = schedule or VPSchedule()
    a = CentredGaussianMixture(_templates(2, sizes, channels, seed, 1.0), [0.3, 0.5], [0.6, 0.4], schedule=schedule,
                               name="a", max_nodes=max(sizes))
    b = CentredGaussianMixture(_templates(1, sizes, channels, seed + 1, 0.5, shift=2.5), [0.4], schedule=schedule,
                               name="b", max_nodes=max(sizes))
    return a, b


def size_masks(n: int, sizes: Sequence[int], max_nodes: int) -> Tensor:
    """(n, max_nodes) masks with the sizes in turn (equal counts, interleaved in one batch)."""
    counts = torch.as_tensor(list(sizes)).repeat(math.ceil(n / len(sizes)))[:n]
    return torch.arange(max_nodes)[None, :] < counts[:, None]


def centre_of_mass(x: Tensor, mask: Tensor) -> Tensor:
    """(n,) largest |centre of mass| component of the first three channels over real nodes."""
    m = mask.to(x.dtype)[..., None]
    return ((x[..., :3] * m).sum(1) / m.sum(1)).abs().amax(-1)


def _reduce(key: str, v: Tensor) -> float:
    """``max_*``: the largest value; ``se_*``: the standard error of the mean; else the mean."""
    if key.startswith("max_"):
        return float(v.max())
    if key.startswith("se_"):
        return float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean())


def _per_size(mask: Tensor, **columns: Tensor) -> pd.DataFrame:
    sizes = mask.sum(1)
    rows = []
    for n in sorted(set(sizes.tolist())):
        sel = sizes == n
        rows.append({"nodes": n, "dof": 3 * (n - 1), "n": int(sel.sum()), **{k: _reduce(k, v[sel]) for k, v in columns.items()}})
    return pd.DataFrame(rows)


def ito_by_size(n: int = 600, steps: int = 200, seed: int = 0, space: Space | None = None) -> pd.DataFrame:
    """Itô ``log q`` along reverse-SDE paths of member ``a`` vs its exact ``log q_{t_end}`` (MATH §3, §6).

    Columns per size: ``mae_nats``, ``bias_nats`` (estimate − exact) and ``max_com`` (the
    largest centre-of-mass component of the samples: 0 on the subspace).
    """
    a, _ = cloud_members()
    mask = size_masks(n, SIZES, a.max_nodes)
    r = sample(a, a.schedule, (n, *a.sample_shape), steps=steps, generator=torch.Generator().manual_seed(seed),
               track_log_density=True, dtype=torch.float64, mask=mask, space=space)
    err = r.log_density - a.log_prob(a.space.project(r.x, mask), r.t_end, mask)
    return _per_size(mask, mae_nats=err.abs(), bias_nats=err, max_com=centre_of_mass(r.x, mask)).assign(
        check="ito_cloud", steps=steps, seed=seed)


def likelihood_by_size(n: int = 24, steps: int = 60, seed: int = 0, divergence: str = "exact",
                       space: Space | None = None) -> pd.DataFrame:
    """Probability-flow ODE ``log p`` (exact divergence on the subspace) vs the exact density."""
    a, _ = cloud_members()
    g = torch.Generator().manual_seed(seed)
    x0, mask = a.sample(n, g, sizes=size_masks(n, SIZES, a.max_nodes).sum(1))
    t0 = 1e-5
    ll = log_likelihood(a, x0, a.schedule, steps=steps, divergence=divergence, generator=g, t_start=t0, mask=mask,
                        space=space)
    err = ll - a.log_prob(x0, t0, mask)
    return _per_size(mask, mae_nats=err.abs(), bias_nats=err, se_bias_nats=err, max_abs_err_nats=err.abs()).assign(
        check=f"likelihood_cloud_{divergence}", steps=steps, seed=seed)


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
               space: Space | None = None) -> pd.DataFrame:
    """OR with ``ℓ = log ω`` reproduces the mixture's share per size (MATH §4): ``measured``
    (OR samples) against ``expected`` (exact mixture draws, 4n of them), with its z-score."""
    a, b = cloud_members()
    mask = size_masks(n, SIZES, a.max_nodes)
    g = torch.Generator().manual_seed(seed)
    r = superpose([a, b], a.schedule, (n, *a.sample_shape), mode="or", weights=[omega, 1 - omega], steps=steps,
                  generator=g, dtype=torch.float64, mask=mask, space=space)
    x = a.space.project(r.x, mask)
    measured = (a.log_prob(x, r.t_end, mask) > b.log_prob(x, r.t_end, mask)).double()
    ref_mask = size_masks(4 * n, SIZES, a.max_nodes)
    expected = _exact_or_share(a, b, omega, ref_mask, r.t_end, torch.Generator().manual_seed(seed + 7))
    out = _per_size(mask, measured=measured)
    ref = _per_size(ref_mask, expected=expected).set_index("nodes")["expected"]
    out["expected"] = out["nodes"].map(ref)
    p = out["expected"].clip(0.01, 0.99)
    out["std_err"] = (p * (1 - p) / out["n"] + p * (1 - p) / (4 * out["n"])).pow(0.5)
    out["z"] = (out["measured"] - out["expected"]) / out["std_err"]
    return out.assign(check="or_cloud_share", omega=omega, steps=steps, seed=seed)


def and_by_size(n: int = 600, steps: int = 200, seed: int = 0, space: Space | None = None) -> pd.DataFrame:
    """AND balance per size: exact ``|log q_a − log q_b|`` at ``t_end`` on AND samples
    (``gap_and_nats``) against the same gap on samples of ``a`` alone (``gap_single_nats``),
    and the bias of AND's Itô estimate with ``ito_correction`` (``ito_bias_nats``)."""
    a, b = cloud_members()
    mask = size_masks(n, SIZES, a.max_nodes)
    shape = (n, *a.sample_shape)
    r = superpose([a, b], a.schedule, shape, mode="and", steps=steps, generator=torch.Generator().manual_seed(seed),
                  dtype=torch.float64, mask=mask, space=space, ito_correction=True)
    x = a.space.project(r.x, mask)
    la, lb = a.log_prob(x, r.t_end, mask), b.log_prob(x, r.t_end, mask)
    ref = sample(a, a.schedule, shape, steps=steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                 mask=mask, space=space)
    ra, rb = a.log_prob(ref.x, r.t_end, mask), b.log_prob(ref.x, r.t_end, mask)
    return _per_size(mask, gap_and_nats=(la - lb).abs(), gap_single_nats=(ra - rb).abs(),
                     ito_bias_nats=r.log_q[:, 0] - la, max_com=centre_of_mass(r.x, mask)).assign(
        check="and_cloud_balance", steps=steps, seed=seed)


def barycenter_by_size(lam: Sequence[float] = (0.2, 0.5, 0.3), n: int = 1200, n_mc: int = 24000, seed: int = 0,
                       space: Space | None = None) -> pd.DataFrame:
    """λ recovery on three single-Gaussian members of equal variance whose exact barycenter
    ``N(Σ λ_i μ_i(n), c I)`` (per size) is the target (MATH §2): one fit per size and one on
    the mixed-size batch (``nodes = 0``)."""
    schedule = VPSchedule()
    members = [CentredGaussianMixture(_templates(1, SIZES, 3, seed + 10 + i, 1.5), [0.5], schedule=schedule,
                                      name=f"g{i}") for i in range(3)]
    lam_t = torch.tensor(lam, dtype=torch.float64)
    target = CentredGaussianMixture({s: sum(w * m._means[m._index[s], :, :s] for w, m in zip(lam_t, members))
                                     for s in SIZES}, [0.5], schedule=schedule)
    g = torch.Generator().manual_seed(seed)
    x, mask = target.sample(n, g, sizes=size_masks(n, SIZES, target.max_nodes).sum(1))
    rows = []
    for nodes in (*SIZES, 0):
        sel = torch.ones(n, dtype=torch.bool) if nodes == 0 else mask.sum(1) == nodes
        fit = fit_barycenter_weights(members, x[sel], schedule, n_mc=n_mc, generator=g, mask=mask[sel], space=space)
        rows.append({"nodes": nodes, "n": int(sel.sum()), "max_abs_weight_err": float((fit.weights - lam_t).abs().max()),
                     **{f"lambda_{i}": float(w) for i, w in enumerate(fit.weights)}})
    return pd.DataFrame(rows).assign(check="barycenter_cloud", n_mc=n_mc, seed=seed)
