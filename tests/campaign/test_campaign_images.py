"""``molfuse run`` on image checkpoints: the ``checkpoint`` model kind and the image evaluator."""

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("mlxtend")

from molfuse import campaign  # noqa: E402
from molfuse.errors import WorkflowError  # noqa: E402
from molfuse.schedules import schedule_from_config  # noqa: E402
from molfuse.training import train_from_workflow  # noqa: E402


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    """A tiny class-conditional 28x28 UNet trained 20 steps on real 7s and 9s."""
    out = tmp_path_factory.mktemp("train")
    wf = {"name": "tiny79", "seed": 0, "output": str(out),
          "architecture": {"name": "unet", "config": {"image_size": 28, "base": 8, "mults": [1, 2],
                                                       "num_classes": 10}},
          "data": {"kind": "mnist_population", "source": "mnist", "classes": [7, 9], "n": 64},
          "train": {"steps": 20, "batch_size": 16, "log_every": 10, "checkpoint_every": 20, "threads": 1,
                    "cond_drop_prob": 0.1}}
    return train_from_workflow(wf, progress=False, verbose=False).checkpoint


def _workflow(ckpt, out, **extra):
    return {"name": "img", "seed": 0, "output": str(out), "run_name": "r", "n_samples": 8,
            "sampler": {"steps": 10, "chunk_size": 8},
            "models": {"seven": {"kind": "checkpoint", "path": str(ckpt), "cond": 7},
                       "nine": {"kind": "checkpoint", "path": str(ckpt), "cond": 9}},
            "methods": [{"name": "or", "operator": "superpose", "models": ["seven", "nine"]},
                        {"name": "seven_alone", "operator": "single", "models": ["seven"]}], **extra}


def test_checkpoint_kind_declares_image_shape(digits_ckpt):
    wf = campaign.load_workflow(_workflow(digits_ckpt, "unused"))
    models = campaign.build_models(wf, schedule_from_config(wf.schedule))
    assert campaign.sample_shape(models["seven"]) == (1, 28, 28)
    assert models["seven"].modality == "images"
    assert models["nine"].cond == 9 and models["nine"].normalisation["shift"] == -1
    x = torch.zeros(2, 1, 28, 28)
    assert models["seven"](x, torch.full((2,), 0.5)).shape == x.shape


def test_run_writes_image_results(digits_ckpt, tmp_path):
    wf = _workflow(digits_ckpt, tmp_path, evaluation={"target_classes": {7: 0.6, 9: 0.4}})
    res = campaign.run_workflow(wf, progress=False, verbose=False)
    folder = res.folder
    for method in ("or", "seven_alone"):
        x = np.load(folder / "samples" / f"{method}.npy")
        assert x.shape == (8, 28, 28) and np.nanmin(x) >= 0 and np.nanmax(x) <= 1
        assert (folder / "samples" / f"{method}.png").stat().st_size > 0
    per = pd.read_csv(folder / "per_sample.csv")
    assert list(per.columns[:9]) == ["id", "method", "index", "chunk", "seed", "valid", "reason",
                                     "predicted_class", "prob_max"]
    assert len(per) == 16 and per["predicted_class"].between(-1, 9).all()
    assert "ito_log_q_nats_seven" in per  # the superposition's Itô log q per member
    metrics = pd.read_csv(folder / "metrics.csv")
    assert [f"frac_class_{k}" for k in range(10)] == [c for c in metrics if c.startswith("frac_class_")]
    assert np.allclose(metrics[[f"frac_class_{k}" for k in range(10)]].sum(axis=1), 1.0)
    for col in ("class_mixture_tv", "coverage", "feature_frechet"):
        assert metrics[col].between(0, np.inf).all(), col
    summary = (folder / "summary.md").read_text()
    assert "![samples/or.png](samples/or.png)" in summary and "feature_frechet" in summary
    prov = (folder / "provenance.json").read_text()
    assert "model.safetensors" in prov  # checkpoint hashed into provenance


def test_evaluation_settings_are_validated(digits_ckpt, tmp_path):
    with pytest.raises(WorkflowError, match="evaluation.target_classes"):
        campaign.load_workflow(_workflow(digits_ckpt, tmp_path, evaluation={"target_classes": [7, 9]}))
    with pytest.raises(WorkflowError, match="evaluation.reference_class"):
        campaign.load_workflow(_workflow(digits_ckpt, tmp_path, evaluation={"reference_class": [7]}))
    bad = _workflow(digits_ckpt, tmp_path)
    bad["models"]["seven"]["cond"] = 12
    with pytest.raises(WorkflowError, match="models.seven: cond"):
        campaign.run_workflow(bad, progress=False, verbose=False)
    vectors = {"name": "v", "output": str(tmp_path), "evaluation": {"target_classes": {7: 1}},
               "models": {"a": {"kind": "gaussian_mixture", "means": [[0.0, 0.0]], "covs": [1.0]}},
               "methods": [{"name": "a", "operator": "single", "models": ["a"]}]}
    with pytest.raises(WorkflowError, match="evaluation: target_classes: the vectors evaluator takes no settings"):
        campaign.run_workflow(vectors, progress=False, verbose=False)


