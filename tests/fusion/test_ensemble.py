"""Ensemble rules: exact values, DSM ambiguity decomposition, symmetries (MATH §2)."""

from __future__ import annotations

import itertools

import pytest
import torch

from molfuse import ConventionError, GaussianMixture, VPSchedule, WeightsError
from molfuse.fusion.ensemble import RULES, Ensemble
from molfuse.losses import dsm_loss

SCHED = VPSchedule()
BASE_MEANS = torch.tensor([[1.5, 0.0], [-1.0, 1.0], [0.0, -1.5]], dtype=torch.float64)


def _member(seed: int, name: str) -> GaussianMixture:
    """A 3-component 2-D mixture with means and full covariances perturbed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    means = BASE_MEANS + 0.5 * torch.randn(3, 2, generator=g, dtype=torch.float64)
    a = 0.4 * torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(-1, -2) + 0.1 * torch.eye(2, dtype=torch.float64)
    return GaussianMixture(means, covs, schedule=SCHED, name=name)


class EpsOf:
    """Wrap a score model as an eps predictor (eps = -sigma_t * score, MATH §1)."""

    prediction = "eps"

    def __init__(self, model):
        self.model, self.schedule, self.name = model, model.schedule, f"eps({model.name})"

    def __call__(self, x, t, cond=None):
        return -self.schedule.sigma(t).to(x.dtype)[:, None] * self.model(x, t)


class Const:
    """Score model returning the constant ``c`` everywhere (no schedule, score prediction)."""

    def __init__(self, c: float):
        self.c = c

    def __call__(self, x, t, cond=None):
        return torch.full_like(x, self.c)


def _kwargs(rule: str, k: int) -> dict:
    if rule == "weighted":
        w = torch.arange(1, k + 1, dtype=torch.float64)
        return {"weights": w / w.sum()}
    return {"trim": 0.25} if rule == "trimmed" else {}


@pytest.fixture(scope="module")
def members() -> list[GaussianMixture]:
    return [_member(s, f"m{s}") for s in range(4)]


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(123)
    x = 1.5 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = 1e-3 + (1 - 1e-3) * torch.rand(6, generator=g, dtype=torch.float64)
    return x, t


def test_exact_values_on_constant_members():
    x, t = torch.zeros(3, 2), torch.full((3,), 0.5)
    cs = [10.0, 1.0, 5.0, 2.0]
    ms = [Const(c) for c in cs]
    expect = {"mean": 4.5, "median": 3.5, "sum": 18.0, "weighted": 0.1 * 10 + 0.2 * 1 + 0.3 * 5 + 0.4 * 2}
    for rule, value in expect.items():
        w = [0.1, 0.2, 0.3, 0.4] if rule == "weighted" else None
        torch.testing.assert_close(Ensemble(ms, rule, weights=w)(x, t), torch.full_like(x, value))
    # Odd K median; trimmed drops floor(0.2 * 5) = 1 from each end: mean(1, 2, 3) = 2.
    five = [Const(c) for c in (3.0, 100.0, 1.0, 0.0, 2.0)]
    torch.testing.assert_close(Ensemble(five, "median")(x, t), torch.full_like(x, 2.0))
    torch.testing.assert_close(Ensemble(five, "trimmed", trim=0.2)(x, t), torch.full_like(x, 2.0))
    # floor(0.2 * 3) = 0: trimmed equals the mean.
    three = [Const(c) for c in (0.0, 1.0, 8.0)]
    torch.testing.assert_close(Ensemble(three, "trimmed", trim=0.2)(x, t), torch.full_like(x, 3.0))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("k", [3, 4])
def test_identical_members(rule, k, members, batch):
    x, t = batch
    m = members[0]
    out = Ensemble([m] * k, rule, **_kwargs(rule, k))(x, t)
    factor = k if rule == "sum" else 1  # product of identical experts is p^K
    torch.testing.assert_close(out, factor * m(x, t), rtol=1e-12, atol=1e-12)


def test_mean_dsm_loss_below_members_average(members):
    target = GaussianMixture(BASE_MEANS, 0.2 * torch.ones(3), schedule=SCHED)
    ens = Ensemble(members, "mean")
    g = torch.Generator().manual_seed(7)
    ts = torch.cat([torch.tensor([1e-3, 1.0]), 1e-3 + (1 - 1e-3) * torch.rand(14, generator=g)])
    worst_gap, max_ambiguity = float("inf"), 0.0
    for tv in ts.tolist():  # one shared t per batch keeps the analytic mixtures vectorised
        x0 = target.sample(12, generator=g)
        t = torch.full((12,), tv, dtype=torch.float64)
        eps = torch.randn(12, 2, generator=g, dtype=torch.float64)
        avg = torch.stack([dsm_loss(m, x0, SCHED, t, eps) for m in members]).mean(0)
        ens_loss = dsm_loss(ens, x0, SCHED, t, eps)
        # Per (x0, t, eps): avg_i L_i - L_mean = mean_i ||sigma (s_i - s_bar)||^2 >= 0.
        xt = SCHED.alpha(t)[:, None] * x0 + SCHED.sigma(t)[:, None] * eps
        scores = torch.stack([m(xt, t) for m in members])
        ambiguity = (SCHED.sigma(t)[:, None] * (scores - scores.mean(0))).pow(2).sum(-1).mean(0)
        torch.testing.assert_close(avg - ens_loss, ambiguity, rtol=1e-8, atol=1e-10)
        worst_gap = min(worst_gap, float((avg - ens_loss).min()))
        max_ambiguity = max(max_ambiguity, float(ambiguity.max()))
    assert worst_gap >= -1e-10
    assert max_ambiguity > 1e-3  # the members really disagree: the check is not vacuous


@pytest.mark.parametrize("rule", RULES)
def test_member_order_invariance(rule, members, batch):
    x, t = batch
    kw = _kwargs(rule, len(members))
    ref = Ensemble(members, rule, **kw)(x, t)
    for perm in list(itertools.permutations(range(len(members))))[1::7]:
        pk = dict(kw)
        if "weights" in kw:
            pk["weights"] = kw["weights"][list(perm)]
        out = Ensemble([members[i] for i in perm], rule, **pk)(x, t)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_batch_invariance(rule, members, batch):
    x, t = batch
    ens = Ensemble(members, rule, **_kwargs(rule, len(members)))
    full, shared = ens(x, t), ens(x, 0.4)
    for i in range(x.shape[0]):
        torch.testing.assert_close(ens(x[i : i + 1], t[i : i + 1]), full[i : i + 1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ens(x[i : i + 1], 0.4), shared[i : i + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_eps_member_mixes_with_score_members(rule, members, batch):
    x, t = batch
    kw = _kwargs(rule, len(members))
    mixed = [EpsOf(members[0]), members[1], EpsOf(members[2]), members[3]]
    torch.testing.assert_close(Ensemble(mixed, rule, **kw)(x, t), Ensemble(members, rule, **kw)(x, t))
    ens = Ensemble(mixed, rule, **kw)
    assert ens.prediction == "score" and ens.schedule == SCHED


def test_nesting(members, batch):
    x, t = batch
    a, b, c = members[:3]
    nested = Ensemble([Ensemble([a, b]), c])
    torch.testing.assert_close(nested(x, t), 0.25 * a(x, t) + 0.25 * b(x, t) + 0.5 * c(x, t))
    deep = Ensemble([Ensemble([a, EpsOf(b)], "sum"), c], "weighted", weights=[0.5, 0.5])
    torch.testing.assert_close(deep(x, t), 0.5 * (a(x, t) + b(x, t)) + 0.5 * c(x, t))


def test_schedule_mismatch_refused(members):
    other = GaussianMixture(BASE_MEANS, torch.ones(3), schedule=VPSchedule(beta_max=10.0))
    with pytest.raises(ConventionError):
        Ensemble([members[0], other])
    with pytest.raises(ConventionError):
        Ensemble(members[:2], schedule=VPSchedule(beta_min=0.2))


def test_weights_checked(members):
    with pytest.raises(WeightsError, match="simplex"):
        Ensemble(members[:2], "weighted", weights=[0.7, 0.7])
    with pytest.raises(WeightsError, match="simplex"):
        Ensemble(members[:2], "weighted", weights=[1.5, -0.5])
    with pytest.raises(WeightsError, match="3 weights for 2"):
        Ensemble(members[:2], "weighted", weights=[0.2, 0.3, 0.5])
    with pytest.raises(WeightsError, match="needs weights"):
        Ensemble(members[:2], "weighted")
    with pytest.raises(ValueError, match="only used by rule='weighted'"):
        Ensemble(members[:2], "mean", weights=[0.5, 0.5])


def test_bad_rule_trim_and_size(members):
    with pytest.raises(ValueError, match="median"):
        Ensemble(members[:2], "mode")
    with pytest.raises(ValueError, match="nothing remains"):
        Ensemble(members[:2], "trimmed", trim=0.5)
    with pytest.raises(ValueError, match="trim must be"):
        Ensemble(members[:3], "trimmed", trim=0.6)
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble(members[:1])
