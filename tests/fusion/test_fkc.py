"""Feynman–Kac correctors (MATH §7) against closed forms, in float64.

Deterministic: the weight rate is the residual of the Feynman–Kac PDE (finite differences on
Gaussian mixtures) for any proposal noise; its Itô form matches to round-off. Statistical: over
seeds, the corrected sampler is close to the exact product / power / guided target and the
plain score sum is not. The thresholds sit between the measured spreads of the two (docstrings).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from molfuse import CentredGaussianMixture, GaussianMixture
from molfuse.density import ito_increment
from molfuse.errors import SamplerError
from molfuse.fusion.fkc import fkc_log_weight_rate, fkc_sample, normalised_ess, resample_indices
from molfuse.schedules import VPSchedule

SCH = VPSchedule()
T_END = 1e-3


def _log_target(models, b, x, t):
    return sum(bi * m.log_prob(x, t) for bi, m in zip(b, models))


CASES = {
    "product": ([GaussianMixture([[-2.0, 0.5], [2.0, -1.0]], [0.5, 0.8], [0.4, 0.6]),
                 GaussianMixture([[-1.0, 0.0], [1.5, 1.0]], [1.0, 0.7], [0.7, 0.3])], [1.0, 1.0]),
    "anneal": ([GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.6, 0.9], [0.3, 0.7])], [3.0]),
    "guidance": ([GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [1.0, 1.0], [0.5, 0.5]),
                  GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [1.0, 1.0], [0.3, 0.7])], [-1.0, 2.0]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sigma2_over_g2", [0.0, 1.0, 3.0])
def test_weight_rate_is_the_feynman_kac_residual(case, sigma2_over_g2):
    """For dx/dτ = −f + c S (c = (g² + σ²)/2) with noise σ, the log-weight rate that keeps
    p · w ∝ Π q^b is −∂_t log π + ∇·v + v·∇ log π − ½σ² (Δ log π + ‖∇ log π‖²); computed here by
    central differences of the exact log-densities, it equals the formula, whatever σ."""
    models, b = CASES[case]
    x = torch.tensor([[0.3, -0.4], [1.7, 0.9], [-2.2, 0.1]], dtype=torch.float64)
    h, ht = 1e-4, 1e-5
    for t in (0.15, 0.5, 0.85):
        dla, g2 = float(SCH.dlog_alpha(t)), float(SCH.g2(t))
        sigma2 = sigma2_over_g2 * g2
        c = 0.5 * (g2 + sigma2)
        lp = lambda y, tt=t: _log_target(models, b, y, tt)  # noqa: E731
        dt_lp = (lp(x, t + ht) - lp(x, t - ht)) / (2 * ht)
        grad, lap = torch.zeros_like(x), torch.zeros(len(x), dtype=torch.float64)
        for d in range(2):
            e = torch.zeros(2, dtype=torch.float64)
            e[d] = h
            up, down, mid = lp(x + e), lp(x - e), lp(x)
            grad[:, d] = (up - down) / (2 * h)
            lap += (up - 2 * mid + down) / h**2
        v = -dla * x + c * grad
        div_v = -dla * 2 + c * lap
        residual = -dt_lp + div_v + (v * grad).sum(1) - 0.5 * sigma2 * (lap + (grad * grad).sum(1))
        scores = torch.stack([m.score(x, t) for m in models], 1)
        rate = fkc_log_weight_rate(scores, torch.tensor(b, dtype=torch.float64), dla, g2, 2)
        assert torch.allclose(rate, residual, rtol=1e-5, atol=1e-4), (case, t, rate, residual)


def test_weight_increment_equals_its_ito_form_to_round_off():
    """With noise g sqrt(Δτ) z: Δ log w = Σ b_i Δ log q^i − ½ g² ‖S‖² Δτ − g sqrt(Δτ) ⟨S, z⟩ − a D Δτ."""
    models, b = CASES["product"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t, dtau = 0.4, 1e-2
    dla, g2 = float(SCH.dlog_alpha(t)), float(SCH.g2(t))
    s = torch.stack([m.score(x, t) for m in models], 1)
    big_s = s.sum(1)
    z = torch.randn(64, 2, generator=g, dtype=torch.float64)
    noise = math.sqrt(g2 * dtau) * z
    dx = (-dla * x + g2 * big_s) * dtau + noise
    ito = ito_increment(x, dx, s, dtau, dla, g2, 2)
    bt = torch.tensor(b, dtype=torch.float64)
    rhs = (ito * bt).sum(1) - 0.5 * g2 * (big_s**2).sum(1) * dtau - (big_s * noise).sum(1) - dla * 2 * dtau
    lhs = fkc_log_weight_rate(s, bt, dla, g2, 2) * dtau
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-12)


def test_ess_and_systematic_resampling():
    assert float(normalised_ess(torch.zeros(10, dtype=torch.float64))) == pytest.approx(1.0)
    lw = torch.tensor([0.0] + [-1e9] * 9, dtype=torch.float64)
    assert float(normalised_ess(lw)) == pytest.approx(0.1)
    assert resample_indices(lw, torch.Generator().manual_seed(0)).tolist() == [0] * 10
    g = torch.Generator().manual_seed(1)
    lw = torch.randn(200, generator=g, dtype=torch.float64) * 2
    expected = 200 * torch.softmax(lw, 0)
    for seed in range(5):  # systematic: every particle gets floor or ceil of n w_j copies
        copies = torch.bincount(resample_indices(lw, torch.Generator().manual_seed(seed)), minlength=200).double()
        assert ((copies >= torch.floor(expected) - 1e-9) & (copies <= torch.ceil(expected) + 1e-9)).all()
    many = torch.stack([torch.bincount(resample_indices(lw, torch.Generator().manual_seed(s), "multinomial"),
                                       minlength=200) for s in range(400)]).double().mean(0)
    assert (many - expected).abs().max() < 0.5  # multinomial: unbiased counts


def _ks(samples: np.ndarray, log_density, lo=-8.0, hi=8.0) -> float:
    xs = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    lp = log_density(xs[:, None])
    cdf = torch.cumsum(torch.exp(lp - lp.max()), 0)
    cdf = (cdf / cdf[-1]).numpy()
    s = np.sort(samples)
    emp = np.arange(1, len(s) + 1) / len(s)
    return float(np.max(np.abs(emp - np.interp(s, xs.numpy(), cdf))))


def _draw(models, b, seed, corrected, n=2000, steps=200, dim=1, noise_ratio=3.0):
    """FKC with extra noise σ² = 3 g² (MATH §7: about half the error of σ = g at equal cost), or the
    plain reverse SDE on the score sum Σ b_i s^i (σ = g, no weights, no resampling)."""
    return fkc_sample(models, SCH, (n, dim), exponents=b, steps=steps, generator=torch.Generator().manual_seed(seed),
                      t_end=T_END, dtype=torch.float64, resampling="systematic" if corrected else "none",
                      final_resample=corrected, noise_ratio=noise_ratio if corrected else 1.0)


STAT_1D = {
    "product": ([GaussianMixture([[-2.0], [2.0]], [0.5, 0.5], [0.5, 0.5]),
                 GaussianMixture([[-1.5], [1.5]], [1.0, 1.0], [0.7, 0.3])], [1.0, 1.0]),
    "anneal_mixture": ([GaussianMixture([[-2.0], [2.0]], [0.6, 0.6], [0.3, 0.7])], [3.0]),
    "guidance_w3": ([GaussianMixture([[-2.0], [2.0]], [1.0, 1.0], [0.5, 0.5]),
                     GaussianMixture([[-2.0], [2.0]], [1.0, 1.0], [0.3, 0.7])], [-2.0, 3.0]),
}


@pytest.mark.parametrize("name", sorted(STAT_1D))
def test_corrected_sampler_matches_the_exact_1d_target_and_the_score_sum_does_not(name):
    """KS distance to the exact target at t_end (its CDF on a grid), n = 2000, 200 steps. Measured
    over seeds 0-4 (FKC / plain score sum): product 0.017-0.028 / 0.067-0.091; q^3 of a mixture
    0.017-0.048 / 0.052-0.066; guidance w = 3 0.016-0.025 / 0.068-0.083. FKC with σ = g instead:
    0.020-0.090, 0.027-0.066, 0.015-0.033 (its worst seeds lose most ancestors)."""
    models, b = STAT_1D[name]
    exact = lambda x: _log_target(models, b, x, T_END)  # noqa: E731
    fkc = [_ks(_draw(models, b, s, True).x[:, 0].numpy(), exact) for s in range(3)]
    plain = [_ks(_draw(models, b, s, False).x[:, 0].numpy(), exact) for s in range(3)]
    assert np.median(fkc) < 0.035 and max(fkc) < 0.05, fkc
    assert min(plain) > 0.045 and np.median(plain) > 1.5 * np.median(fkc), (fkc, plain)


def test_annealing_a_gaussian_gets_its_variance():
    """q = N(1, 1) at t_end: q^3 ∝ N(1, 1/3). Plain 3 s: variance 0.20; FKC with σ² = 3 g²: 0.32-0.39
    over 8 seeds (σ = g collapses to ~100 ancestors in 1 seed of 8: mean 0.59)."""
    q = GaussianMixture([[1.0]], [1.0])
    target = float(q.marginal(T_END)[1][0, 0, 0]) / 3
    fkc = [_draw([q], [3.0], s, True, steps=300) for s in range(3)]
    plain = _draw([q], [3.0], 0, False, steps=300)
    var = [float(r.x.var()) for r in fkc]
    assert np.median(np.abs(np.array(var) - target)) < 0.05 and all(abs(float(r.x.mean()) - 1.0) < 0.1 for r in fkc)
    assert abs(float(plain.x.var()) - target) > 0.1
    assert all(r.resamples > 3 and r.ess.min() < 0.5 for r in fkc)


def test_one_member_keeps_its_log_q_column_at_any_n():
    """Annealing q^3 written as one member (exponent 3) or as three copies (exponents 1): the same
    proposal, weights and draws. One member's log_q is (n, 1), like any K's (n, K) (it was (n, n):
    the member axis was lost and broadcast, n² memory and time), and equals each column of the
    three-member run; the particles keep q^3's variance (seed 0: 0.33 against 0.333)."""
    q = GaussianMixture([[1.0]], [1.0])
    n, kw = 2000, dict(steps=100, t_end=T_END, dtype=torch.float64)
    one = fkc_sample([q], SCH, (n, 1), exponents=[3.0], generator=torch.Generator().manual_seed(0), **kw)
    three = fkc_sample([q, q, q], SCH, (n, 1), generator=torch.Generator().manual_seed(0), **kw)
    assert one.log_q.shape == (n, 1) and three.log_q.shape == (n, 3)
    assert torch.allclose(one.x, three.x) and torch.allclose(one.log_q.expand(n, 3), three.log_q)
    target = float(q.marginal(T_END)[1][0, 0, 0]) / 3
    assert abs(float(one.x.var()) - target) < 0.05 and abs(float(one.x.mean()) - 1.0) < 0.1


