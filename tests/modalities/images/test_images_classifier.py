import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")
pytest.importorskip("safetensors")

from molfuse.modalities import images as im  # noqa: E402


def test_shipped_classifier_accuracy_and_card():
    card = json.loads((im.DEFAULT_CLASSIFIER_DIR / "card.json").read_text())
    for key in ("architecture", "config", "sha256", "seed", "command", "licence", "test_accuracy", "data"):
        assert key in card
    acc, per_class = im.accuracy(im.load_classifier(), "test")
    assert acc >= 0.97 and min(per_class.values()) >= 0.9
    assert acc == pytest.approx(card["test_accuracy"], abs=1e-4)


def test_classify_and_features_shapes():
    x, y = im.load_mnist("test")
    df = im.classify(x[:20])
    assert list(df.columns) == ["pred", "prob_max", "valid", "reason"] and df["valid"].all()
    assert ((df["prob_max"] > 0.1) & (df["prob_max"] <= 1)).all()
    f = im.features(x[:20])
    assert f.shape == (20, 128) and np.isfinite(f).all()
    # uint8 pixels and [0, 1] floats with a channel axis are the same input
    np.testing.assert_allclose(im.features(x[:20, None].astype(np.float32) / 255), f, rtol=1e-5, atol=1e-5)


def test_tampered_weights_are_refused(tmp_path):
    shutil.copytree(im.DEFAULT_CLASSIFIER_DIR, tmp_path / "clf")
    w = tmp_path / "clf" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        im.load_classifier(tmp_path / "clf")
    with pytest.raises(FileNotFoundError, match="rebuild"):
        im.load_classifier(tmp_path / "nothing")


def test_train_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    x, y = im.load_digits8("train")
    x = (x.astype(np.float64) * 255 / 16).round().astype(np.uint8)  # the classifier reads 0..255 pixels
    net, log = im.train_classifier(x, y, epochs=2, batch_size=128, seed=0, augment=False)
    assert log["config"]["image_size"] == 8 and log["seconds"] >= 0
    im.save_classifier(net, tmp_path / "c8", {"architecture": "digit_classifier", "config": log["config"]})
    again = im.load_classifier(tmp_path / "c8")
    xt, yt = im.load_digits8("test")
    xt = (xt.astype(np.float64) * 255 / 16).round().astype(np.uint8)
    a, b = im.classify(xt, net), im.classify(xt, again)
    np.testing.assert_array_equal(a["pred"], b["pred"])
    assert (a["pred"].to_numpy() == yt).mean() > 0.5  # two epochs on 8x8 digits already learn something


@pytest.mark.slow
def test_rebuild_command_reproduces_the_shipped_classifier(tmp_path):
    """The card's command, rerun (about 1.5 min on 2 cores): same accuracy (bit-identical
    weights on the machine that built them; other CPUs may differ in the last bits)."""
    from molfuse.modalities.images.classifier import main

    main(["--out", str(tmp_path / "clf")])
    shipped = json.loads((im.DEFAULT_CLASSIFIER_DIR / "card.json").read_text())
    rebuilt = json.loads((tmp_path / "clf" / "card.json").read_text())
    assert rebuilt["test_accuracy"] >= 0.97
    assert abs(rebuilt["test_accuracy"] - shipped["test_accuracy"]) <= 0.01
