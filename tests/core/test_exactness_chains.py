"""The core's closed-form checks on the protein angle state (MATH §6): per-residue (cos θ, sin θ,
cos τ, sin τ) rows of chains of 5, 8 and 12 residues in one padded batch, on
``Chain(CHAIN_TRIMS)`` with ``D = 4n − 10`` (10 / 22 / 38).

Which check catches which mistake (numbers measured over seeds 0-4, see each test): a ``D`` that
counts the 10 trimmed ends of every chain shifts absolute log q by about −59 nats at every length
(Itô and ODE likelihood) but cancels in OR / AND κ, barycenter fits and FKC weights (compared
within one length). Noise that is not projected (on padding residues and trimmed ends) cannot
reach the state, which the samplers re-project every step (``max_off`` checks it), but the start
is off the subspace: log q comes out ½ E|z_off|² = ½ (48 − D) nats too low (−19 / −13 / −5 at
n = 5 / 8 / 12 with padding, −5 everywhere when only the trimmed ends are noisy), which the Itô
bands (alone and inside AND) catch.
"""

import torch

from molfuse.evaluation import exactness_clouds as ec
from molfuse.spaces import Chain

CHAINS = ec.CHAINS
TRIMS = ec.CHAIN_TRIMS


class CountsTrimmed(Chain):
    """Counts the trimmed ends of every real chain as free: D = 4n instead of 4n − 10."""

    def dof(self, shape, mask=None):
        return super().dof(shape, mask) + sum(h + t for h, t in self.trims)


class NoisyEverywhere(Chain):
    """Draws noise on every entry: padding residues and trimmed ends too."""

    def noise(self, shape, mask=None, generator=None, device=None, dtype=None):
        return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)


class NoisyTrims(Chain):
    """Zeroes the padding residues but leaves noise on the trimmed ends of real chains."""

    def noise(self, shape, mask=None, generator=None, device=None, dtype=None):
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)
        return z * mask[..., None].to(z)


def _band(bias, dof):
    # The band of tests/core/test_exactness_clouds.py, unchanged. Measured on chains over seeds 0-4, 200
    # paths per length: 0.83-1.11 / 2.04-2.33 / 3.50-4.03 nats at D = 10 / 22 / 38 (0.083-0.111 D)
    # for the right space; -18.6..-17.6 / -11.3..-10.4 / -1.5..-0.8 with noise everywhere;
    # -4.1..-3.9 / -3.1..-2.6 / -1.5..-0.8 with noise on the trimmed ends; about -58 with D = 4n.
    return (bias > 0.055 * dof) & (bias < 0.13 * dof + 0.35)


def _ito_ok(t):
    return bool((_band(t["bias_nats"], t["dof"]) & (t["max_off"] == 0)).all())


def test_the_dof_column_is_the_chain_space_s():
    t = ec.ito_by_size(n=30, steps=20, states=CHAINS)
    assert list(t["nodes"]) == [5, 8, 12] and list(t["dof"]) == [10, 22, 38]
    assert list(ec.ito_by_size(n=30, steps=20)["dof"]) == [6, 12, 21]  # point clouds: 3(n − 1)


def test_ito_log_q_per_length_and_its_failures():
    good = ec.ito_by_size(states=CHAINS)
    assert _ito_ok(good), good
    assert good["bias_nats"].is_monotonic_increasing  # grows with D
    wrong_d = ec.ito_by_size(space=CountsTrimmed(TRIMS), states=CHAINS)  # same paths, another D
    assert not _band(wrong_d["bias_nats"], wrong_d["dof"]).any()
    shift = (wrong_d["bias_nats"] - good["bias_nats"]).to_numpy()
    assert abs(shift - shift[0]).max() < 1e-9 and shift[0] < -50  # 10 (log α_t_end − log α_1 − ½ log 2π)
    for noisy in (NoisyEverywhere(TRIMS), NoisyTrims(TRIMS)):
        bad = ec.ito_by_size(n=300, space=noisy, states=CHAINS)
        assert not _band(bad["bias_nats"], bad["dof"]).any(), (type(noisy).__name__, bad)
        assert (bad["max_off"] == 0).all()  # re-projected every step: only the start is off