def _product_components(a: GaussianMixture, c: GaussianMixture, t: float):
    """The exact product of two isotropic Gaussian mixtures at t: weights, means, variances."""
    (ma, va), (mc, vc) = a.marginal(t), c.marginal(t)
    logw, mus, vs = [], [], []
    for i in range(len(a.weights)):
        for j in range(len(c.weights)):
            sa, sc = float(va[i, 0, 0]), float(vc[j, 0, 0])
            d = ma[i] - mc[j]
            logw.append(math.log(a.weights[i]) + math.log(c.weights[j]) - 0.5 * float(d @ d) / (sa + sc)
                        - 0.5 * a.dim * math.log(2 * math.pi * (sa + sc)))
            v = 1.0 / (1.0 / sa + 1.0 / sc)
            mus.append(v * (ma[i] / sa + mc[j] / sc))
            vs.append(v)
    return torch.softmax(torch.tensor(logw, dtype=torch.float64), 0), torch.stack(mus), torch.tensor(vs)


def test_product_of_two_2d_mixtures():
    """Largest KS distance of the two coordinate marginals to the exact product's (a mixture of
    four isotropic Gaussians). Measured over seeds 0-4: FKC 0.027-0.042, the score sum 0.063-0.089."""
    a = GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5], [0.5, 0.5])
    c = GaussianMixture([[-1.5, 0.0], [1.5, 0.0]], [1.0, 1.0], [0.7, 0.3])
    w, mu, v = _product_components(a, c, T_END)

    def ks(x):
        return max(_ks(x[:, d].numpy(), lambda y, d=d: torch.logsumexp(
            torch.log(w)[None] - 0.5 * (y - mu[None, :, d]) ** 2 / v[None] - 0.5 * torch.log(v)[None], 1))
            for d in range(2))

    fkc = [ks(_draw([a, c], [1.0, 1.0], s, True, dim=2).x) for s in range(3)]
    plain = [ks(_draw([a, c], [1.0, 1.0], s, False, dim=2).x) for s in range(3)]
    assert max(fkc) < 0.05, fkc
    assert min(plain) > 0.055 and np.median(plain) > 1.5 * np.median(fkc), (fkc, plain)


