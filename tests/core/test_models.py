import math

import pytest
import torch

import molfuse as mf


def test_score_is_gradient_of_log_prob(sched, gen):
    gm = mf.GaussianMixture(torch.randn(3, 4, generator=gen), torch.rand(3, 4, generator=gen) + 0.3,
                            [0.2, 0.3, 0.5], schedule=sched)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    for t in [0.0, 0.2, 0.7]:
        (grad,) = torch.autograd.grad(gm.log_prob(x, t).sum(), x)
        assert torch.allclose(gm(x.detach(), torch.full((16,), t)), grad, atol=1e-10)


def test_log_prob_closed_form_1d(sched):
    gm = mf.GaussianMixture([[1.0]], [2.0], schedule=sched)
    t = 0.4
    a, s2 = float(sched.alpha(t)), float(sched.sigma2(t))
    var = a * a * 2.0 + s2
    x = torch.tensor([[0.3]], dtype=torch.float64)
    expect = -0.5 * (0.3 - a) ** 2 / var - 0.5 * math.log(2 * math.pi * var)
    assert abs(float(gm.log_prob(x, t)) - expect) < 1e-12


def test_per_sample_times_match_scalar_times(sched, gen):
    gm = mf.GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.4, 0.9], schedule=sched)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.2, 0.5, 0.7, 0.99], dtype=torch.float64)
    batched = gm.log_prob(x, t)
    single = torch.cat([gm.log_prob(x[i:i + 1], float(t[i])) for i in range(5)])
    assert torch.allclose(batched, single)


def test_sample_moments(gen):
    gm = mf.GaussianMixture([[-3.0], [3.0]], [0.25, 0.25], [0.25, 0.75])
    x = gm.sample(20000, generator=gen)
    assert abs(float((x > 0).double().mean()) - 0.75) < 0.02
    assert abs(float(x.mean()) - 1.5) < 0.06


def test_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        mf.GaussianMixture([[0.0]], [1.0], [0.5])
    with pytest.raises(ValueError, match="covs"):
        mf.GaussianMixture([[0.0, 0.0]], [[1.0, 1.0, 1.0]])
    gm = mf.GaussianMixture([[0.0, 0.0]], [1.0])
    with pytest.raises(mf.ConventionError, match="dim 2"):
        gm(torch.zeros(3, 5), torch.zeros(3))


ANGLES = ((1, 1), (1, 1), (1, 2), (1, 2))  # the protein angle state's trims


def _chain_mixture(sched, gen, sizes=(5, 8, 12)):
    templates = {n: torch.randn(2, n, 4, generator=gen, dtype=torch.float64) for n in sizes}
    mix = mf.CentredGaussianMixture(templates, [0.3, 0.7], [0.4, 0.6], schedule=sched, space=mf.Chain(ANGLES))
    return mix, templates


def test_masked_mixture_on_chains_is_the_plain_mixture_of_the_free_entries(sched, gen):
    """On the coordinate-aligned chain subspace, a chain of n residues is a vector of its
    D = 4n − 10 free entries: log q_t and the score must be a GaussianMixture's on those entries."""
    mix, templates = _chain_mixture(sched, gen)
    sizes = torch.tensor([5, 8, 12, 12, 5, 8])
    mask = torch.arange(12)[None, :] < sizes[:, None]
    keep = mix.space.entries((6, 12, 4), mask)
    x = mix.space.project(torch.randn(6, 12, 4, generator=gen, dtype=torch.float64), mask)
    for t in (0.0, 0.3, 0.8):
        lp, s = mix.log_prob(x, t, mask), mix.score(x, t, mask)
        assert torch.equal(s[~keep], torch.zeros_like(s[~keep]))
        for i, n in enumerate(sizes.tolist()):
            free = keep[i, :n]
            plain = mf.GaussianMixture(templates[n][:, free], [0.3, 0.7], [0.4, 0.6], schedule=sched)
            xi = x[i, :n][free][None]
            assert abs(float(lp[i] - plain.log_prob(xi, t))) < 1e-10, (n, t)
            assert torch.allclose(s[i, :n][free], plain.score(xi, t)[0], atol=1e-10)
    assert torch.equal(mix.space.dof(x.shape, mask), (4 * sizes - 10).double())
    # log q is the density of P x, so its gradient anywhere is the (projected) score
    off = torch.randn(6, 12, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(off, 0.3, mask).sum(), off)
    assert torch.allclose(grad, mix.score(off.detach(), 0.3, mask), atol=1e-12)


def test_masked_mixture_samples_live_on_the_chain_subspace(sched, gen):
    mix, _ = _chain_mixture(sched, gen, sizes=(8,))
    x, mask = mix.sample(4000, gen)
    keep = mix.space.entries(x.shape, mask)
    assert torch.equal(x[~keep], torch.zeros_like(x[~keep]))
    # E|x − μ_k|² = c_k D: the noise is the unit Gaussian of the 22-dimensional subspace
    resid = torch.stack([x - mix.space.project(mix._means[0, k][None].expand_as(x), mask) for k in range(2)])
    nearest = (resid**2).sum((2, 3)).min(0).values.mean()
    assert 0.9 * (0.4 * 0.3 + 0.6 * 0.7) * 22 < float(nearest) < 1.1 * (0.4 * 0.3 + 0.6 * 0.7) * 22