def test_relative_checkpoint_paths_start_at_the_repo_root():
    from molfuse.base.provenance import REPO_ROOT

    assert campaign.checkpoint_path("models/images/x") == REPO_ROOT / "models/images/x"
    assert (REPO_ROOT / "molfuse" / "campaign").is_dir()


@pytest.fixture(scope="module")
def other_ckpt(digits_ckpt, tmp_path_factory):
    """The tiny net fine-tuned 4 steps on real 1s (init_from): a second soup member."""
    out = tmp_path_factory.mktemp("train1")
    wf = {"name": "tiny1", "seed": 1, "output": str(out), "init_from": str(digits_ckpt),
          "architecture": {"name": "unet", "config": {"image_size": 28, "base": 8, "mults": [1, 2], "num_classes": 10}},
          "data": {"kind": "mnist_population", "source": "mnist", "classes": [1], "n": 32},
          "train": {"steps": 4, "batch_size": 16, "log_every": 2, "checkpoint_every": 4, "threads": 1,
                    "cond_drop_prob": 0.1, "lr": 0.01}}
    return train_from_workflow(wf, progress=False, verbose=False).checkpoint


def _build(models, tmp_path):
    wf = campaign.load_workflow({"name": "b", "output": str(tmp_path), "models": models,
                                 "methods": [{"name": "a", "operator": "single", "models": [next(iter(models))]}]})
    return campaign.build_models(wf, schedule_from_config(wf.schedule))


def test_soup_kind_averages_weights_and_removes_members(digits_ckpt, other_ckpt, tmp_path):
    from molfuse.training.checkpoints import load_model
    from molfuse.fusion import soup

    a, b = load_model(digits_ckpt), load_model(other_ckpt)
    paths = [str(digits_ckpt), str(other_ckpt)]
    m = _build({"s": {"kind": "soup", "paths": paths, "weights": [0.3, 0.7]},
                "u": {"kind": "soup", "paths": paths},
                "r": {"kind": "soup", "paths": paths, "remove": [str(other_ckpt)], "cond": 7}}, tmp_path)
    expect = soup([a.state_dict(), b.state_dict()], [0.3, 0.7])
    for k, v in m["s"].model.state_dict().items():
        torch.testing.assert_close(v, expect[k])
    for k, v in m["r"].model.model.state_dict().items():  # removing b from the soup of (a, b) gives a back
        torch.testing.assert_close(v, a.state_dict()[k], atol=1e-6, rtol=0)
    assert m["r"].cond == 7 and len(m["u"].checkpoints) == 2 and m["u"].card["soup"]["members"] == ["tiny79", "tiny1"]
    x, t = torch.zeros(2, 1, 28, 28), torch.full((2,), 0.5)
    assert m["u"](x, t).shape == x.shape


def test_soup_kind_refuses_bad_specs(digits_ckpt, other_ckpt, tmp_path):
    paths = [str(digits_ckpt), str(other_ckpt)]
    for spec, match in (({"paths": paths, "remove": ["elsewhere"]}, "remove"),
                        ({"paths": paths, "remove": paths}, "every member"),
                        ({"paths": paths, "weights": [0.5, 0.6]}, "simplex|sum"),
                        ({"paths": []}, "paths")):
        with pytest.raises(WorkflowError, match=match):
            _build({"s": {"kind": "soup", **spec}}, tmp_path)