def test_options_are_checked_and_the_result_is_complete():
    q = GaussianMixture([[0.0]], [1.0])
    g = torch.Generator().manual_seed(0)
    with pytest.raises(SamplerError, match="sum to B > 0"):
        fkc_sample([q, q], SCH, (8, 1), exponents=[1.0, -1.0], steps=20, generator=g)
    with pytest.raises(SamplerError, match="2 finite numbers"):
        fkc_sample([q, q], SCH, (8, 1), exponents=[1.0], steps=20, generator=g)
    with pytest.raises(SamplerError, match="ess_threshold"):
        fkc_sample([q], SCH, (8, 1), ess_threshold=1.5, steps=20, generator=g)
    with pytest.raises(SamplerError, match="resampling"):
        fkc_sample([q], SCH, (8, 1), resampling="stratified", steps=20, generator=g)
    with pytest.warns(UserWarning, match="collapses"):
        fkc_sample([q, q], SCH, (8, 1), noise_ratio=0.0, steps=20, generator=g)
    r = fkc_sample([q, q], SCH, (16, 1), steps=30, generator=g, dtype=torch.float64, final_resample=False)
    assert r.x.shape == (16, 1) and r.log_q.shape == (16, 2) and r.ess.shape == (30,)
    assert r.ancestors.shape == (16,) and r.exponents == (1.0, 1.0)
    assert torch.logsumexp(r.log_weight, 0) == pytest.approx(math.log(16))
    assert fkc_sample([q], SCH, (8, 1), noise_ratio=2.0, steps=20, generator=g).log_q is None


