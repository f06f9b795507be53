import pytest
import torch

import molfuse as mf
from molfuse.density import ito_increment, score_and_divergence
from molfuse.errors import SamplerError
from molfuse.evaluation import exactness


def test_log_likelihood_exact_matches_closed_form():
    row = exactness.likelihood_check(dim=4, n=64, steps=100, divergence="exact").iloc[0]
    assert row.max_abs_err_nats < 0.02, row


def test_log_likelihood_hutchinson_is_unbiased_within_error():
    row = exactness.likelihood_check(dim=4, n=256, steps=100, divergence="hutchinson").iloc[0]
    # one Rademacher probe per path: noisy per sample (about 1 nat here) but unbiased
    assert abs(row.bias_nats) < 4 * row.bias_std_err_nats + 0.02, row
    assert row.mae_nats > 0.05  # it is an estimate, not the exact trace


def test_exact_divergence_matches_trace(sched, gen):
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    gm = mf.GaussianMixture([[0.0, 0.0, 0.0]], (a @ a.T + torch.eye(3, dtype=torch.float64))[None], schedule=sched)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    fn = mf.score_fn(gm, sched)
    _, div = score_and_divergence(fn, x, 0.3, method="exact")
    _, cov = gm.marginal(0.3)
    assert torch.allclose(div, -torch.linalg.inv(cov[0]).trace().expand(4))


def test_ito_increment_single_and_stacked_agree(gen):
    x, dx = torch.randn(5, 2, 3, generator=gen), torch.randn(5, 2, 3, generator=gen)
    s1, s2 = torch.randn(5, 2, 3, generator=gen), torch.randn(5, 2, 3, generator=gen)
    both = ito_increment(x, dx, torch.stack([s1, s2], 1), 0.01, -1.0, 2.0)
    assert both.shape == (5, 2)
    assert torch.allclose(both[:, 0], ito_increment(x, dx, s1, 0.01, -1.0, 2.0))
    assert torch.allclose(both[:, 1], ito_increment(x, dx, s2, 0.01, -1.0, 2.0))
    # MATH §3 by hand for one sample
    xf, dxf, sf = x[0].flatten().double(), dx[0].flatten().double(), s1[0].flatten().double()
    hand = 6 * 0.01 * -1.0 - 0.01 * 0.5 * 2.0 * sf @ sf + (dxf + 0.01 * -1.0 * xf) @ sf
    assert torch.isclose(both[0, 0], hand)


def test_ito_increment_keeps_the_member_axis_for_one_member(gen):
    """Stacked scores (batch, K, ...) give (batch, K) for every K, one member included; unstacked
    (batch, ...) give (batch,). The shape decides, not the number of entries."""
    x, dx, s = (torch.randn(6, 2, 3, generator=gen) for _ in range(3))
    one = ito_increment(x, dx, s[:, None], 0.01, -1.0, 2.0)
    assert one.shape == (6, 1)
    assert torch.equal(one[:, 0], ito_increment(x, dx, s, 0.01, -1.0, 2.0))
    with pytest.raises(SamplerError, match=r"scores of shape \(6, 3, 2\) for states \(6, 2, 3\)"):
        ito_increment(x, dx, s.transpose(1, 2), 0.01, -1.0, 2.0)


def test_log_likelihood_ends_on_the_models_own_log_q1():
    """A model that knows its ``log q_1`` (``log_prob``) supplies the end term. On centred clouds of 3,
    5 and 8 nodes the ODE likelihood is then within 1e-4 nats of the exact density (measured: max
    4e-5 at 30 steps); ending on N(0, I), as the same model behind ``bind`` (which hides
    ``log_prob``) does, leaves 1e-2 that no step count removes (seed 0: mean 8e-3, max 1.5e-2)."""
    from molfuse.evaluation import exactness_clouds as ec

    a, _ = ec.cloud_members()
    x0, mask = a.sample(12, torch.Generator().manual_seed(0), sizes=ec.size_masks(12, ec.SIZES, a.max_nodes).sum(1))
    exact = a.log_prob(x0, 1e-5, mask)
    own = mf.log_likelihood(a, x0, a.schedule, steps=30, t_start=1e-5, mask=mask) - exact
    prior = mf.log_likelihood(mf.bind(a, None), x0, a.schedule, steps=30, t_start=1e-5, mask=mask) - exact
    assert own.abs().max() < 1e-4 and prior.abs().mean() > 3e-3, (own, prior)


def test_a_log_prob_of_the_wrong_shape_is_named(sched):
    class Flat(mf.GaussianMixture):
        def log_prob(self, x, t=0.0):
            return super().log_prob(x, t)[:1]

    m = Flat([[0.0]], [1.0], schedule=sched, name="flat")
    with pytest.raises(SamplerError, match=r"flat\.log_prob\(x, 1\.0\) must give \(batch,\) = \(3,\) finite nats; "
                                           r"got shape \(1,\)"):
        mf.log_likelihood(m, torch.zeros(3, 1, dtype=torch.float64), sched, steps=2)


def test_log_likelihood_power_grid_is_exact_with_fewer_steps(sched, gen):
    # a narrow component (std 0.05): its score changes fastest near t = 0, where rho > 1 crowds the steps
    gm = mf.GaussianMixture([[0.0, 0.0], [1.0, -1.0]], [0.0025, 0.0025], schedule=sched)
    x = gm.sample(64, generator=gen)
    exact = gm.log_prob(x, torch.full((64,), 1e-5, dtype=torch.float64))
    err = {rho: (mf.log_likelihood(gm, x, sched, steps=20, rho=rho) - exact).abs().max().item() for rho in (1.0, 7.0)}
    assert err[7.0] < 0.05 and err[7.0] < err[1.0] / 10, err


def test_log_likelihood_refuses_a_grid_exponent_below_one(sched):
    gm = mf.GaussianMixture([[0.0]], [1.0], schedule=sched)
    with pytest.raises(mf.SamplerError, match="rho"):
        mf.log_likelihood(gm, torch.zeros(2, 1, dtype=torch.float64), sched, steps=4, rho=0.5)
