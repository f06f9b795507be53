"""The memorisation metric and the second judge on inputs whose answer is known."""

import json

import numpy as np
import pytest

pytest.importorskip("mlxtend")
pytest.importorskip("safetensors")

from molfuse.modalities import images as im  # noqa: E402
from molfuse.modalities.images.memorisation import COPY_RATIO, train_split  # noqa: E402


@pytest.fixture(scope="module")
def mnist():
    train, train_labels = im.load_mnist("train")
    test, test_labels = im.load_mnist("test")
    return (train / 255.0).astype(np.float32), train_labels, (test / 255.0).astype(np.float32), test_labels


def test_nearest_distances_exact_against_brute_force():
    rng = np.random.default_rng(0)
    x, train = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    x[3] = np.nan
    d = im.nearest_distances(x, train, k=2, batch=2)
    brute = np.sort(np.linalg.norm(x[:, None] - train[None], axis=-1), axis=1)[:, :2]
    np.testing.assert_allclose(d[np.arange(7) != 3], brute[np.arange(7) != 3], rtol=1e-10, atol=1e-10)
    assert np.isnan(d[3]).all()
    with pytest.raises(ValueError, match="values per row"):
        im.nearest_distances(x, train[:, :4])


def test_heldout_weights_follow_the_training_class_mix():
    held = np.array([0, 0, 1, 1, 1, 2])
    w = im.heldout_weights(held, np.array([0] * 3 + [1] * 1))  # training: 75 % zeros, 25 % ones, no twos
    np.testing.assert_allclose(w, [0.375, 0.375, 0.25 / 3, 0.25 / 3, 0.25 / 3, 0.0])
    with pytest.raises(ValueError, match="class 5"):
        im.heldout_weights(held, np.array([5]))


@pytest.mark.parametrize("kind", ["heldout", "copies", "noise"])
def test_memorisation_on_known_inputs(mnist, kind):
    """Real held-out digits score ~1, training copies 0 with every sample a near copy, noise >> 1."""
    train, train_labels, test, test_labels = mnist
    rng = np.random.default_rng(1)
    samples = {"heldout": test[::2], "copies": train[rng.choice(len(train), 150, replace=False)],
               "noise": rng.random((150, 28, 28)).astype(np.float32)}[kind]
    _, row = im.evaluate_images(samples, {c: 0.1 for c in range(10)}, training=(train, train_labels))
    if kind == "heldout":
        assert 0.95 < row["nn_ratio_pixel"] < 1.05 and 0.95 < row["nn_ratio_feature"] < 1.05
        assert row["near_copy_fraction"] < 0.02 and row["judge_agreement"] > 0.95
    elif kind == "copies":
        assert row["nn_ratio_pixel"] == pytest.approx(0.0, abs=1e-6) and row["nn_ratio_feature"] < 1e-3
        assert row["near_copy_fraction"] == 1.0
    else:
        assert row["nn_ratio_pixel"] > 2.5 and row["nn_ratio_feature"] > 1.4
        assert row["near_copy_fraction"] == 0.0 and row["judge_agreement"] < 0.5
    assert row["near_copy_fraction_heldout"] < 0.02 and row["n_train_seen"] == len(train)


def test_a_small_training_set_is_compared_with_heldout_digits_of_its_classes(mnist):
    """A model trained on 16 sevens that copies them: ratio ~0 against its own 16; a fresh 7 ~1."""
    train, train_labels, test, test_labels = mnist
    sevens = np.flatnonzero(train_labels == 7)[:16]
    small = (train[sevens], train_labels[sevens])
    copy_row, dist = im.memorisation_row(train[sevens[[0, 3, 5, 5]]], small)
    assert copy_row["nn_ratio_pixel"] < 1e-6 and copy_row["near_copy_fraction"] == 1.0 and dist.shape == (4,)
    fresh = test[test_labels == 7][:50]
    fresh_row, _ = im.memorisation_row(fresh, small)
    assert 0.9 < fresh_row["nn_ratio_pixel"] < 1.1  # the reference is held-out sevens only, not all digits


