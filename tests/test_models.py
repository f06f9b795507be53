import math

import pytest
import torch

import molfuse as mf


def test_score_is_gradient_of_log_prob(sched, gen):
    gm = mf.GaussianMixture(torch.randn(3, 4, generator=gen), torch.rand(3, 4, generator=gen) + 0.3,
                            [0.2, 0.3, 0.5], schedule=sched)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    for t in [0.0, 0.2, 0.7]:
        (grad,) = torch.autograd.grad(gm.log_prob(x, t).sum(), x)
        assert torch.allclose(gm(x.detach(), torch.full((16,), t)), grad, atol=1e-10)


def test_log_prob_closed_form_1d(sched):
    gm = mf.GaussianMixture([[1.0]], [2.0], schedule=sched)
    t = 0.4
    a, s2 = float(sched.alpha(t)), float(sched.sigma2(t))
    var = a * a * 2.0 + s2
    x = torch.tensor([[0.3]], dtype=torch.float64)
    expect = -0.5 * (0.3 - a) ** 2 / var - 0.5 * math.log(2 * math.pi * var)
    assert abs(float(gm.log_prob(x, t)) - expect) < 1e-12


def test_per_sample_times_match_scalar_times(sched, gen):
    gm = mf.GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.4, 0.9], schedule=sched)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.2, 0.5, 0.7, 0.99], dtype=torch.float64)
    batched = gm.log_prob(x, t)
    single = torch.cat([gm.log_prob(x[i:i + 1], float(t[i])) for i in range(5)])
    assert torch.allclose(batched, single)


def test_sample_moments(gen):
    gm = mf.GaussianMixture([[-3.0], [3.0]], [0.25, 0.25], [0.25, 0.75])
    x = gm.sample(20000, generator=gen)
    assert abs(float((x > 0).double().mean()) - 0.75) < 0.02
    assert abs(float(x.mean()) - 1.5) < 0.06


def test_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        mf.GaussianMixture([[0.0]], [1.0], [0.5])
    with pytest.raises(ValueError, match="covs"):
        mf.GaussianMixture([[0.0, 0.0]], [[1.0, 1.0, 1.0]])
    gm = mf.GaussianMixture([[0.0, 0.0]], [1.0])
    with pytest.raises(mf.ConventionError, match="dim 2"):
        gm(torch.zeros(3, 5), torch.zeros(3))