def test_fitted_barycenter_and_heldout_metrics(digits_ckpt, other_ckpt, tmp_path):
    data = {"kind": "mnist_population", "split": "train", "weights": {7: 0.6, 9: 0.4}, "n": 10, "seed": 0}
    wf = {"name": "fit", "output": str(tmp_path), "run_name": "r", "n_samples": 3,
          "sampler": {"steps": 3, "chunk_size": 3, "threads": 1},
          "models": {"a": {"kind": "checkpoint", "path": str(digits_ckpt)},
                     "b": {"kind": "checkpoint", "path": str(other_ckpt)}},
          "evaluation": {"target_classes": {7: 0.6, 9: 0.4}, "heldout": {"n": 3},
                         "bits_per_dim": {"steps": 2}, "dsm_loss": {"n_t": 2}},
          "methods": [{"name": "fused", "operator": "barycenter", "models": ["a", "b"],
                       "fit": {"data": data, "n_mc": 64}},
                      {"name": "a", "operator": "single", "models": ["a"]},
                      {"name": "b", "operator": "single", "models": ["b"]},
                      {"name": "or_t5", "operator": "superpose", "models": ["a", "b"], "temperature": 5.0},
                      {"name": "or", "operator": "superpose", "models": ["a", "b"], "bias": [0.0, 1.0]},
                      {"name": "pick", "operator": "random_choice", "models": ["a", "b"], "weights": [0.3, 0.7]}]}
    res = campaign.run_workflow(wf, progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert np.isclose(m.loc["fused", ["weight_a", "weight_b"]].sum(), 1.0)
    for col in ("test_bpd", "test_bpd_se", "test_dsm_loss", "test_dsm_loss_se"):
        assert np.isfinite(m.loc[["fused", "a"], col]).all() and np.isnan(m.loc["or_t5", col]), col  # no one density
    # random_choice and OR at T = 1 sample sum_i w_i p_i: its bits/dim from the members' paired likelihoods
    assert np.isnan(m.loc[["or", "pick"], "test_dsm_loss"]).all()
    d = 28 * 28
    for name, w in (("pick", [0.3, 0.7]), ("or", [1 / (1 + np.e), np.e / (1 + np.e)])):
        held = pd.read_csv(res.folder / "heldout" / f"{name}.csv")
        for member in ("a", "b"):  # same images, dequantisation and probes as the single-model rows
            single = pd.read_csv(res.folder / "heldout" / f"{member}.csv")
            assert np.allclose(held[f"bits_per_dim_{member}"], single["bits_per_dim"], rtol=1e-6)
        nats = -np.log(2) * d * held[["bits_per_dim_a", "bits_per_dim_b"]].to_numpy() + np.log(w)
        expect = -np.logaddexp(nats[:, 0], nats[:, 1]) / (d * np.log(2))
        assert np.allclose(held["bits_per_dim"], expect, rtol=1e-6)
        assert np.isclose(m.loc[name, "test_bpd"], expect.mean(), rtol=1e-6)
    assert m["mean_min_target_prob"].between(0, 0.5).all()
    held = pd.read_csv(res.folder / "heldout" / "a.csv")
    assert len(held) == 3 and set(held["label"]) <= {7, 9}
    assert "min_target_prob" in res.per_sample
    prov = (res.folder / "provenance.json").read_text()
    assert '"indices_sha256"' in prov  # the fit's data are described by the dataset kind
    again = campaign.run_workflow({**wf, "run_name": "r2"}, progress=False, verbose=False).metrics.set_index("method")
    assert np.allclose(again.loc[["fused", "a"], "test_bpd"], m.loc[["fused", "a"], "test_bpd"])  # seeded, paired


@pytest.mark.parametrize("fit, match", [
    ({"data_from": "a", "n": 4, "data": {"kind": "mnist_population"}}, "not both|give data_from"),
    ({"data": {"kind": "nope"}}, "fit.data.kind"),
    ({"data": {"kind": "mnist_population", "n": 4}, "n": 4}, "fit.n"),
    ({"data_from": "seven"}, "fit.n"),
])
def test_barycenter_fit_data_is_validated(digits_ckpt, tmp_path, fit, match):
    wf = _workflow(digits_ckpt, tmp_path)
    wf["methods"] = [{"name": "f", "operator": "barycenter", "models": ["seven", "nine"], "fit": fit}]
    with pytest.raises(WorkflowError, match=match):
        campaign.load_workflow(wf)


def test_checkpoint_guidance_is_classifier_free_guidance(digits_ckpt, tmp_path):
    import json
    import shutil

    from molfuse import bind
    from molfuse.training.checkpoints import load_model
    from molfuse.convert import score_fn

    m = _build({"g": {"kind": "checkpoint", "path": str(digits_ckpt), "cond": 7, "guidance": 2.0},
                "g0": {"kind": "checkpoint", "path": str(digits_ckpt), "cond": 7, "guidance": 0.0}}, tmp_path)
    net = load_model(digits_ckpt)  # predicts eps; the null class is 10
    x, t = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        s_c, s_null = score_fn(bind(net, 7), net.schedule)(x, t), score_fn(bind(net, 10), net.schedule)(x, t)
        got, got0 = score_fn(m["g"], None)(x, t), score_fn(m["g0"], None)(x, t)
    assert torch.allclose(got, 3.0 * s_c - 2.0 * s_null, atol=1e-4)  # (1 + w) s_c - w s_null
    assert torch.allclose(got0, s_c, atol=1e-5) and not torch.allclose(got, s_c, atol=1e-3)
    assert m["g"].guidance == 2.0 and "guidance=2.0" in repr(m["g"])
    plain = tmp_path / "no_dropout"  # the same weights, carded as trained without label dropout
    shutil.copytree(digits_ckpt, plain)
    card = json.loads((plain / "card.json").read_text())
    card["conditioning"]["cond_drop_prob"] = 0.0
    (plain / "card.json").write_text(json.dumps(card))
    for spec, match in (({"path": str(plain), "cond": 7, "guidance": 1.0}, "condition dropout"),
                        ({"path": str(digits_ckpt), "guidance": 1.0}, "needs cond"),
                        ({"path": str(digits_ckpt), "cond": 7, "guidance": -1.0}, "w >= 0")):
        with pytest.raises(WorkflowError, match=match):
            _build({"g": {"kind": "checkpoint", **spec}}, tmp_path)
