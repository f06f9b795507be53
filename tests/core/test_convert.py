import pytest
import torch

import molfuse as mf
from molfuse.convert import score_fn, to_score


class Wrapped:
    """A GaussianMixture re-expressed in another prediction type."""

    def __init__(self, gm, prediction, schedule):
        self.gm, self.prediction, self.schedule = gm, prediction, schedule

    def __call__(self, x, t, cond=None):
        s = self.gm(x, t)
        a, sig = self.schedule.alpha(t)[:, None].to(x), self.schedule.sigma(t)[:, None].to(x)
        eps = -sig * s
        x0 = (x - sig * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - sig * x0}[self.prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_round_trip_to_score(sched, gen, prediction):
    gm = mf.GaussianMixture([[1.0, -1.0], [-2.0, 0.5]], [0.5, 1.0], schedule=sched)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    got = score_fn(Wrapped(gm, prediction, sched), sched)(x, t)
    assert torch.allclose(got, gm(x, t), atol=1e-9)


def test_refuses_mismatched_schedule(sched):
    gm = mf.GaussianMixture([[0.0]], [1.0], schedule=mf.VPSchedule(0.1, 10.0))
    with pytest.raises(mf.ConventionError, match="schedule mismatch"):
        score_fn(gm, sched)


def test_refuses_unknown_prediction_and_missing_schedule():
    class M:
        prediction = "flow"

        def __call__(self, x, t, cond=None):
            return x

    with pytest.raises(mf.ConventionError, match="prediction='flow'"):
        score_fn(M(), None)
    M.prediction = "eps"
    with pytest.raises(mf.ConventionError, match="no schedule"):
        score_fn(M(), None)
    with pytest.raises(mf.ConventionError, match="unknown prediction"):
        to_score(torch.zeros(1), "flow", torch.zeros(1), torch.zeros(1), mf.VPSchedule())


def test_refuses_wrong_output_shape(sched):
    fn = score_fn(lambda x, t, cond=None: x[:, :1], sched)
    with pytest.raises(mf.ConventionError, match="returned shape"):
        fn(torch.zeros(3, 2), 0.5)


def test_bind_fixes_condition(sched):
    seen = []

    def net(x, t, cond=None):
        seen.append(cond)
        return x * cond

    b = mf.bind(net, 3.0)
    assert torch.equal(b(torch.ones(2, 1), torch.zeros(2)), 3.0 * torch.ones(2, 1))
    assert seen == [3.0]
    with pytest.raises(mf.ConventionError, match="already has its condition"):
        b(torch.ones(2, 1), torch.zeros(2), cond=1.0)
