"""bits/dim against closed forms: a Gaussian per pixel (an analytic score model)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

pytest.importorskip("mlxtend")

import molfuse as mf  # noqa: E402
from molfuse.modalities import images as im  # noqa: E402

SIDE, MEAN, VAR = 3, 0.1, 0.05  # 3x3 images; model: x_pixel ~ N(0.1, 0.05) in model space


class ImageGaussian:
    """The diffused N(MEAN, VAR I) on (batch, 1, SIDE, SIDE) images: exact score and log q_t."""

    prediction = "score"

    def __init__(self, schedule):
        d = SIDE * SIDE
        self.schedule = schedule
        self.gm = mf.GaussianMixture(torch.full((1, d), MEAN), torch.full((1,), VAR), schedule=schedule)

    def __call__(self, x, t, cond=None):
        return self.gm(x.reshape(len(x), -1), t).reshape(x.shape).to(x.dtype)


def _pixels(n):
    return np.random.default_rng(0).integers(0, 17, size=(n, SIDE, SIDE)).astype(np.uint8)


def test_offsets():
    assert im.bpd_offset(im.MNIST_NORMALISATION) == pytest.approx(math.log2(255 / 2))  # 6.9944
    # the "[0, 1] data, +8" form: log p_[0,1] = log p_X + D log(256 a)
    a, d, logp = 2 / 255, 784, -1234.5
    plus8 = -(logp + d * math.log(256 * a)) / (d * math.log(2)) + 8
    assert plus8 == pytest.approx(-logp / (d * math.log(2)) + im.bpd_offset(im.MNIST_NORMALISATION))


def test_bits_per_dim_at_bin_centres_is_exact(sched):
    torch.set_default_dtype(torch.float64)
    try:
        v = _pixels(4)
        df = im.bits_per_dim(ImageGaussian(sched), v, sched, steps=40, divergence="exact", dequantize=False,
                             normalisation=im.DIGITS8_NORMALISATION)
    finally:
        torch.set_default_dtype(torch.float32)
    a, b, d = 2 / 16, -1.0, SIDE * SIDE
    x = a * v.reshape(4, -1) + b
    logp = norm.logpdf(x, MEAN, math.sqrt(VAR)).sum(1)
    expected = -(logp + d * math.log(a)) / (d * math.log(2))
    # 0.03 nats: the ODE estimator's own accuracy on Gaussians (tests/core/test_density.py, 0.02 in 4-D)
    np.testing.assert_allclose(df["log_p_model_nats"], logp, atol=0.03)
    np.testing.assert_allclose(df["bits_per_dim"], expected, atol=0.03 / (d * math.log(2)))
    assert df["valid"].all() and not df["dequantized"].any()


def test_dequantized_bits_per_dim_bounds_the_discrete_nll(sched, gen):
    """E_u bpd = closed form with the a²/12 dequantisation variance, and >= exact -log2 P(v)/D."""
    v = np.repeat(_pixels(1), 256, axis=0)
    df = im.bits_per_dim(ImageGaussian(sched), v, sched, steps=30, divergence="exact", generator=gen,
                         normalisation=im.DIGITS8_NORMALISATION)
    a, b, d, sd = 2 / 16, -1.0, SIDE * SIDE, math.sqrt(VAR)
    c = a * v[0].reshape(-1) + b
    e_logp = (norm.logpdf(c, MEAN, sd) - a * a / 12 / (2 * VAR)).sum()
    bound = -(e_logp + d * math.log(a)) / (d * math.log(2))
    mc_se = df["bits_per_dim"].std() / math.sqrt(len(df))
    assert abs(df["bits_per_dim"].mean() - bound) < 4 * mc_se + 0.03 / (d * math.log(2))
    exact = -np.log2(norm.cdf(c + a / 2, MEAN, sd) - norm.cdf(c - a / 2, MEAN, sd)).sum() / d
    assert exact < bound  # Jensen; the gap is large here (bins of half a standard deviation)
    # P(v) = E_u p_Y(v + u - 1/2): log-mean-exp over the draws estimates the discrete NLL itself
    log_py = -df["bits_per_dim"].to_numpy() * d * math.log(2)
    iw = -(logsumexp(log_py) - math.log(len(df))) / (d * math.log(2))
    assert abs(iw - exact) < 0.05 and iw < df["bits_per_dim"].mean()


def test_non_finite_likelihood_is_an_invalid_row(sched):
    class Broken:
        def __call__(self, x, t, cond=None):
            return x * float("nan")

    df = im.bits_per_dim(Broken(), _pixels(2), sched, steps=2, divergence="exact",
                         normalisation=im.DIGITS8_NORMALISATION, generator=torch.Generator().manual_seed(0))
    assert not df["valid"].any() and df["bits_per_dim"].isna().all() and (df["reason"] != "").all()