def _cloud_members():
    """Two centred mixtures on 3-D clouds of 3 and 5 nodes, modes ±2u (variances 0.3 / 0.6) and
    ±1.5u (variance 1, weights ½ / ½), u a fixed unit template per size."""
    us = {}
    for n in (3, 5):
        u = torch.randn(n, 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        u = u - u.mean(0)
        us[n] = u / u.norm()
    a = CentredGaussianMixture({n: torch.stack([2.0 * u, -2.0 * u]) for n, u in us.items()}, [0.3, 0.6], [0.5, 0.5])
    c = CentredGaussianMixture({n: torch.stack([1.5 * u, -1.5 * u]) for n, u in us.items()}, [1.0, 1.0], [0.5, 0.5])
    return a, c, us


def _exact_cloud_mass(members, n: int, u: Tensor) -> float:
    """P(<x, u> > 0) under the exact product of the members at T_END on the D = 3(n − 1) subspace:
    a mixture of the pairwise products of their isotropic components."""
    al, s2, d = float(SCH.alpha(T_END)), float(SCH.sigma2(T_END)), 3 * n - 3
    comps = [[(float(m.weights[k]), al * m._means[m._index[n], k, :n], al ** 2 * float(m.variances[k]) + s2)
              for k in range(len(m.weights))] for m in members]
    logw, pos = [], []
    for (wa, ma, va), (wc, mc, vc) in itertools.product(*comps):
        v = 1.0 / (1.0 / va + 1.0 / vc)
        mu = v * (ma / va + mc / vc)
        logw.append(math.log(wa * wc) - 0.5 * float((ma - mc).pow(2).sum()) / (va + vc) - 0.5 * d * math.log(2 * math.pi * (va + vc)))
        pos.append(0.5 * (1 + math.erf(float((mu * u).sum()) / math.sqrt(2 * v))))
    return float((torch.softmax(torch.tensor(logw), 0) * torch.tensor(pos)).sum())


def test_point_clouds_of_two_sizes_are_weighted_and_resampled_apart():
    """Clouds of 3 and 5 nodes in one batch (MATH §6). (B − 1) a D differs between sizes by ~5 nats per
    degree of freedom, so weights compared across sizes would wipe out the larger clouds; FKC
    weights and resamples each size apart, the node counts stay as drawn, every output descends
    from a start particle of its size, and the centre of mass stays zero. The exact product's mode
    mass depends on the size (0.645 at n = 3, 0.772 at n = 5: the mode variances enter as v^{D/2}).
    Measured over seeds 0-2 (n = 1000 per size, 200 steps): FKC errors 0.000-0.052 (mean 0.020), the
    plain score sum 0.068-0.156 (mean 0.117)."""
    a, c, us = _cloud_members()
    sizes = torch.tensor([3, 5] * 1000)
    mask = torch.arange(5)[None, :] < sizes[:, None]
    errs = {True: [], False: []}
    for seed in range(3):
        for corrected in (True, False):
            r = fkc_sample([a, c], SCH, (2000, 5, 3), steps=200, generator=torch.Generator().manual_seed(seed),
                           t_end=T_END, dtype=torch.float64, mask=mask, noise_ratio=3.0 if corrected else 1.0,
                           resampling="systematic" if corrected else "none", final_resample=corrected)
            got = r.mask.sum(1)
            assert torch.equal(torch.bincount(got), torch.bincount(sizes))
            assert torch.equal(sizes[r.ancestors], got)
            assert float((r.x * r.mask[..., None]).sum(1).abs().max()) < 1e-9
            assert r.resamples > 10 if corrected else r.resamples == 0
            for n, u in us.items():
                share = float(((r.x[got == n][:, :n] * u).sum((1, 2)) > 0).double().mean())
                errs[corrected].append(abs(share - _exact_cloud_mass([a, c], n, u)))
    fkc, plain = np.array(errs[True]), np.array(errs[False])
    weighted = fkc_sample([a, c], SCH, (2000, 5, 3), steps=20, generator=torch.Generator().manual_seed(0),
                          t_end=T_END, dtype=torch.float64, mask=mask, final_resample=False)
    for n in (3, 5):  # unresampled weights are normalised within each size: logsumexp = log n_size
        rows = weighted.mask.sum(1) == n
        assert abs(float(torch.logsumexp(weighted.log_weight[rows], 0)) - math.log(int(rows.sum()))) < 1e-9
    assert fkc.mean() < 0.045 and fkc.max() < 0.075, fkc
    assert plain.mean() > 0.07 and plain.mean() > 2 * fkc.mean(), (fkc, plain)
