import math

import pytest
import torch

import molfuse as mf
from molfuse import fusion
from molfuse.evaluation import exactness


def test_or_reproduces_mixture_proportions():
    row = exactness.or_proportions(omega=0.8, n=4000, steps=200, seed=1).iloc[0]
    assert abs(row.measured - 0.8) < 4 * row.std_err, row


def test_or_large_temperature_is_argmax():
    table = exactness.or_argmax(temperatures=(1.0, 100.0), n=1000, steps=200).set_index("temperature")
    assert table.loc[100.0, "mean_max_kappa"] > 0.99
    assert table.loc[1.0, "mean_max_kappa"] < 0.9  # overlapping members: T = 1 stays mixed
    assert table.loc[100.0, "argmax_agreement"] > 0.98


@pytest.mark.parametrize("k", [2, 3])
def test_and_keeps_densities_equal(k):
    row = exactness.and_gap(k=k, n=1000, steps=200).iloc[0]
    assert row.max_abs_gap_ito_nats < 1e-5  # the estimates move together by construction
    assert row.mean_abs_gap_exact_nats < 0.15 * row.mean_abs_gap_single_model_nats
    assert row.fallback_steps_per_sample < 1.0
    # Solving κ with the step's noise projects that noise away: the plain Itô estimate is
    # biased low by O(1) nats; the exact tr(P ∇s) correction removes the bias.
    assert row.ito_bias_nats < -2.0
    assert abs(row.ito_bias_corrected_nats) < 0.3


def test_and_defaults_to_the_exact_estimator(sched):
    """``superpose(mode="and")`` left to its default tracks log q with the exact correction (MATH §4),
    as workflows do: its Itô estimate is within 0.3 nats of the exact density (seeds 0-2: 0.20-0.25
    at 100 steps); the uncorrected estimator, opted into as ``ito_correction=False``, is 4.8-4.9
    nats low."""
    a = mf.GaussianMixture([[-1.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], schedule=sched)
    b = mf.GaussianMixture([[1.0, 0.5]], [[[1.0, 0.3], [0.3, 0.5]]], schedule=sched)

    def bias(**kw):
        r = fusion.superpose([a, b], sched, (300, 2), mode="and", steps=100,
                             generator=torch.Generator().manual_seed(0), **kw)
        return (r.log_q - torch.stack([m.log_prob(r.x, r.t_end) for m in (a, b)], 1)).mean(0)

    assert bias().abs().max() < 0.3
    assert (bias(ito_correction=False) < -3.0).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "or", "ito_correction": True}, "only applies to mode 'and'"),
    ({"mode": "and", "ito_correction": "no"}, "must be true, false or left out"),
])
def test_ito_correction_is_and_only(sched, kwargs, match):
    a, b = (mf.GaussianMixture([[m]], [1.0], schedule=sched) for m in (-1.0, 1.0))
    with pytest.raises(mf.SamplerError, match=match):
        fusion.superpose([a, b], sched, (4, 1), steps=20, **kwargs)


def test_and_refuses_a_member_it_cannot_differentiate(sched):
    """A network run without autograd (detached) cannot give the correction's ∇s: named, not a zero."""
    a = mf.GaussianMixture([[-1.0]], [1.0], schedule=sched, name="a")

    class Frozen:
        name = "frozen"

        def __call__(self, x, t, cond=None):
            return a(x, t).detach()

    with pytest.raises(mf.SamplerError, match=r"score of 'frozen' is not differentiable .* ito_correction=False"):
        fusion.superpose([a, Frozen()], sched, (4, 1), mode="and", steps=20)
    fusion.superpose([a, Frozen()], sched, (4, 1), mode="and", steps=20, ito_correction=False)


def test_and_degenerate_system_falls_back_and_counts(sched):
    a = mf.GaussianMixture([[0.0, 0.0]], [1.0], schedule=sched)
    g = torch.Generator().manual_seed(0)
    r = fusion.superpose([a, a], sched, (64, 2), mode="and", steps=30, generator=g)
    assert (r.fallbacks == 30).all()
    assert torch.allclose(r.kappa, torch.full_like(r.kappa, 0.5))
    single = mf.sample(a, sched, (64, 2), steps=30, generator=torch.Generator().manual_seed(0)).x
    assert torch.allclose(r.x, single, atol=1e-5)
    b = mf.GaussianMixture([[1.0, 0.0]], [1.0], schedule=sched)
    r3 = fusion.superpose([a, a, b], sched, (16, 2), mode="and", steps=10, generator=g)
    assert (r3.fallbacks == 10).all()