def test_ode_likelihood_per_length_and_a_wrong_dof():
    # The mixture supplies its own log q_1 as the end term (density.end_log_prob): largest error
    # about 1e-6 nats at 60 RK4 steps (seed 0; ending on the N(0, I) prior instead left 0.031 /
    # 0.077 / 0.149 at every step count); -59.4 at every length with D = 4n. The exact divergence
    # costs one backward pass per entry, so 30 steps here, and the wrong D runs with a Hutchinson
    # probe (its per-sample noise is far below 59 nats).
    good = ec.likelihood_by_size(steps=30, states=CHAINS)
    assert list(good["dof"]) == [10, 22, 38] and (good["max_abs_err_nats"] < 1e-3).all(), good
    wrong = ec.likelihood_by_size(n=6, steps=20, divergence="hutchinson", space=CountsTrimmed(TRIMS), states=CHAINS)
    assert (wrong["bias_nats"] < -50).all(), wrong


def test_or_proportions_per_length_and_what_cancels_in_kappa():
    t = ec.or_by_size(states=CHAINS)
    assert (t["z"].abs() < 3).all() and (t["measured"] - 0.8).abs().max() < 0.06, t
    # both members see the same wrong D and the same off-subspace start, so κ and the real
    # entries of every path are unchanged: OR's proportions are blind to both mistakes
    small = dict(n=150, steps=30, states=CHAINS)
    base = ec.or_by_size(**small)["measured"]
    for broken in (CountsTrimmed(TRIMS), NoisyEverywhere(TRIMS)):
        assert (ec.or_by_size(space=broken, **small)["measured"] - base).abs().max() < 0.01


def test_and_balance_per_length_and_unprojected_noise():
    t = ec.and_by_size(states=CHAINS)
    assert (t["gap_and_nats"] < 0.05 * t["gap_single_nats"]).all() and (t["gap_and_nats"] < 0.5).all(), t
    assert _band(t["ito_bias_nats"], t["dof"]).all() and (t["max_off"] == 0).all()
    bad = ec.and_by_size(n=150, space=NoisyTrims(TRIMS), states=CHAINS)
    assert not _band(bad["ito_bias_nats"], bad["dof"]).any(), bad
    assert (bad["gap_and_nats"] < 0.05 * bad["gap_single_nats"]).all()  # the balance itself does not see it


def test_barycenter_weights_recovered_per_length_and_mixed():
    # measured over seeds 0-4: 0.006-0.016 / 0.005-0.015 / 0.002-0.011 / 0.003-0.005 (mixed)
    t = ec.barycenter_by_size(states=CHAINS)
    assert list(t["nodes"]) == [5, 8, 12, 0] and (t["max_abs_weight_err"] < 0.03).all(), t
    # the fit sees ε only through <σ s_i, ε> with projected scores: noise off the subspace does not enter
    small = dict(n=150, n_mc=1500, states=CHAINS)
    base = ec.barycenter_by_size(**small)["max_abs_weight_err"]
    noisy = ec.barycenter_by_size(space=NoisyEverywhere(TRIMS), **small)["max_abs_weight_err"]
    assert (noisy - base).abs().max() < 1e-9


def test_fkc_product_per_length_and_the_plain_score_sum_misses_it():
    """The exact product's mass on ``<x, u> > 0`` is 0.733 / 0.905 / 0.980 at D = 10 / 22 / 38 (the
    mode variances enter as v^{D/2}). Measured over seeds 0-4, 300 particles per length, 200 steps:
    FKC errors 0.003-0.100 / 0.022-0.059 / 0.003-0.016 (mean over lengths 0.009-0.054), the plain
    score sum 0.070-0.153 / 0.159-0.219 / 0.120-0.154 (mean 0.116-0.169). A wrong D and noise off
    the subspace leave FKC unchanged (weights are compared within one length; the state is
    re-projected), so they are the Itô and likelihood checks' to catch."""
    fkc = ec.fkc_by_size(n=900, states=CHAINS)
    plain = ec.fkc_by_size(n=900, corrected=False, states=CHAINS)
    for t in (fkc, plain):
        assert list(t["n"]) == [300, 300, 300] and (t["sizes_kept"] == 1).all() and (t["max_off"] == 0).all(), t
    assert fkc["abs_err"].mean() < 0.08 and fkc["abs_err"].max() < 0.13, fkc
    assert plain["abs_err"].mean() > 0.1 and plain["abs_err"].mean() > 2 * fkc["abs_err"].mean(), (fkc, plain)
    assert (fkc["lineages"] < 300).all() and (plain["lineages"] == 300).all()  # resampled vs not
