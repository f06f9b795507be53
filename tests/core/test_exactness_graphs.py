"""The core's closed-form checks on molecule graphs (MATH §6, pair features): centred positions,
one atom channel and two bond channels per unordered pair, molecules of 3, 5 and 8 atoms in one
padded batch on ``MoleculeGraph(4, 2)``, ``D = 4n − 3 + n(n − 1)`` (15 / 37 / 85).

The two classic mistakes with pair features, and which check catches each (numbers measured, see
each test):

- both copies of each pair stored, as a symmetric (N, N, B) tensor would be, with the plain sums
  (:class:`BothCopies`: noise drawn once per pair and mirrored, D counting both copies). The
  samples themselves come out right (the mirrored copy follows the stored one), but every pair
  term of the Itô estimate, of OR's κ and AND's balance counts twice: the Itô log q is off by
  −4 / −12 / −39 nats, OR's share drops from 0.8 to about 0.71, AND's exact gap grows more than
  tenfold and the ODE likelihood is off by ``ΔD (log α_1 − log α_t0)``, ``ΔD = n(n − 1)``;
- a wrong D (:class:`CountsDiagonal`: the diagonal i = j counted as free pairs, D + 2n): absolute
  log q shifts by about −5.9 nats per extra dimension in the Itô estimate and by −5.0 in the ODE
  likelihood, but it cancels in OR / AND κ (both members shift alike; shown on OR), as for point
  clouds, so only the absolute checks catch it.
"""

import math

import torch

from molfuse.evaluation import exactness_clouds as ec
from molfuse.pairs import pair_block
from molfuse.spaces import MoleculeGraph, Space

GRAPHS = ec.GRAPHS


def _nodes(shape, mask):
    return torch.full((shape[0],), float(shape[1]), dtype=torch.float64) if mask is None else mask.sum(1).double()


class BothCopies(MoleculeGraph):
    """Stores each pair twice: the projection mirrors the upper triangle onto the lower, D counts
    B n(n − 1) pair entries, and inner products are the plain sums over both copies."""

    def project(self, v, mask=None):
        p = super().project(v, mask)
        upper = pair_block(p, self.node_channels, self.pair_channels)
        both = upper + upper.transpose(-3, -2)
        return torch.cat([p[..., :self.node_channels], both.reshape(*p.shape[:-1], -1)], -1)

    def dof(self, shape, mask=None):
        n = _nodes(shape, mask)
        return super().dof(shape, mask) + self.pair_channels * n * (n - 1) / 2

    def inner(self, a, b, mask=None, lead=0):
        return Space.inner(self, a, b, mask, lead)


class CountsDiagonal(MoleculeGraph):
    """Counts the diagonal pairs (i, i) as free: D = 4n − 3 + n(n + 1) instead of 4n − 3 + n(n − 1)."""

    def dof(self, shape, mask=None):
        return super().dof(shape, mask) + self.pair_channels * _nodes(shape, mask)


BOTH, DIAG = BothCopies(4, 2), CountsDiagonal(4, 2)
EXTRA_BOTH = [6, 20, 56]  # ΔD = B n(n − 1) / 2 at n = 3, 5, 8
EXTRA_DIAG = [6, 10, 16]  # ΔD = B n


def _band(bias, dof):
    # The band of tests/core/test_exactness_clouds.py, unchanged. Measured on graphs over seeds 0-4, 200
    # paths per size: 1.54-1.61 / 3.09-4.32 / 7.94-8.71 nats at D = 15 / 37 / 85 (0.08-0.12 D) for
    # the right space; -3.6 / -11.9 / -38.8 storing both copies; -34 / -55 / -87 counting the diagonal.
    return (bias > 0.055 * dof) & (bias < 0.13 * dof + 0.35)


def _ito_ok(t):
    return bool((_band(t["bias_nats"], t["dof"]) & (t["max_off"] < 1e-9)).all())


def test_the_graph_members_live_on_the_subspace_with_symmetric_pairs():
    a, b = ec.cloud_members(sizes=GRAPHS.sizes, channels=4, space=GRAPHS.space, pair_channels=2)
    assert a.sample_shape == (8, 4 + 8 * 2) and a.space == MoleculeGraph(4, 2)
    x, mask = a.sample(30, torch.Generator().manual_seed(0), sizes=ec.size_masks(30, GRAPHS.sizes, 8).sum(1))
    assert list(GRAPHS.space.dof(x.shape, mask)[:3]) == [15, 37, 85]
    off = ~GRAPHS.space.entries(x.shape, mask)
    assert torch.equal(x[off], torch.zeros_like(x[off]))  # padding, lower triangle, diagonal: zero
    assert (x - GRAPHS.space.project(x, mask)).abs().max() < 1e-12  # and the positions centred
    _, _, pairs = GRAPHS.space.unpack(x, mask)
    assert torch.equal(pairs, pairs.transpose(1, 2))
    assert torch.equal(b.means(5), b.space.resize(b.space.resize(b.means(5), 8), 5))


