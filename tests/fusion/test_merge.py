"""Weight merging beyond averaging: weighted sums, task arithmetic, TIES, DARE against hand-computed
values; refusals; held-out DSM with common random numbers; rank correlations (MATH §5)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from molfuse import CentredGaussianMixture, GaussianMixture, MergeError, PointCloud, VPSchedule, WeightsError
from molfuse.base.seeds import derive_seed
from molfuse.evaluation.ranks import kendall_tau, rank_correlation
from molfuse.fusion.merge import RULES, dare, merge, task_arithmetic, task_vectors, ties, weighted_sum
from molfuse.fusion.selection import choose_by_heldout, heldout_dsm, heldout_losses

F32 = torch.float32


def _sd(w, m=None, steps=7, dtype=F32) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict(w=torch.tensor(w, dtype=dtype))
    if m is not None:
        out["m"] = torch.tensor(m, dtype=dtype)
    out["steps"] = torch.tensor(steps)
    return out


# The hand-worked TIES example: parent 10 everywhere, three task vectors (integers, exact in float32).
PARENT = _sd([10.0] * 6, [[10.0, 10.0], [10.0, 10.0]])
TAUS = [([5, -2, 0, 3, -1, 4], [[4, -1], [2, 0]]),
        ([-6, 1, 2, -3, 1, 2], [[2, 3], [-1, 1]]),
        ([2, 3, -4, 1, -5, 0], [[-1, -1], [3, -3]])]
CHILDREN = [_sd([10.0 + v for v in w], [[10.0 + v for v in row] for row in m]) for w, m in TAUS]


def _close(out, expect: dict) -> None:
    for k, v in expect.items():
        assert out[k].dtype == F32
        torch.testing.assert_close(out[k], torch.tensor(v, dtype=F32), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ linear rules
def test_weighted_sum_off_the_simplex_and_default_uniform():
    a, b = _sd([1.0, 2.0]), _sd([3.0, -4.0])
    _close(weighted_sum([a, b], [2.0, -0.5]), {"w": [2 - 1.5, 4 + 2.0]})
    _close(weighted_sum([a, b]), {"w": [2.0, -1.0]})  # default 1/N: the soup
    assert int(weighted_sum([a, b], [3.0, 3.0])["steps"]) == 7


def test_task_vectors_and_task_arithmetic_by_hand():
    taus = task_vectors(PARENT, CHILDREN[:2])
    assert list(taus[0]) == ["w", "m"] and taus[0]["w"].dtype == torch.float64  # integer buffer left out
    torch.testing.assert_close(taus[1]["w"], torch.tensor(TAUS[1][0], dtype=torch.float64))
    out = task_arithmetic(PARENT, CHILDREN[:2], weights=[1.0, 0.5], scale=2.0)
    # θ_p + 2 (τ1 + 0.5 τ2)
    _close(out, {"w": [10 + 2 * (5 - 3), 10 + 2 * (-2 + 0.5), 10 + 2 * 1, 10 + 2 * 1.5, 10 + 2 * -0.5, 10 + 2 * 5],
                 "m": [[10 + 2 * 5, 10 + 2 * 0.5], [10 + 2 * 1.5, 10 + 2 * 0.5]]})
    _close(task_arithmetic(PARENT, CHILDREN[:1]), {"w": [15, 8, 10, 13, 9, 14]})  # default: weights 1, scale 1
    assert list(out) == ["w", "m", "steps"] and int(out["steps"]) == 7


# ------------------------------------------------------------------ TIES
def test_ties_by_hand_with_a_tie_at_the_threshold():
    # density 0.5: keep k = 3 of 6 entries of w and k = 2 of 4 of m, per tensor.
    # trimmed w: τ̂1 = [5, 0, 0, 3, 0, 4]; τ̂2 = [-6, 0, 2, -3, 0, 0] (|2| at entries 2 and 5 tie for the
    #            third place: the earlier entry 2 is kept); τ̂3 = [0, 3, -4, 0, -5, 0]
    # trimmed m: τ̂1 = [[4, 0], [2, 0]]; τ̂2 = [[2, 3], [0, 0]]; τ̂3 = [[0, 0], [3, -3]] (|3| twice, both kept)
    # elected w: Σ τ̂ = [-1, 3, -2, 0, -5, 4] -> γ = [-, +, -, 0, -, +]
    # elected m: Σ τ̂ = [[6, 3], [5, -3]] -> γ = [[+, +], [+, -]]
    # disjoint means: w = [-6, 3, -4, 0, -5, 4]; m = [[(4+2)/2, 3], [(2+3)/2, -3]]
    out = ties(PARENT, CHILDREN, density=0.5, scale=0.5)
    _close(out, {"w": [10 - 3, 10 + 1.5, 10 - 2, 10, 10 - 2.5, 10 + 2], "m": [[11.5, 11.5], [11.25, 8.5]]})
    assert int(out["steps"]) == 7 and list(out) == list(PARENT)


def test_ties_with_weights_by_hand():
    # weights (1, 2, 1): elected w: Σ w τ̂ = [5-12, 3, 4-4, 3-6, -5, 4] -> γ = [-, +, 0, -, -, +]
    #   -> w = [-6, 3, 0, -3, -5, 4]; m: Σ w τ̂ = [[8, 6], [5, -3]]: entry (0, 0) agrees for τ̂1 = 4 and
    #   τ̂2 = 2: (1*4 + 2*2) / (1 + 2) = 8/3; (1, 0): (1*2 + 1*3) / 2 = 2.5
    out = ties(PARENT, CHILDREN, density=0.5, weights=[1.0, 2.0, 1.0])
    _close(out, {"w": [4, 13, 10, 7, 5, 14], "m": [[10 + 8 / 3, 13], [12.5, 7]]})


def test_ties_trim_keeps_exactly_k_and_breaks_ties_by_position():
    parent = OrderedDict(x=torch.zeros(5))
    child = OrderedDict(x=torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]))  # five equal magnitudes
    out = ties(parent, [child], density=0.4)  # k = 2; one child: θ = θ_p + τ̂
    torch.testing.assert_close(out["x"], torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0]), rtol=0, atol=0)
    ten = OrderedDict(x=torch.arange(1.0, 11.0))
    kept = ties(OrderedDict(x=torch.zeros(10)), [ten], density=0.3)["x"]  # 0.3 * 10 keeps 3, not 4
    assert torch.equal(kept, torch.tensor([0.0] * 7 + [8.0, 9.0, 10.0]))
    assert torch.equal(ties(OrderedDict(x=torch.zeros(10)), [ten], density=1.0)["x"], ten["x"])


def test_ties_of_identical_children_is_their_task_vector():
    out = ties(PARENT, [CHILDREN[0]] * 3, density=1.0)
    _close(out, {"w": [15, 8, 10, 13, 9, 14]})


# ------------------------------------------------------------------ DARE
def _dare_by_hand(parent, children, drop, seed, weights, scale):
    """The documented draws: u ~ U[0, 1) from derive_seed(seed, "dare", i, key), keep u >= drop."""
    out = {}
    for key in ("w", "m"):
        acc = parent[key].double().clone()
        for i, (child, wi) in enumerate(zip(children, weights)):
            g = torch.Generator().manual_seed(derive_seed(seed, "dare", i, key))
            u = torch.rand(parent[key].shape, generator=g, dtype=torch.float64)
            tau = child[key].double() - parent[key].double()
            acc += scale * wi * torch.where(u >= drop, tau / (1 - drop), torch.zeros_like(tau))
        out[key] = acc.float()
    return out


def test_dare_drop_zero_is_task_arithmetic_exactly():
    for key, v in dare(PARENT, CHILDREN, drop=0.0, weights=[1.0, 0.5, 2.0], scale=0.7).items():
        assert torch.equal(v, task_arithmetic(PARENT, CHILDREN, weights=[1.0, 0.5, 2.0], scale=0.7)[key])


def test_dare_equals_the_documented_draws_and_is_reproducible():
    out = dare(PARENT, CHILDREN, drop=0.5, seed=3, weights=[1.0, 2.0, 0.5], scale=0.8)
    for key, v in _dare_by_hand(PARENT, CHILDREN, 0.5, 3, [1.0, 2.0, 0.5], 0.8).items():
        torch.testing.assert_close(out[key], v, rtol=0, atol=1e-6)
    again = dare(PARENT, CHILDREN, drop=0.5, seed=3, weights=[1.0, 2.0, 0.5], scale=0.8)
    other = dare(PARENT, CHILDREN, drop=0.5, seed=4, weights=[1.0, 2.0, 0.5], scale=0.8)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert not torch.equal(out["w"], other["w"])
    assert int(out["steps"]) == 7 and out["w"].dtype == F32


def test_dare_masks_do_not_depend_on_dict_order():
    flip = lambda sd: OrderedDict(reversed(list(sd.items())))  # noqa: E731
    a = dare(PARENT, CHILDREN, drop=0.6, seed=1)
    b = dare(flip(PARENT), [flip(c) for c in CHILDREN], drop=0.6, seed=1)
    assert list(b) == ["steps", "m", "w"] and all(torch.equal(a[k], b[k]) for k in a)


def test_dare_is_unbiased_for_task_arithmetic():
    g = torch.Generator().manual_seed(0)
    parent = OrderedDict(x=torch.randn(64, generator=g))
    children = [OrderedDict(x=parent["x"] + torch.randn(64, generator=g)) for _ in range(2)]
    draws = torch.stack([dare(parent, children, drop=0.5, seed=s, weights=[0.7, 0.3])["x"].double()
                         for s in range(400)])
    target = task_arithmetic(parent, children, weights=[0.7, 0.3])["x"].double()
    se = draws.std(0) / math.sqrt(draws.shape[0])  # the measured spread of the mean over seeds
    assert ((draws.mean(0) - target).abs() <= 5 * se + 1e-6).all()
    assert float(draws.std(0).mean()) > 0.1  # the draws really vary


def test_dare_ties_by_hand_with_no_drop():
    # drop 0 leaves the task vectors; combine ties with density 0.5 is then TIES itself
    a = dare(PARENT, CHILDREN, drop=0.0, combine="ties", density=0.5)
    b = ties(PARENT, CHILDREN, density=0.5)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ dtypes, dispatcher
def test_dtype_preserved_and_computed_in_float64():
    p = OrderedDict(x=torch.tensor([2048.0, 1.0], dtype=torch.float16))
    c = OrderedDict(x=torch.tensor([2050.0, 1.5], dtype=torch.float16))
    out = task_arithmetic(p, [c, c], weights=[0.5, 0.5])
    assert out["x"].dtype == torch.float16
    torch.testing.assert_close(out["x"], c["x"], rtol=0, atol=0)
    for rule, opts in (("ties", {"density": 1.0}), ("dare", {"drop": 0.0}), ("task_arithmetic", {})):
        assert merge(rule, PARENT, CHILDREN, **opts)["w"].dtype == F32


def test_merge_dispatches_and_keeps_metadata():
    parent = OrderedDict(PARENT)
    parent._metadata = {"": {"version": 1}}
    out = merge("ties", parent, CHILDREN, density=0.5, scale=0.5)
    assert out._metadata == {"": {"version": 1}}
    _close(out, {"w": [7, 11.5, 8, 10, 7.5, 12]})
    _close(merge("weighted_sum", None, CHILDREN[:2], weights=[1.0, 1.0]), {"w": [19, 19, 22, 20, 20, 26]})
    _close(merge("weighted_sum", PARENT, CHILDREN[:2], weights=[0.5, 0.5]), {"w": [9.5, 9.5, 11, 10, 10, 13]})
    assert RULES == ("weighted_sum", "task_arithmetic", "ties", "dare")


# ------------------------------------------------------------------ refusals
def _refused(match, fn, *args, error=MergeError, **kwargs):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def test_structural_refusals_name_keys_and_labels():
    missing = OrderedDict((k, v) for k, v in CHILDREN[0].items() if k != "m")
    extra = OrderedDict(CHILDREN[1], extra=torch.zeros(1))
    with pytest.raises(MergeError) as e:
        ties(PARENT, [missing, extra], density=0.0)  # every problem at once
    msg = str(e.value)
    assert "density must lie in (0, 1]; got 0.0" in msg
    assert "child 0 is missing keys 'm' (present in the parent)" in msg
    assert "child 1 has extra keys 'extra' (absent from the parent)" in msg
    _refused(r"key 'w': shapes differ, the parent \(6,\) vs child 0 \(5,\)", task_arithmetic, PARENT,
             [_sd([1.0] * 5, [[1.0, 1.0], [1.0, 1.0]])])
    _refused(r"key 'w': dtypes differ, the parent torch.float32 vs child 1 torch.float64", dare, PARENT,
             [CHILDREN[0], _sd([1.0] * 6, [[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)])
    _refused(r"key 'steps': integer buffers must agree", task_vectors, PARENT,
             [_sd([1.0] * 6, [[1.0, 1.0], [1.0, 1.0]], steps=8)])
    _refused("needs at least 1 child", ties, PARENT, [])
    _refused("needs at least 1 state dict", weighted_sum, [])
    _refused(r"member 1 is missing keys 'm'", weighted_sum, [CHILDREN[0], missing])
    _refused(r"the parent is a NoneType", task_arithmetic, None, CHILDREN)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan"), "0.5"])
def test_density_out_of_range(density):
    _refused(r"density must lie in \(0, 1\]", ties, PARENT, CHILDREN, density=density)
    _refused(r"density must lie in \(0, 1\]", dare, PARENT, CHILDREN, combine="ties", density=density)


@pytest.mark.parametrize("drop", [1.0, -0.1, 2.0, float("inf")])
def test_drop_out_of_range(drop):
    _refused(r"drop must lie in \[0, 1\)", dare, PARENT, CHILDREN, drop=drop)


def test_option_and_rule_refusals():
    _refused("unknown merge rule 'average'; known: weighted_sum, task_arithmetic, ties, dare", merge, "average",
             PARENT, CHILDREN)
    _refused("ties does not take option.s. drop; it takes density, scale, weights", merge, "ties", PARENT, CHILDREN,
             drop=0.5)
    _refused("ties needs the parent state dict", merge, "ties", None, CHILDREN)
    _refused("combine must be one of sum, ties; got 'mean'", dare, PARENT, CHILDREN, combine="mean")
    _refused("seed must be an integer", dare, PARENT, CHILDREN, seed=1.5)
    _refused("scale must be a finite number", task_arithmetic, PARENT, CHILDREN, scale=float("nan"))
    _refused("TIES weights must be > 0", ties, PARENT, CHILDREN, weights=[1.0, 0.0, 1.0])
    _refused("3 weights for 2 models", task_arithmetic, PARENT, CHILDREN[:2], weights=[1, 1, 1], error=WeightsError)
    _refused("weights must be finite", weighted_sum, CHILDREN[:2], [1.0, float("inf")], error=WeightsError)
    _refused("weights must be finite", dare, PARENT, CHILDREN[:2], weights=[float("nan"), 1.0], error=WeightsError)


# ------------------------------------------------------------------ held-out DSM
def test_heldout_dsm_uses_common_random_numbers_and_ranks_the_true_model_first():
    sched = VPSchedule()
    truth = GaussianMixture([[0.0, 0.0], [3.0, 0.0]], [0.5, 0.5], schedule=sched)
    twin = GaussianMixture([[0.0, 0.0], [3.0, 0.0]], [0.5, 0.5], schedule=sched)
    worse = GaussianMixture([[0.5, 0.5], [2.0, 0.0]], [1.0, 1.0], schedule=sched)
    x0 = truth.sample(300, torch.Generator().manual_seed(0)).float()
    models = {"truth": truth, "twin": twin, "worse": worse}
    table = heldout_dsm(models, x0, sched, n_t=4, seed=1, batch_size=128)
    assert table["truth"] == table["twin"]  # identical models see identical (t, eps)
    assert table["truth"][0] < table["worse"][0] and 0 < table["truth"][1] < 0.1
    best, again = choose_by_heldout(models, x0, sched, n_t=4, seed=1, batch_size=128)
    assert best == "truth" and again == table
    per = heldout_losses(models, x0, sched, n_t=4, seed=1, batch_size=128)
    diff = per["worse"] - per["truth"]  # paired: far more precise than the separate standard errors
    assert float(diff.mean()) > 5 * float(diff.std() / math.sqrt(diff.numel()))
    assert heldout_dsm({"alone": worse}, x0, sched, n_t=4, seed=1, batch_size=128)["alone"] == table["worse"]
    assert heldout_dsm(models, x0, sched, n_t=4, seed=2, batch_size=128)["truth"] != table["truth"]


def test_heldout_dsm_on_point_clouds_with_masks():
    sched = VPSchedule()
    tpl = {3: torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(0)),
           4: torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(1))}
    truth = CentredGaussianMixture(tpl, [0.3], schedule=sched)
    worse = CentredGaussianMixture(tpl, [1.5], schedule=sched)
    x0, mask = truth.sample(64, torch.Generator().manual_seed(2))
    table = heldout_dsm([truth, worse], x0.float(), sched, mask=mask, space=PointCloud(3), n_t=2)
    assert set(table) == {"model 0", "model 1"} and table["model 0"][0] < table["model 1"][0]


# ------------------------------------------------------------------ rank correlation
def test_rank_correlation_and_kendall_by_hand_with_ties():
    a, b = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    # ranks of b: [1, 2, 3.5, 5, 3.5]; centred: a [-2, -1, 0, 1, 2], b [-2, -1, .5, 2, .5]: ρ = 8 / sqrt(10 · 9.5)
    assert rank_correlation(a, b) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    # pairs: 8 concordant, 1 discordant (3, 4), 1 tied in b (2, 4): τ_b = 7 / sqrt(10 · 9)
    assert kendall_tau(a, b) == pytest.approx(7 / math.sqrt(90), abs=1e-12)
    assert rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau([1, 2, 3], [4, 4, 4]))
    for fn in (rank_correlation, kendall_tau):
        _refused("different lengths", fn, [1, 2, 3], [1, 2], error=ValueError)
        _refused("at least 3 pairs", fn, [1, 2], [1, 2], error=ValueError)
        _refused("finite", fn, [1, 2, float("nan")], [1, 2, 3], error=ValueError)


def test_rank_correlation_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.randint(0, 6, (25,), generator=g).tolist()  # many ties
        b = (torch.tensor(a) + torch.randint(0, 4, (25,), generator=g)).tolist()
        assert rank_correlation(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
