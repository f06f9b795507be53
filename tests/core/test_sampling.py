import pytest
import torch

import molfuse as mf
from molfuse.evaluation import exactness


def test_ito_error_falls_with_steps():
    """MATH §3: the Itô estimate converges to the exact log q_{t_end} (2-D and 16-D)."""
    table = exactness.ito_error_table(dims=(2, 16), steps=(50, 200, 800), n=256, seed=0)
    print("\n" + table.to_string(index=False))
    for _, rows in table.groupby("dim"):
        mae = rows.sort_values("steps")["mae_nats"].to_numpy()
        assert (mae[1:] < 0.75 * mae[:-1]).all(), mae
    two = table[(table.dim == 2) & (table.steps == 800)]["mae_nats"].item()
    assert two < 0.4


def test_sde_samples_match_target_distribution(sched, gen):
    gm = mf.GaussianMixture([[-2.0], [2.0]], [0.2, 0.2], [0.3, 0.7], schedule=sched)
    x = mf.sample(gm, sched, (4000, 1), steps=200, generator=gen).x
    assert abs(float((x > 0).float().mean()) - 0.7) < 0.03
    ode = mf.sample(gm, sched, (4000, 1), steps=200, method="ode", generator=gen).x
    assert abs(float((ode > 0).float().mean()) - 0.7) < 0.03


def test_ode_tracking_exact_divergence_is_accurate(sched, gen):
    gm = exactness.random_mixture(2, 3, 0, sched)
    r = mf.sample(gm, sched, (256, 2), steps=300, method="ode", track_log_density=True, divergence="exact",
                  generator=gen, dtype=torch.float64)
    assert float((r.log_density - gm.log_prob(r.x, r.t_end)).abs().mean()) < 0.05


def test_seeded_runs_are_reproducible(sched):
    gm = mf.GaussianMixture([[0.0, 1.0]], [0.5], schedule=sched)
    a = mf.sample(gm, sched, (8, 2), steps=20, generator=torch.Generator().manual_seed(5)).x
    b = mf.sample(gm, sched, (8, 2), steps=20, generator=torch.Generator().manual_seed(5)).x
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, match", [({"steps": 0}, "steps"), ({"t_end": 0.0}, "t_end"),
                                           ({"method": "heun"}, "method")])
def test_bad_sampler_args(sched, kwargs, match):
    gm = mf.GaussianMixture([[0.0]], [1.0], schedule=sched)
    with pytest.raises(mf.SamplerError, match=match):
        mf.sample(gm, sched, (2, 1), **kwargs)


def test_power_grid_ends_and_refines_near_t_end():
    """grid_power: same end points, monotone, the last step ~ power x shorter than uniform's squared."""
    from molfuse.sampling import time_grid
    uni, quad = time_grid(200, 1e-3), time_grid(200, 1e-3, 2.0)
    assert uni == torch.linspace(1.0, 1e-3, 201, dtype=torch.float64).tolist()  # power 1 unchanged
    assert quad[0] == 1.0 and abs(quad[-1] - 1e-3) < 1e-15
    steps = torch.tensor(quad[:-1]) - torch.tensor(quad[1:])
    assert (steps > 0).all() and steps[-1] < 0.02 * (uni[-2] - uni[-1])
    with pytest.raises(mf.SamplerError, match="grid_power"):
        time_grid(10, 1e-3, 0.5)


def test_power_grid_samples_the_same_target():
    """A finer grid near t_end is still the reverse SDE: the 30/70 mixture (variances 0.2) comes out right."""
    sched = mf.VPSchedule()
    gm = mf.GaussianMixture([[-2.0], [2.0]], [0.2, 0.2], [0.3, 0.7], schedule=sched)
    x = mf.sample(gm, sched, (4000, 1), steps=200, generator=torch.Generator().manual_seed(0), grid_power=2.0).x
    assert abs(float((x > 0).float().mean()) - 0.7) < 0.03
    assert abs(float(x[x > 0].std()) - 0.2 ** 0.5) < 0.03


def test_a_checkpoint_is_not_sampled_with_more_nodes_than_its_card_holds():
    """A 9-atom model asked for 12-atom clouds (the Python API, not only training data) is refused,
    naming the model and both counts; as many nodes as the card holds, or fewer, run."""
    import pytest

    from molfuse.errors import ConventionError
    from molfuse.spaces import PointCloud

    class Net(torch.nn.Module):
        prediction, space, name = "eps", PointCloud(3), "nine_atoms"
        card = {"shape": [9, 3]}

        def forward(self, x, t, cond=None, mask=None):
            return torch.zeros_like(x)

    sched = mf.VPSchedule()
    big = torch.arange(12)[None, :] < torch.tensor([[12], [10]])
    with pytest.raises(ConventionError, match=r"nine_atoms was trained on states of at most 9 nodes .* got 12 real"):
        mf.sample(Net(), sched, (2, 12, 3), steps=2, mask=big)
    ok = torch.arange(12)[None, :] < torch.tensor([[9], [4]])
    assert mf.sample(Net(), sched, (2, 12, 3), steps=2, mask=ok).x.shape == (2, 12, 3)


