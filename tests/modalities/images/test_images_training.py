"""The "mnist_population" data kind through molfuse's training workflow (a few steps)."""

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("mlxtend")

import molfuse as mf  # noqa: E402
from molfuse.training.checkpoints import load_model  # noqa: E402
from molfuse.modalities import images as im  # noqa: E402
from molfuse.training import train_from_workflow  # noqa: E402


def test_register_is_idempotent():
    from molfuse import plugins

    im.register()
    im.register()
    assert plugins.modality("images") is im.MODALITY
    assert plugins.data_kind_modality("mnist_population") == "images"
    data = plugins.data_kind("mnist_population").build({"source": "digits8", "classes": [1], "n": 4})
    assert data.x.shape == (4, 1, 8, 8) and data.condition == "class_label" and data.normalisation["levels"] == 17


def test_train_workflow_on_a_digit_population(tmp_path):
    wf = {
        "name": "digits_tiny", "seed": 0, "output": str(tmp_path),
        "architecture": {"name": "unet", "config": {"image_size": 8, "base": 8, "mults": [1, 2], "num_classes": 10}},
        "data": {"kind": "mnist_population", "source": "digits8", "weights": {7: 0.6, 9: 0.4}, "n": 64},
        "train": {"steps": 3, "batch_size": 16, "log_every": 1, "checkpoint_every": 3, "threads": 1,
                  "cond_drop_prob": 0.1},
    }
    res = train_from_workflow(wf, progress=False, verbose=False)
    net = load_model(res.checkpoint)
    assert isinstance(net, im.UNet) and net.prediction == "eps" and net.modality == "images"
    assert res.card["conditioning"] == {"kind": "class_label", "null_cond": 10, "cond_drop_prob": 0.1}
    assert res.card["shape"] == [1, 8, 8] and res.card["space"] == {"kind": "euclidean"}
    assert net.normalisation["scale"] == pytest.approx(2 / 16) and net.normalisation["shift"] == -1
    assert res.card["data"]["class_counts"] in ({7: 38, 9: 26}, {"7": 38, "9": 26})
    with torch.no_grad():
        x = mf.sample(net, net.schedule, (2, 1, 8, 8), steps=3, cond=torch.tensor([7, 9]),
                      generator=torch.Generator().manual_seed(0)).x
    assert x.shape == (2, 1, 8, 8)
    v, _ = im.load_digits8("test")
    bpd = im.bits_per_dim(net, v[:2], net.schedule, steps=2, generator=torch.Generator().manual_seed(0))
    assert bpd["valid"].all() and np.isfinite(bpd["bits_per_dim"]).all()  # normalisation read from the net
