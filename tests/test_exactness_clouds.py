"""Closed-form checks on masked, centred point clouds of mixed sizes in one padded batch (MATH §6).

Which check catches which mistake (MATH §6): a wrong D shifts absolute log q (Itô and ODE
likelihood) but cancels in OR / AND κ; noise that is not centred leaves densities alone and
moves the centre of mass, which the Itô, AND and OR runs measure.
"""

import math

import pytest
import torch

from molfuse.evaluation import exactness_clouds as ec
from molfuse.spaces import PointCloud


class WrongDof(PointCloud):
    """Counts the centre-of-mass directions as free: D = 3n instead of 3(n - 1)."""

    def dof(self, shape, mask=None):
        return super().dof(shape, mask) + self.centred


class Uncentred(PointCloud):
    """Draws noise that is masked but not centred."""

    def noise(self, shape, mask=None, generator=None, device=None, dtype=None):
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)
        return z * mask[..., None].to(z) if mask is not None else z


def _ito_ok(t):
    # measured at 200 steps, 200 paths per size: bias 0.5 / 1.4 / 2.0 nats at D = 6 / 12 / 21 (the
    # Euler-Maruyama bias grows with D, MATH §6); a wrong D shifts it by ~6 nats per missing dimension
    return bool(((t["bias_nats"].abs() < 0.5 + 0.12 * t["dof"]) & (t["max_com"] < 1e-9)).all())


def test_ito_log_q_per_size_and_its_failures():
    good = ec.ito_by_size()
    assert list(good["nodes"]) == [3, 5, 8] and _ito_ok(good), good
    assert (good["bias_nats"] > 0).all() and good["bias_nats"].is_monotonic_increasing  # grows with D
    finer = ec.ito_by_size(steps=800)
    assert (finer["bias_nats"].abs() < good["bias_nats"].abs()).all()  # and shrinks with steps
    wrong_d = ec.ito_by_size(space=WrongDof(3))
    assert not _ito_ok(wrong_d)
    shift = (wrong_d["bias_nats"] - good["bias_nats"]).to_numpy()
    assert shift == pytest.approx(shift[0]) and shift[0] < -15  # 3 (log α_t_end − log α_1 − ½ log 2π)
    assert not _ito_ok(ec.ito_by_size(space=Uncentred(3)))  # the centre of mass drifts


def test_ode_likelihood_per_size_and_a_wrong_dof():
    good = ec.likelihood_by_size()
    assert (good["max_abs_err_nats"] < 0.2).all(), good
    wrong = ec.likelihood_by_size(space=WrongDof(3))
    assert (wrong["mae_nats"] > 10).all()


def test_or_proportions_per_size():
    t = ec.or_by_size()
    assert (t["z"].abs() < 3).all() and (t["measured"] - 0.8).abs().max() < 0.06, t
    # a wrong D cancels in κ (both members shift alike): the proportions do not see it
    assert (ec.or_by_size(space=WrongDof(3))["z"].abs() < 3).all()


def test_and_balance_per_size_and_uncentred_noise():
    t = ec.and_by_size()
    assert (t["gap_and_nats"] < 0.05 * t["gap_single_nats"]).all() and (t["gap_and_nats"] < 0.5).all(), t
    assert (t["ito_bias_nats"].abs() < 0.5 + 0.12 * t["dof"]).all() and (t["max_com"] < 1e-9).all()
    assert (ec.and_by_size(space=Uncentred(3))["max_com"] > 0.1).all()


def test_barycenter_weights_recovered_per_size_and_mixed():
    t = ec.barycenter_by_size()
    assert list(t["nodes"]) == [3, 5, 8, 0] and (t["max_abs_weight_err"] < 0.03).all(), t