def test_masked_mixture_refuses_unmasked_spaces_and_short_templates(sched):
    cloud = {3: torch.zeros(1, 3, 3)}
    assert mf.CentredGaussianMixture(cloud, [1.0]).space == mf.PointCloud(3)  # the default, as before
    assert mf.CentredGaussianMixture(cloud, [1.0], centred=0).space == mf.PointCloud(0)
    with pytest.raises(mf.ConventionError, match="masked space"):
        mf.CentredGaussianMixture(cloud, [1.0], space=mf.Euclidean())
    with pytest.raises(mf.ConventionError, match=r"either centred= .* or space=; got centred=3"):
        mf.CentredGaussianMixture(cloud, [1.0], centred=3, space=mf.PointCloud(3))
    with pytest.raises(mf.ConventionError, match=r"templates\[3\].*shorter than 4 residues"):
        mf.CentredGaussianMixture({3: torch.zeros(1, 3, 4)}, [1.0], space=mf.Chain(ANGLES))
    with pytest.raises(mf.ConventionError, match=r"templates\[5\].*\(batch, residues, 4\)"):
        mf.CentredGaussianMixture({5: torch.zeros(1, 5, 3)}, [1.0], space=mf.Chain(ANGLES))
    mix = mf.CentredGaussianMixture({5: torch.zeros(1, 5, 4)}, [1.0], space=mf.Chain(ANGLES), max_nodes=8)
    with pytest.raises(mf.ConventionError, match=r"no template for n = \[6\] real nodes"):
        mix.log_prob(torch.zeros(1, 8, 4), 0.5, torch.arange(8)[None] < 6)


def test_masked_mixture_on_graphs_is_the_plain_mixture_of_each_pair_once(sched, gen):
    """Without centred channels the molecule-graph subspace is coordinate-aligned: a molecule of n
    atoms is the vector of its n F node entries and B n(n − 1)/2 pair entries, each pair once, and
    log q_t and the score must be a GaussianMixture's on those entries."""
    space = mf.MoleculeGraph(node_channels=2, pair_channels=3, centred=0)
    templates = {n: torch.randn(2, n, space.width(n), generator=gen, dtype=torch.float64) for n in (2, 4, 6)}
    mix = mf.CentredGaussianMixture(templates, [0.3, 0.7], [0.4, 0.6], schedule=sched, space=space)
    assert mix.sample_shape == (6, 2 + 6 * 3)
    sizes = torch.tensor([2, 4, 6, 6, 4])
    mask = torch.arange(6)[None, :] < sizes[:, None]
    keep = space.entries((5, 6), mask)
    x = space.project(torch.randn(5, 6, space.width(6), generator=gen, dtype=torch.float64), mask)
    for t in (0.0, 0.4):
        lp, s = mix.log_prob(x, t, mask), mix.score(x, t, mask)
        assert torch.equal(s[~keep], torch.zeros_like(s[~keep]))
        for i, n in enumerate(sizes.tolist()):
            mu = torch.stack([space.resize(m[None], 6)[0][keep[i]] for m in space.project(templates[n], None)])
            plain = mf.GaussianMixture(mu, [0.3, 0.7], [0.4, 0.6], schedule=sched)
            assert mu.shape[1] == 2 * n + 3 * n * (n - 1) // 2
            assert abs(float(lp[i] - plain.log_prob(x[i][keep[i]][None], t))) < 1e-10, (n, t)
            assert torch.allclose(s[i][keep[i]], plain.score(x[i][keep[i]][None], t)[0], atol=1e-10)


def test_masked_mixture_templates_share_one_width():
    with pytest.raises(ValueError, match=r"templates\[5\] must be \(1, 5, 3\) like templates\[3\]; got \(1, 5, 4\)"):
        mf.CentredGaussianMixture({3: torch.zeros(1, 3, 3), 5: torch.zeros(1, 5, 4)}, [1.0])
    graph = mf.MoleculeGraph(4, 2)
    with pytest.raises(mf.ConventionError, match=r"templates\[5\].*\(batch, 5, 14\)"):
        mf.CentredGaussianMixture({3: torch.zeros(1, 3, 10), 5: torch.zeros(1, 5, 12)}, [1.0], space=graph)
    with pytest.raises(ValueError, match=r"templates\[5\] must be \(1, 5, channels\) with n <= max_nodes = 4"):
        mf.CentredGaussianMixture({3: torch.zeros(1, 3, 10), 5: torch.zeros(1, 5, 14)}, [1.0], space=graph,
                                  max_nodes=4)