def _posterior_mean(x, mean, var, t, sched):
    """E[x_0 | x_t] for x_0 ~ N(mean, var I): mean + α var / (α² var + σ²) (x − α mean)."""
    a, s2 = float(sched.alpha(t)), float(sched.sigma2(t))
    return mean + a * var / (a * a * var + s2) * (x - a * mean)


def test_denoise_ends_on_the_tweedie_mean_of_the_last_state():
    """sample(denoise=True) = the closed-form posterior mean E[x_0 | x_t_end] of the very state the
    sampler stopped at (same draws: the step adds no randomness); on data sharper than σ(t_end) it
    removes the last noise (std near the data's, not sqrt(var + σ²))."""
    sched = mf.VPSchedule()
    mean, var, t_end = torch.tensor([1.0, -2.0], dtype=torch.float64), 1e-4, 1e-3
    gm = mf.GaussianMixture(mean[None], [var], schedule=sched)
    kw = dict(steps=200, t_end=t_end, grid_power=3.0, dtype=torch.float64)
    raw = mf.sample(gm, sched, (4000, 2), generator=torch.Generator().manual_seed(0), **kw)
    den = mf.sample(gm, sched, (4000, 2), generator=torch.Generator().manual_seed(0), denoise=True, **kw)
    assert torch.allclose(den.x, _posterior_mean(raw.x, mean, var, t_end, sched), atol=1e-10)
    s2 = float(sched.sigma2(t_end))
    a = float(sched.alpha(t_end))
    raw_sd, den_sd = float((raw.x - a * mean).std()), float((den.x - mean).std())
    print(f"\nsd at t_end {raw_sd:.5f} (exact {(a * a * var + s2) ** 0.5:.5f}), denoised {den_sd:.5f} "
          f"(exact {a * var / (a * a * var + s2) ** 0.5:.5f}), data {var ** 0.5:.5f}")
    assert abs(raw_sd - (a * a * var + s2) ** 0.5) < 0.1 * (var + s2) ** 0.5
    assert abs(den_sd - a * var / (a * a * var + s2) ** 0.5) < 0.1 * var ** 0.5  # Var E[x0|xt] = var² α² / (α² var + σ²)


def test_denoise_of_or_is_the_mixture_tweedie_and_of_fkc_the_product_score():
    """superpose OR at T = 1 ends on the mixture's own Tweedie mean (κ = posterior member weights);
    AND on the members' mean score (its last κ is huge on a fine grid and is not used); fkc_sample on
    the product's score Σ b_i s^i; all against closed forms on the same draws."""
    from molfuse.convert import score_fn
    from molfuse.sampling import denoised
    sched, t_end = mf.VPSchedule(), 1e-3
    a = mf.GaussianMixture([[-2.0, 0.0]], [0.05], schedule=sched)
    b = mf.GaussianMixture([[2.0, 0.5]], [0.05], schedule=sched)
    mix = mf.GaussianMixture([[-2.0, 0.0], [2.0, 0.5]], [0.05, 0.05], [0.5, 0.5], schedule=sched)
    kw = dict(steps=200, t_end=t_end, dtype=torch.float64)
    raw = mf.fusion.superpose([a, b], sched, (500, 2), generator=torch.Generator().manual_seed(1), **kw)
    den = mf.fusion.superpose([a, b], sched, (500, 2), generator=torch.Generator().manual_seed(1), denoise=True, **kw)
    want = denoised(raw.x, mix.score(raw.x, t_end), t_end, sched)
    assert torch.allclose(den.x, want, atol=1e-6) and not torch.allclose(den.x, raw.x, atol=1e-4)
    assert torch.equal(den.log_q, raw.log_q)  # the density estimates stay those of x_t_end
    kw3 = {**kw, "grid_power": 3.0}  # AND: the members' mean score, never the last step's κ (~ 1 / sqrt(Δτ))
    raw = mf.fusion.superpose([a, b], sched, (300, 2), mode="and", generator=torch.Generator().manual_seed(3), **kw3)
    den = mf.fusion.superpose([a, b], sched, (300, 2), mode="and", generator=torch.Generator().manual_seed(3),
                              denoise=True, **kw3)
    mean = 0.5 * (a.score(raw.x, t_end) + b.score(raw.x, t_end))
    assert torch.allclose(den.x, denoised(raw.x, mean, t_end, sched), atol=1e-10)
    assert float((den.x - raw.x).norm(dim=1).max()) < 0.05 and float(raw.kappa.abs().max()) > 10
    raw = mf.fusion.fkc_sample([a, b], sched, (256, 2), generator=torch.Generator().manual_seed(2), **kw)
    den = mf.fusion.fkc_sample([a, b], sched, (256, 2), generator=torch.Generator().manual_seed(2), denoise=True, **kw)
    s = score_fn(a, sched)(raw.x, t_end, None, None) + score_fn(b, sched)(raw.x, t_end, None, None)
    assert torch.allclose(den.x, denoised(raw.x, s, t_end, sched), atol=1e-10)
    wrong = denoised(raw.x, s / 2, t_end, sched)  # the b-weighted mean of the members' estimates: not it
    assert not torch.allclose(den.x, wrong, atol=1e-4)
