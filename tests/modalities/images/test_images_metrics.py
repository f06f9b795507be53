import numpy as np
import pytest
import scipy.linalg

pytest.importorskip("mlxtend")
pytest.importorskip("safetensors")

from molfuse.modalities import images as im  # noqa: E402


def test_class_histogram_and_tv_on_known_inputs():
    preds = np.array([7, 7, 7, 9, 9, -1, 3])
    h = im.class_histogram(preds, 10)
    assert h["count"].tolist() == [0, 0, 0, 1, 0, 0, 0, 3, 0, 2] and h["fraction"].sum() == pytest.approx(1)
    assert im.class_mixture_tv([7] * 6 + [9] * 4, {7: 0.6, 9: 0.4}) == pytest.approx(0.0)
    assert im.class_mixture_tv([1, 2, 3], {7: 0.6, 9: 0.4}) == pytest.approx(1.0)
    # fractions 7: .5, 9: .25, 3: .25 against .6/.4 -> ½(.1 + .15 + .25)
    assert im.class_mixture_tv([7, 7, 9, 3], im.Population({7: 3, 9: 2})) == pytest.approx(0.25)
    assert np.isnan(im.class_mixture_tv([-1, -1], {7: 1.0}))


def test_class_coverage():
    cov = im.class_coverage([0, 0, 1, 4, 4, 4], classes=[0, 1, 2, 4], min_count=2)
    assert cov["count"].tolist() == [2, 1, 0, 3] and cov["covered"].tolist() == [True, False, False, True]


def test_frechet_closed_form_and_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    shift = np.arange(6.0)
    # identical covariances: the distance is exactly the squared mean shift
    assert im.feature_frechet_distance(a, a + shift) == pytest.approx((shift ** 2).sum(), rel=1e-9)
    assert im.feature_frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    b = rng.normal(size=(400, 6)) * 2 + 1
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert im.feature_frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    nan_row = np.vstack([b, np.full((1, 6), np.nan)])
    assert im.feature_frechet_distance(a, nan_row) == pytest.approx(ref, rel=1e-8)


def test_real_data_scores_near_perfect():
    (xt, yt), (xr, yr) = im.load_mnist("test"), im.load_mnist("train")  # test: held out from the classifier
    target = im.Population({7: 0.6, 9: 0.4})
    sample, ref = xt[target.sample_indices(yt, 160, 0)], xr[target.sample_indices(yr, 600, 1)]
    per, summary = im.sample_metrics(sample, target, reference_images=ref)
    assert {"id", "valid", "reason", "pred", "prob_max"} <= set(per.columns) and len(per) == 160
    assert summary["class_mixture_tv"] < 0.05 and summary["coverage"] == 1.0 and summary["n_valid"] == 160
    assert summary["off_target_fraction"] < 0.05 and summary["frac_7"] > 0.5


def test_frechet_real_halves_vs_noise():
    x, _ = im.load_mnist("test")
    f = im.features(x)
    noise = im.features(np.random.default_rng(0).random((500, 28, 28)).astype(np.float32))
    halves = im.feature_frechet_distance(f[::2], f[1::2])
    to_noise = im.feature_frechet_distance(f[::2], noise)
    assert halves * 20 < to_noise


def test_invalid_samples_are_rows_not_errors():
    x, _ = im.load_mnist("test")
    u = x[:5].astype(np.float32) / 255
    u[2, 3, 3] = np.nan
    per, summary = im.sample_metrics(u, {0: 1.0})
    assert per["valid"].tolist() == [True, True, False, True, True]
    assert per.loc[2, "pred"] == -1 and np.isnan(per.loc[2, "prob_max"]) and per.loc[2, "reason"]
    assert summary["n"] == 5 and summary["n_valid"] == 4 and summary["class_mixture_tv"] < 0.05
    with pytest.raises(ValueError, match="to_unit"):
        im.classify(u * 2 - 1)
