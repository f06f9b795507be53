import numpy as np
import pytest
import torch

import molfuse as mf
from molfuse import fusion
from molfuse.evaluation import exactness


def test_recovers_true_weights():
    """Three equal-covariance Gaussians, affinely independent means, target = exact barycenter."""
    row = exactness.barycenter_recovery(lam=(0.2, 0.5, 0.3), n=3000, n_mc=60000, seed=0).iloc[0]
    assert row.max_abs_weight_err < 0.03, row
    assert row.heldout_loss < row.train_loss * 1.1


@pytest.mark.parametrize("j", [0, 1, 2])
def test_one_hot_when_target_is_a_member(sched, j):
    cov = torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=torch.float64)
    mus = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    members = [mf.GaussianMixture(mus[i:i + 1], cov[None], schedule=sched) for i in range(3)]
    g = torch.Generator().manual_seed(j)
    fit = fusion.fit_barycenter_weights(members, members[j].sample(2000, generator=g), sched, n_mc=40000, generator=g)
    onehot = torch.zeros(3, dtype=torch.float64)
    onehot[j] = 1.0
    # one-hot up to Monte Carlo error of the quadratic's coefficients
    assert float((fit.weights - onehot).abs().max()) < 0.02, fit.weights
    assert fit.per_model.loc[j, "heldout_loss"] == pytest.approx(fit.heldout_loss, rel=0.02)


def test_simplex_qp_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.normal(size=(4, 4))
        A, b = m @ m.T + 0.01 * np.eye(4), rng.normal(size=4)
        lam = fusion.solve_simplex_qp(A, b)
        assert lam.min() >= 0 and abs(lam.sum() - 1) < 1e-12
        best = lam @ A @ lam - 2 * b @ lam
        grid = rng.dirichlet(np.ones(4), size=20000)
        vals = np.einsum("ni,ij,nj->n", grid, A, grid) - 2 * grid @ b
        assert best <= vals.min() + 1e-12


def test_vanilla_window_runs_and_reports(sched):
    members = [mf.GaussianMixture([[m, 0.0]], [0.5], schedule=sched) for m in (-1.0, 1.0)]
    target = mf.GaussianMixture([[0.0, 0.0]], [0.5], schedule=sched)
    g = torch.Generator().manual_seed(0)
    fit = fusion.fit_barycenter_weights(members, target.sample(500, generator=g), sched, window="vanilla",
                                        n_mc=5000, generator=g)
    assert fit.window == (1e-3, 0.05)
    assert list(fit.per_model.columns) == ["model", "weight", "train_loss", "heldout_loss"]
    assert abs(float(fit.weights[0]) - 0.5) < 0.1
    with pytest.raises(ValueError, match="window"):
        fusion.fit_barycenter_weights(members, target.sample(10), sched, window="middle")


def test_pathwise_equals_time0_barycenter_only_for_equal_covariance():
    """MATH §2 caveat: Σ λ_i s_i(x, t) is the diffused time-0 barycenter for equal covariances only."""
    table = exactness.pathwise_barycenter_gap()
    eq, uneq = table[table.case == "equal_cov"], table[table.case == "unequal_var"]
    assert eq.max_abs_score_diff.max() < 1e-10
    assert uneq[uneq.t == 0.0].max_abs_score_diff.item() < 1e-10
    assert uneq[uneq.t == 0.3].max_abs_score_diff.item() > 0.1


def test_unequal_variance_samples_differ_from_time0_barycenter(sched):
    a = mf.GaussianMixture([[0.0]], [1.0], schedule=sched)
    b = mf.GaussianMixture([[0.0]], [4.0], schedule=sched)
    g = torch.Generator().manual_seed(0)
    x = mf.sample(fusion.Barycenter([a, b], [0.5, 0.5]), sched, (20000, 1), steps=200, generator=g).x
    # time-0 barycenter variance is 1 / (0.5/1 + 0.5/4) = 1.6; the path-wise sampler does not hit it
    assert abs(float(x.var()) - 1.6) > 0.1


def test_barycenter_refuses_off_simplex_and_guidance_allows(sched):
    a = mf.GaussianMixture([[0.0]], [1.0], schedule=sched)
    b = mf.GaussianMixture([[1.0]], [1.0], schedule=sched)
    with pytest.raises(mf.WeightsError, match="off the simplex"):
        fusion.Barycenter([a, b], [1.5, -0.5])
    with pytest.raises(mf.WeightsError, match="2 models"):
        fusion.Barycenter([a, b], [1.0])
    cfg = fusion.guidance(a, b, 2.0)
    x, t = torch.randn(4, 1, dtype=torch.float64), torch.full((4,), 0.3)
    assert torch.allclose(cfg(x, t), 3.0 * a(x, t) - 2.0 * b(x, t))


def test_operators_nest(sched):
    a, b, c = (mf.GaussianMixture([[m]], [1.0], schedule=sched) for m in (-1.0, 0.0, 2.0))
    inner = fusion.Barycenter([a, b], [0.5, 0.5])
    outer = fusion.Ensemble([inner, c], rule="mean")
    x, t = torch.randn(4, 1, dtype=torch.float64), torch.full((4,), 0.3)
    assert torch.allclose(outer(x, t), 0.25 * a(x, t) + 0.25 * b(x, t) + 0.5 * c(x, t))


def test_zero_weight_members_are_not_evaluated(sched):
    calls = []

    class Counting:
        prediction = "score"

        def __init__(self, k, scale):
            self.k, self.scale, self.schedule = k, scale, sched

        def __call__(self, x, t, cond=None):
            calls.append(self.k)
            return self.scale * x

    members = [Counting(0, -1.0), Counting(1, -2.0), Counting(2, float("nan"))]
    x, t = torch.ones(3, 2, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    out = fusion.Barycenter(members, [0.25, 0.75, 0.0], sched)(x, t)
    assert calls == [0, 1] and torch.allclose(out, -1.75 * x)  # a NaN member at weight 0 does not leak in