def _increments(s, z, kappa, dtau=0.01, g2=3.0):
    """Member-specific part of the Itô increment after a step with weights kappa (MATH §3)."""
    drift = g2 * dtau * torch.einsum("nj,njd->nd", kappa, s)
    return -0.5 * g2 * dtau * (s * s).sum(-1) + torch.einsum("nd,nid->ni", z + drift, s)


@pytest.mark.parametrize("k", [2, 4])
def test_and_weights_solve_the_linear_system(k):
    g = torch.Generator().manual_seed(0)
    s, z = torch.randn(7, k, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    kappa, bad, inc_gram = fusion.and_weights(s, z, 0.01, 3.0, torch.zeros(k, dtype=torch.float64))
    assert not bad.any()
    assert torch.allclose(kappa.sum(1), torch.ones(7, dtype=torch.float64))
    inc = _increments(s, z, kappa)
    assert torch.allclose(inc - inc[:, :1], torch.zeros_like(inc), atol=1e-9)
    assert torch.allclose(inc_gram, inc, atol=1e-12)  # the Gram-form increment is the Itô one
    # MATH §4's bordered system gives the same κ
    c = 0.03
    gram = torch.einsum("nid,njd->nij", s, s)
    b = -0.5 * c * torch.diagonal(gram, dim1=1, dim2=2) + torch.einsum("nd,nid->ni", z, s)
    m = torch.zeros(7, k + 1, k + 1, dtype=torch.float64)
    m[:, :k, :k], m[:, :k, k], m[:, k, :k] = c * gram, -1.0, 1.0
    rhs = torch.cat([-b, torch.ones(7, 1, dtype=torch.float64)], 1)
    assert torch.allclose(torch.linalg.solve(m, rhs[..., None])[:, :k, 0], kappa, atol=1e-9)


def test_or_log_q_tracks_exact_density(sched):
    a, b = (mf.GaussianMixture([[m, 0.0]], [0.5], schedule=sched) for m in (-1.5, 1.5))
    g = torch.Generator().manual_seed(0)
    r = fusion.superpose([a, b], sched, (512, 2), mode="or", steps=400, generator=g, dtype=torch.float64)
    exact = torch.stack([a.log_prob(r.x, r.t_end), b.log_prob(r.x, r.t_end)], 1)
    assert float((r.log_q - exact).abs().mean()) < 0.6


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "ode"}, "Itô"), ({"noise_scale": 0.5}, "noise_scale"), ({"mode": "xor"}, "mode"),
    ({"temperature": 0.0}, "temperature"), ({"mode": "and", "temperature": 2.0}, "AND"),
    ({"bias": [0.0]}, "2 models"), ({"steps": 0}, "steps"),
])
def test_refuses_settings_that_break_the_estimator(sched, kwargs, match):
    a, b = (mf.GaussianMixture([[m]], [1.0], schedule=sched) for m in (-1.0, 1.0))
    with pytest.raises((mf.SamplerError, mf.WeightsError), match=match):
        fusion.superpose([a, b], sched, (4, 1), **kwargs)


def test_mixed_conventions_are_refused(sched):
    a = mf.GaussianMixture([[0.0]], [1.0], schedule=sched)
    b = mf.GaussianMixture([[0.0]], [1.0], schedule=mf.VPSchedule(0.1, 10.0))
    with pytest.raises(mf.ConventionError, match="schedule mismatch"):
        fusion.superpose([a, b], sched, (4, 1))
    with pytest.raises(ValueError, match="at least 2"):
        fusion.superpose([a], sched, (4, 1))


def test_bound_members_of_one_network(sched):
    """One conditional network under two conditions is two members (mf.bind)."""
    gms = {0: mf.GaussianMixture([[-2.0]], [0.3], schedule=sched), 1: mf.GaussianMixture([[2.0]], [0.3], schedule=sched)}

    def net(x, t, cond=None):
        return gms[cond](x, t)

    g = torch.Generator().manual_seed(0)
    r = fusion.superpose([mf.bind(net, 0), mf.bind(net, 1)], sched, (2000, 1), mode="or",
                         bias=[math.log(0.5), math.log(0.5)], steps=200, generator=g)
    assert abs(float((r.x > 0).float().mean()) - 0.5) < 0.05