def test_prompted_classes_are_compared_with_heldout_digits_of_those_classes(mnist):
    """Held-out ones against all 4000 training digits: ~1 when the reference is held-out ones (the
    target), well below 1 against held-out digits of every class (ones are thin and close)."""
    train, train_labels, test, test_labels = mnist
    ones = test[test_labels == 1][::2]
    row, _ = im.memorisation_row(ones, (train, train_labels), classes=[1])
    assert 0.9 < row["nn_ratio_pixel"] < 1.1
    mixed, _ = im.memorisation_row(ones, (train, train_labels))
    assert mixed["nn_ratio_pixel"] < 0.8
    none, _ = im.memorisation_row(ones, (train[train_labels != 1], train_labels[train_labels != 1]), classes=[1])
    assert none["nn_ratio_pixel"] == pytest.approx(  # no training one: all the training classes are the reference
        im.memorisation_row(ones, (train[train_labels != 1], train_labels[train_labels != 1]))[0]["nn_ratio_pixel"])


def test_copy_rule_is_the_one_third_ratio():
    train = np.zeros((3, 2))
    train[1], train[2] = [1.0, 0.0], [0.0, 4.0]
    held = np.array([[0.0, 2.0]])  # d1 = 2 (first), d2 = sqrt(5): not a copy
    samples = np.array([[0.2, 0.0], [0.45, 0.0]])  # d1/d2 = 0.25 < 1/3 (copy), 0.45/0.55 > 1/3 (not)
    row, _ = im.memorisation_summary(samples, train, held)
    assert COPY_RATIO == pytest.approx(1 / 3) and row["near_copy_fraction"] == 0.5
    assert row["nn_ratio_pixel"] == pytest.approx((0.2 + 0.45) / 2 / 2.0)
    with pytest.raises(ValueError, match="summing to 1"):
        im.memorisation_summary(samples, train, held, weights=np.array([0.5]))


def test_seen_training_set_follows_the_card_chain():
    """A fine-tune saw its 16 images and, through init_from, its parent's and grandparent's data
    (finetune_n16 <- mix79_s70 <- digits_all_v2); all rebuilt exactly."""
    card = json.loads(open(im.DEFAULT_CLASSIFIER_DIR.parent / "scorefusion" / "finetune_n16_seed0" / "card.json").read())
    chain, c = [], card
    while c.get("init_from"):
        c = json.loads(open(im.DEFAULT_CLASSIFIER_DIR.parents[2] / c["init_from"]["path"] / "card.json").read())
        chain.append(c)
    assert [c["name"] for c in chain] == ["mix79_s70", "digits_all_v2"]
    specs = im.seen_training_set([card])
    assert sorted(s[2] for s in specs) == sorted([16, *(c["data"]["n"] for c in chain)])
    images, labels = im.training_images(specs)
    assert set(np.unique(labels)) == set(range(10)) and len(images) == 4000  # the 7/9 images are among the 4000
    tampered = [(*s[:5], "0" * 64) for s in specs]
    with pytest.raises(ValueError, match="indices"):
        im.training_images(tuple(tampered))
    assert im.seen_training_set([{"data": {"kind": "something_else"}}]) is None
    assert train_split(28)[0][2] == -1 and len(im.training_images(train_split(28))[0]) == 4000


def test_second_judge_is_another_family_and_agrees_on_real_digits():
    card = json.loads((im.DEFAULT_JUDGE_DIR / "card.json").read_text())
    judge = im.load_judge()
    assert isinstance(judge, im.DigitMLP) and card["architecture"] == "digit_mlp"
    assert not any(m.__class__.__name__.startswith("Conv") for m in judge.modules())
    acc, _ = im.accuracy(judge, "test")
    assert acc >= 0.97 and acc == pytest.approx(card["test_accuracy"], abs=1e-4)
    x, _ = im.load_mnist("test")
    same = im.classify(x, judge)["pred"].to_numpy() == im.classify(x)["pred"].to_numpy()
    assert same.mean() == pytest.approx(card["agreement_with_cnn_on_test"], abs=1e-4) and same.mean() > 0.95


def test_judge_columns_and_turning_them_off(mnist):
    _, _, test, _ = mnist
    table, row = im.evaluate_images(test[:40], {3: 0.5, 5: 0.5})
    assert "judge_class" in table and {"judge_agreement", "class_mixture_tv_judge2", "off_target_fraction_judge2"} <= set(row)
    table, row = im.evaluate_images(test[:40], {3: 0.5, 5: 0.5}, judge=False)
    assert "judge_class" not in table and "judge_agreement" not in row
