"""Closed-form checks on masked, centred point clouds of mixed sizes in one padded batch (MATH §6).

Which check catches which mistake (MATH §6): a wrong D shifts absolute log q (Itô and ODE
likelihood) by about 6 nats per missing dimension but cancels in OR / AND κ. Noise that is
not centred would let the centre of mass drift; molfuse's samplers re-project the state every
step (so the drift cannot happen, and ``max_off`` checks it), and the uncentred start then
shows as a log q about 1.5 nats too low (½ E|z_com|² = 3/2) at every size, which the Itô
band below catches.
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


def _band(bias, dof):
    # The Euler-Maruyama bias of the Itô estimate at 200 steps grows with D (MATH §6). Measured over
    # seeds 0-4, 200 paths per size: 0.44-0.83 / 0.95-1.35 / 1.85-2.35 nats at D = 6 / 12 / 21 for
    # the right sampler, -1.09..-0.63 / -0.54..-0.14 / 0.42..0.87 with uncentred noise, about -17
    # with a wrong D. The band 0.055 D .. 0.13 D + 0.35 separates them at every size.
    return (bias > 0.055 * dof) & (bias < 0.13 * dof + 0.35)


def _ito_ok(t):
    return bool((_band(t["bias_nats"], t["dof"]) & (t["max_off"] < 1e-9)).all())


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
    assert not _ito_ok(ec.ito_by_size(space=Uncentred(3)))  # the start is off the subspace


def test_ode_likelihood_per_size_and_a_wrong_dof():
    good = ec.likelihood_by_size()  # the mixture's own log q_1 ends the integral: errors about 1e-6 nats
    assert (good["max_abs_err_nats"] < 1e-3).all(), good
    wrong = ec.likelihood_by_size(space=WrongDof(3))
    assert (wrong["mae_nats"] > 10).all()


def test_hutchinson_likelihood_is_unbiased_on_the_subspace():
    # one Rademacher probe per sample: per-sample errors of ~10 nats (the centring couples the
    # coordinates, so the probe is not exact as on a diagonal Jacobian), unbiased per size
    t = ec.likelihood_by_size(n=90, steps=40, divergence="hutchinson")
    assert (t["bias_nats"].abs() < 3 * t["se_bias_nats"] + 0.2).all() and (t["mae_nats"] > 1).all(), t


def test_or_proportions_per_size():
    t = ec.or_by_size()
    assert (t["z"].abs() < 3).all() and (t["measured"] - 0.8).abs().max() < 0.06, t
    # a wrong D cancels in κ (both members shift alike): the proportions do not see it
    assert (ec.or_by_size(space=WrongDof(3))["z"].abs() < 3).all()


def test_and_balance_per_size_and_uncentred_noise():
    t = ec.and_by_size()
    assert (t["gap_and_nats"] < 0.05 * t["gap_single_nats"]).all() and (t["gap_and_nats"] < 0.5).all(), t
    assert _band(t["ito_bias_nats"], t["dof"]).all() and (t["max_off"] < 1e-9).all()
    bad = ec.and_by_size(space=Uncentred(3))
    assert not _band(bad["ito_bias_nats"], bad["dof"]).all()


def test_barycenter_weights_recovered_per_size_and_mixed():
    t = ec.barycenter_by_size()
    assert list(t["nodes"]) == [3, 5, 8, 0] and (t["max_abs_weight_err"] < 0.03).all(), t