def test_ito_log_q_per_size_and_both_mistakes():
    good = ec.ito_by_size(states=GRAPHS)
    assert list(good["dof"]) == [15, 37, 85] and _ito_ok(good), good
    assert good["bias_nats"].is_monotonic_increasing  # grows with D
    wrong_d = ec.ito_by_size(space=DIAG, states=GRAPHS)  # the same paths, another D
    assert not _band(wrong_d["bias_nats"], wrong_d["dof"]).any(), wrong_d
    per_dim = (wrong_d["bias_nats"] - good["bias_nats"]).to_numpy() / EXTRA_DIAG
    assert abs(per_dim - per_dim[0]).max() < 1e-9 and -6.0 < per_dim[0] < -5.8  # Σ dlogα Δτ − ½ log 2π
    both = ec.ito_by_size(n=150, space=BOTH, states=GRAPHS)
    assert not _band(both["bias_nats"], both["dof"]).any() and (both["bias_nats"] < -3).all(), both


def test_ode_likelihood_per_size_and_both_mistakes():
    # The mixture supplies its own log q_1 as the end term: largest error 6e-4 nats at 20 RK4 steps
    # (seed 0). The exact divergence costs one backward pass per entry (8 x 20), hence few steps.
    good = ec.likelihood_by_size(n=6, steps=20, states=GRAPHS)
    assert list(good["dof"]) == [15, 37, 85] and (good["max_abs_err_nats"] < 1e-3).all(), good
    # Both mistakes leave the path and the divergence as they are and add ΔD (log α_1 − log α_t0)
    # = −5.025 ΔD nats whatever the step count: shown on the same 2-step paths (0.4-1.4 nats of
    # integration error there, against 30-281 nats of the mistakes).
    short = ec.likelihood_by_size(n=3, steps=2, states=GRAPHS)
    for broken, extra in ((BOTH, EXTRA_BOTH), (DIAG, EXTRA_DIAG)):
        wrong = ec.likelihood_by_size(n=3, steps=2, space=broken, states=GRAPHS)
        shift = (wrong["bias_nats"] - short["bias_nats"]).to_numpy()
        assert abs(shift + 5.025 * torch.tensor(extra).numpy()).max() < 1e-3, (type(broken).__name__, shift)
        assert (wrong["bias_nats"] < -25).all()


def _pooled_z(t):
    """The shares' error pooled over sizes, in standard errors."""
    return float((t["measured"] - t["expected"]).sum() / math.sqrt((t["std_err"] ** 2).sum()))


def test_or_proportions_per_size_and_both_copies_of_a_pair():
    t = ec.or_by_size(n=900, states=GRAPHS)
    assert (t["z"].abs() < 3).all() and abs(_pooled_z(t)) < 3 and (t["measured"] - 0.8).abs().max() < 0.06, t
    # storing both copies doubles the pair terms of log q_a − log q_b in κ: the share drops to about 0.71.
    # Measured over seeds 0-4 (right space, 900 paths) and 0-2 (both copies, 600): pooled z −1.4..1.4
    # and −5.5..−4.3, shares 0.77-0.85 and 0.68-0.74
    both = ec.or_by_size(n=600, space=BOTH, states=GRAPHS)
    assert _pooled_z(both) < -3 and both["measured"].mean() < 0.75, both
    # a wrong D shifts both members' log q alike: κ and every path are unchanged
    small = dict(n=150, steps=30, states=GRAPHS)
    assert (ec.or_by_size(space=DIAG, **small)["measured"] - ec.or_by_size(**small)["measured"]).abs().max() == 0


def test_and_balance_per_size_and_both_copies_of_a_pair():
    t = ec.and_by_size(n=300, states=GRAPHS)
    assert (t["gap_and_nats"] < 0.05 * t["gap_single_nats"]).all() and (t["gap_and_nats"] < 0.5).all(), t
    assert _band(t["ito_bias_nats"], t["dof"]).all() and (t["max_off"] < 1e-9).all()
    # both copies: AND balances estimates whose pair terms count twice, so the exact gap is 1.8 / 2.8
    # / 4.3 nats (0.13 / 0.19 / 0.34 right) and its Itô estimate is far out of the band
    both = ec.and_by_size(n=150, space=BOTH, states=GRAPHS)
    assert (both["gap_and_nats"] > 5 * t["gap_and_nats"]).all() and (both["gap_and_nats"] > 1).all(), both
    assert not _band(both["ito_bias_nats"], both["dof"]).any()


def test_barycenter_weights_recovered_per_size_and_mixed():
    # measured over seeds 0-2 (600 molecules, 6000 Monte Carlo draws): largest errors 0.006-0.019
    # per size, 0.001-0.003 mixed. Counting pairs twice does not move λ here (0.005-0.012): the
    # target is an exact barycenter, so every coordinate's optimum is the same λ and weighting pair
    # coordinates twice changes no optimum; it is the Itô, OR and AND checks' to catch.
    t = ec.barycenter_by_size(n=600, n_mc=6000, states=GRAPHS)
    assert list(t["nodes"]) == [3, 5, 8, 0] and list(t["dof"]) == [15, 37, 85, 0], t
    assert (t["max_abs_weight_err"] < 0.03).all(), t
