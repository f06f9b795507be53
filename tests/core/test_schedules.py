import math

import pytest
import torch

import molfuse as mf


def test_vp_closed_forms(sched):
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    la = -0.5 * (0.1 * t + 0.5 * 19.9 * t**2)
    assert torch.allclose(sched.log_alpha(t), la)
    assert torch.allclose(sched.sigma(t) ** 2 + sched.alpha(t) ** 2, torch.ones_like(t))
    assert torch.allclose(sched.g2(t), 0.1 + 19.9 * t)  # VP: g^2 = beta
    assert float(sched.sigma(0.0)) == 0.0


def test_generic_g2_matches_beta(sched):
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    generic = mf.Schedule.g2(sched, t)  # 2 sigma^2 d/dt log(sigma/alpha), MATH §1
    assert torch.allclose(generic, sched.beta(t), rtol=1e-10)


def test_dlog_alpha_is_derivative(sched):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    fd = (sched.log_alpha(t + h) - sched.log_alpha(t - h)) / (2 * h)
    assert torch.allclose(fd, sched.dlog_alpha(t), atol=1e-7)


def test_equality_and_errors():
    assert mf.VPSchedule() == mf.VPSchedule(0.1, 20.0)
    assert mf.VPSchedule() != mf.VPSchedule(0.1, 10.0)
    with pytest.raises(ValueError, match="beta_min"):
        mf.VPSchedule(-1.0, 20.0)
    with pytest.raises(ValueError, match="beta_max"):
        mf.VPSchedule(1.0, 0.5)
    assert not math.isnan(float(mf.VPSchedule().sigma(1.0)))
