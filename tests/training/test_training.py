"""Training: the pure loss, label dropout, EMA, the lightning loop, resume, `molfuse train`."""

from __future__ import annotations

import json
import signal
from itertools import islice

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch.utils.data import TensorDataset

pytest.importorskip("lightning")
pytest.importorskip("safetensors")

from molfuse import ConventionError, GaussianMixture, VPSchedule, WorkflowError, cli  # noqa: E402
from molfuse.training.checkpoints import load_model, read_card  # noqa: E402
from molfuse.losses import denoising_loss, drop_condition, dsm_loss  # noqa: E402
from molfuse.nets import build  # noqa: E402
from molfuse.errors import DataError  # noqa: E402
from molfuse.training import (DiffusionModule, StateDataset, StepBatches, TrainConfig, train,  # noqa: E402
                              train_from_workflow)

ARCH = {"name": "mlp", "config": {"dim": 2, "hidden": 32, "depth": 2, "time_dim": 16}}
GM = GaussianMixture([[-2.0, 0.0], [2.0, 0.5]], [0.3, 0.3])


class Wrapped:
    """``GM`` re-expressed as an eps / x0 / v predictor (MATH §1), to check the conversions."""

    def __init__(self, prediction: str):
        self.prediction, self.schedule = prediction, GM.schedule

    def __call__(self, x, t, cond=None):
        a, s = self.schedule.alpha(t).to(x.dtype)[:, None], self.schedule.sigma(t).to(x.dtype)[:, None]
        eps = -s * GM(x, t)
        x0 = (x - s * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.prediction]


def _data(n: int = 512, seed: int = 0) -> TensorDataset:
    return TensorDataset(GM.sample(n, torch.Generator().manual_seed(seed)).float())


def _config(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=64, lr=3e-3, ema_decay=0.9, log_every=10, checkpoint_every=10, threads=1)
    return TrainConfig(**{**base, **kw})


def _train(tmp, steps: int, **kw):
    torch.manual_seed(0)
    return train(build(**ARCH), _data(), VPSchedule(), _config(steps=steps, **kw), tmp,
                 card_extra={"modality": "vectors", "architecture": ARCH, "data": {"kind": "test"}}, progress=False)


# ---------------------------------------------------------------- the pure loss
def test_denoising_loss_of_eps_net_is_eps_mse():
    net = build(**ARCH)
    torch.nn.init.normal_(net.out[1].weight)
    g = torch.Generator().manual_seed(0)
    x0, t, eps = torch.randn(16, 2, generator=g), torch.rand(16, generator=g) * 0.9 + 0.05, torch.randn(16, 2, generator=g)
    sch = VPSchedule()
    xt = sch.alpha(t).float()[:, None] * x0 + sch.sigma(t).float()[:, None] * eps
    expected = (net(xt, t) - eps).pow(2).mean(1)
    torch.testing.assert_close(denoising_loss(net, x0, sch, t=t, eps=eps), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_every_prediction_type_gives_the_same_loss(prediction):
    g = torch.Generator().manual_seed(1)
    x0 = GM.sample(64, g)
    t, eps = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    ref = dsm_loss(GM, x0, GM.schedule, t, eps) / 2  # mean over the 2 coordinates
    torch.testing.assert_close(denoising_loss(Wrapped(prediction), x0, GM.schedule, t=t, eps=eps), ref)


def test_denoising_loss_draws_are_seeded_and_prediction_checked():
    net = build(**ARCH)
    x0 = torch.randn(8, 2)
    a = denoising_loss(net, x0, VPSchedule(), generator=torch.Generator().manual_seed(3))
    b = denoising_loss(net, x0, VPSchedule(), generator=torch.Generator().manual_seed(3))
    assert a.shape == (8,) and torch.equal(a, b)
    with pytest.raises(ConventionError, match="declares prediction='eps'"):
        denoising_loss(net, x0, VPSchedule(), prediction="v")


def test_drop_condition_replaces_the_expected_fraction():
    labels = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(0))
    out = drop_condition(labels, 0.3, 10, torch.Generator().manual_seed(1))
    dropped = out == 10
    assert abs(dropped.float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / 20000) ** 0.5
    assert torch.equal(out[~dropped], labels[~dropped]) and labels.max() < 10  # input untouched
    assert torch.equal(drop_condition(labels, 0.0, 10), labels)
    assert bool((drop_condition(labels, 1.0, 10) == 10).all())
    props = torch.ones(1000, 3)
    vec = drop_condition(props, 0.5, 0.0, torch.Generator().manual_seed(2))
    rows = vec.sum(1)
    assert set(rows.unique().tolist()) == {0.0, 3.0}  # whole rows are dropped


# ---------------------------------------------------------------- EMA, batches, config
def test_ema_is_the_bias_corrected_average():
    d = 0.8
    module = DiffusionModule(build(**ARCH), VPSchedule(), ema_decay=d)
    thetas = []
    for k in range(4):
        with torch.no_grad():
            for p in module.net.parameters():
                p.add_(0.1 * (k + 1))
        thetas.append([p.detach().clone() for p in module.net.parameters()])
        module.update_ema()
    # after K updates: ema = sum_j (1 - d) d^(K - j) theta_j / (1 - d^K), nothing of the initial weights
    K = len(thetas)
    for i, e in enumerate(module.ema.parameters()):
        expected = sum((1 - d) * d ** (K - j) * th[i] for j, th in enumerate(thetas, 1)) / (1 - d**K)
        torch.testing.assert_close(e, expected)
    assert int(module.ema_updates) == K
    assert not any(p.requires_grad for p in module.ema.parameters())
    assert any(not torch.equal(e, p) for e, p in zip(module.ema.parameters(), module.net.parameters()))
    with pytest.raises(WorkflowError, match="ema_decay: must be < 1"):
        TrainConfig(ema_decay=1.0)


def test_step_batches_depend_only_on_seed_and_step():
    full = [b.tolist() for b in islice(StepBatches(10, 4, seed=5), 8)]
    assert [b.tolist() for b in islice(StepBatches(10, 4, seed=5, start=5), 3)] == full[5:8]
    assert all(len(b) == 4 for b in full) and sorted(full[0] + full[1]) == sorted(set(full[0] + full[1]))
    big = next(iter(StepBatches(3, 7, seed=0)))  # batch larger than the data: permutations concatenated
    assert len(big) == 7 and set(big.tolist()) == {0, 1, 2}


def test_train_config_errors_name_the_field():
    with pytest.raises(WorkflowError, match="TrainConfig.lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(WorkflowError, match=r"train.lrr: unknown key \(did you mean 'lr'\?\)"):
        TrainConfig.from_dict({"lrr": 0.1})
    assert TrainConfig.from_dict({"lr": "1e-3", "steps": 5}).lr == 1e-3  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(WorkflowError, match="train.t_power"):
        TrainConfig.from_dict({"t_power": 0.0})


def test_t_power_is_recorded_only_when_not_uniform():
    """Cards and resume fingerprints of uniform-t runs are what they were before t_power existed."""
    from molfuse.training.config import recorded
    assert "t_power" not in recorded(TrainConfig())
    assert recorded(TrainConfig(t_power=2.0))["t_power"] == 2.0


# ---------------------------------------------------------------- the lightning loop
def test_training_reduces_the_loss_and_ships_the_ema(tmp_path):
    ckpt = _train(tmp_path, 120, val_fraction=0.1)
    card, _ = read_card(ckpt)
    losses = card["final_losses"]
    # the output layer starts at zero, so the initial loss is mean(eps^2) = 1
    assert losses["raw_train_loss"] < 0.5 and losses["ema_train_loss"] < 0.6 and losses["ema_val_loss"] < 0.6
    assert losses["ema_train_loss"] != losses["raw_train_loss"]  # EMA weights differ from the raw ones
    assert card["steps"] == 120 and card["session"]["resumed_from_step"] == 0
    assert (tmp_path / "last.ckpt").is_file() and (tmp_path / "logs" / "version_0" / "metrics.csv").is_file()
    model = load_model(ckpt)
    assert model.prediction == "eps" and model.schedule == VPSchedule()


def test_resume_after_an_interruption_continues_exactly(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    step = DiffusionModule.training_step

    def crash_at_25(self, batch, batch_idx):
        if self.global_step == 25:
            raise RuntimeError("simulated crash")
        return step(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(DiffusionModule, "training_step", crash_at_25)
        with pytest.raises(RuntimeError, match="simulated crash"):
            _train(a, 40)  # last.ckpt holds step 20 (checkpoint_every = 10)
    ckpt = _train(a, 40)
    card, _ = read_card(ckpt)
    assert card["steps"] == 40 and card["session"]["resumed_from_step"] == 20 and card["session"]["steps"] == 20
    straight = _train(b, 40)
    x, t = torch.randn(32, 2), torch.rand(32)
    torch.testing.assert_close(load_model(ckpt)(x, t), load_model(straight)(x, t), rtol=0, atol=0)
    again = read_card(_train(a, 40))[0]  # a finished run rerun trains nothing: its card keeps the session that trained
    assert again["session"] == card["session"] and again["weights"]["sha256"] == card["weights"]["sha256"]
    more = _train(a, 50)  # rerun with more steps: continues from 40
    assert read_card(more)[0]["session"]["resumed_from_step"] == 40 and read_card(more)[0]["steps"] == 50
    assert len(list((a / "logs").glob("version_*"))) == 4
    with pytest.raises(WorkflowError, match="train.lr"):
        _train(a, 60, lr=1e-2)  # another run in the same folder is refused
    with pytest.raises(WorkflowError, match="step 50 > steps = 30"):
        _train(a, 30)


def test_an_interrupted_run_ships_nothing_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C inside lightning's loop: lightning exits (status 1); the half-trained net is not shipped."""
    step = DiffusionModule.training_step

    def ctrl_c_at_15(self, batch, batch_idx):
        if self.global_step == 15:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    handler = signal.getsignal(signal.SIGINT)
    try:
        with monkeypatch.context() as m:
            m.setattr(DiffusionModule, "training_step", ctrl_c_at_15)
            with pytest.raises((SystemExit, WorkflowError)):
                _train(tmp_path, 40)
    finally:
        signal.signal(signal.SIGINT, handler)  # lightning ignores Ctrl-C from then on
    assert not (tmp_path / "checkpoint").exists() and (tmp_path / "last.ckpt").is_file()
    assert read_card(_train(tmp_path, 40))[0]["session"]["resumed_from_step"] == 10


def test_cooldown_rate_and_resuming_a_constant_run_into_it(tmp_path):
    """The rate is lr until start, a half cosine to final * lr, then flat; a constant run at step 20
    resumed into a cooldown from 20 equals a straight run with that cooldown, bit for bit."""
    m = DiffusionModule(build(**ARCH), VPSchedule(), lr=1.0, cooldown=(10, 20, 0.1))
    assert [m.lr_at(k) for k in (0, 9, 10)] == [1.0, 1.0, 1.0]
    assert m.lr_at(20) == pytest.approx(0.1 + 0.9 * 0.5) and m.lr_at(30) == pytest.approx(0.1) == m.lr_at(99)
    cool = dict(cooldown_start=20, cooldown_steps=20, cooldown_final=0.0)
    _train(tmp_path / "a", 20)  # constant rate to step 20
    resumed = _train(tmp_path / "a", 40, **cool)
    straight = _train(tmp_path / "b", 40, **cool)
    x, t = torch.randn(32, 2), torch.rand(32)
    torch.testing.assert_close(load_model(resumed)(x, t), load_model(straight)(x, t), rtol=0, atol=0)
    card = read_card(resumed)[0]
    assert card["training"]["cooldown_start"] == 20 and card["session"]["resumed_from_step"] == 20
    constant = _train(tmp_path / "c", 40)
    assert "cooldown_start" not in read_card(constant)[0]["training"]  # cards of constant runs are unchanged
    assert not torch.equal(load_model(constant)(x, t), load_model(straight)(x, t))
    with pytest.raises(WorkflowError, match="cooldown_start"):  # the past would differ: refused
        _train(tmp_path / "c", 60, cooldown_start=30, cooldown_steps=10)
    with pytest.raises(WorkflowError, match="train.cooldown_final"):
        TrainConfig.from_dict({"cooldown_start": 5, "cooldown_final": 2})


def test_ship_raw_weights_gives_the_trained_net_not_its_ema(tmp_path):
    raw = _train(tmp_path / "r", 20, ship_weights="raw")
    saved = torch.load(tmp_path / "r" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    net = load_model(raw)
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved[f"net.{k}"]), k
    assert read_card(raw)[0]["training"]["ship_weights"] == "raw"
    ema = load_model(_train(tmp_path / "e", 20))
    assert "ship_weights" not in ema.card["training"]
    x, t = torch.randn(8, 2), torch.rand(8)
    assert not torch.equal(net(x, t), ema(x, t))


def test_labels_are_used_only_by_a_conditional_net(tmp_path):
    x = _data(128).tensors[0]
    labelled = TensorDataset(x, (x[:, 0] > 0).long())
    ckpt = train(build(**ARCH), labelled, VPSchedule(), _config(steps=5), tmp_path / "u",
                 card_extra={"modality": "vectors"},
                 progress=False)  # unconditional: labels ignored; the architecture comes from net.architecture
    assert read_card(ckpt)[0]["conditioning"] == {"kind": "none", "null_cond": None, "cond_drop_prob": 0.0}
    with pytest.raises(WorkflowError, match="train.cond_drop_prob: .*the data have no conditions"):
        train(build(**ARCH), TensorDataset(x), VPSchedule(), _config(steps=5, cond_drop_prob=0.1), tmp_path / "v",
              card_extra={"modality": "vectors", "architecture": ARCH}, progress=False)


# ---------------------------------------------------------------- the workflow and the command
TINY = {
    "name": "tinytrain", "seed": 2,
    "architecture": {"name": "mlp", "config": {"dim": 2, "hidden": 32, "depth": 1, "time_dim": 16, "num_classes": 2}},
    "data": {"kind": "gaussian_mixture_samples", "means": [[-2, 0], [2, 0]], "covs": [0.3, 0.3], "n": 256,
             "labels": True},
    "train": {"steps": 30, "batch_size": 64, "lr": "2e-3", "ema_decay": 0.9, "cond_drop_prob": 0.2,
              "log_every": 5, "checkpoint_every": 10, "val_fraction": 0.2, "threads": 1, "device": "cpu"},
}


def test_molfuse_train_writes_the_results_folder(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(cli.main, ["train", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "out" / "tinytrain"
    for f in ("config.yaml", "provenance.json", "metrics.csv", "training_log.csv", "loss_curve.png", "summary.md",
              "last.ckpt", "checkpoint/model.safetensors", "checkpoint/card.json"):
        assert (folder / f).is_file(), f
    assert yaml.safe_load((folder / "config.yaml").read_text())["train"]["lr"] == 2e-3
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["seeds"]["workflow"] == 2 and len(prov["checkpoints"]) == 2
    model = load_model(folder / "checkpoint")
    assert model.card["data"]["labels"] and model.card["training"]["cond_drop_prob"] == 0.2
    assert model.card["modality"] == "vectors" and model.card["conditioning"]["kind"] == "class_label"
    assert model(torch.zeros(3, 2), torch.full((3,), 0.5), cond=torch.tensor([0, 1, 2])).shape == (3, 2)
    assert "checkpoint:" in res.output


@pytest.mark.parametrize("change, field", [
    ({"architecture": {"name": "nope"}}, "architecture.name"),
    ({"data": {"kind": "nope"}}, "data.kind"),
    ({"data": {**TINY["data"], "n": 0}}, "data.n"),
    ({"train": {"steps": 0}}, "train.steps"),
    ({"train": {"seed": 1}}, "train.seed"),
    ({"architecture": {"name": "mlp", "config": {"dim": 2, "widht": 3}}}, "architecture.config"),
])
def test_molfuse_train_reports_workflow_errors(tmp_path, change, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, **change}))
    res = CliRunner().invoke(cli.main, ["train", str(path), "--out", str(tmp_path)])
    assert res.exit_code == 1 and field in res.output, res.output


# ---------------------------------------------------------------- training data that cannot be right
def test_a_garbage_npz_as_data_source_is_refused_before_anything_is_written(tmp_path):
    pytest.importorskip("biotite")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x80\x04not an archive" * 20)
    wf = {"name": "prot", "output": str(tmp_path / "out"), "architecture": {"name": "mlp", "config": {"dim": 3}},
          "data": {"kind": "protein_backbones", "source": str(garbage)}}
    path = tmp_path / "prot.yaml"
    path.write_text(yaml.safe_dump(wf))
    res = CliRunner().invoke(cli.main, ["train", str(path)])
    assert res.exit_code == 1, res.output
    assert (f"data (protein_backbones): source {garbage} is not a valid numeric .npz file: it is not a "
            "(complete) zip archive of .npy arrays; molfuse never reads pickled data") in res.output
    assert "allow_pickle" not in res.output and not (tmp_path / "out").exists()


def test_training_data_far_out_of_range_is_refused_naming_the_source(tmp_path):
    """Coordinates x1e30 used to train (loss 1.02): the noised data never reach the prior."""
    wf = {**TINY, "output": str(tmp_path / "out"),
          "data": {"kind": "gaussian_mixture_samples", "means": [[1e30, 0.0], [0.0, 1.0]], "covs": [0.1, 0.1],
                   "n": 64}}
    with pytest.raises(WorkflowError, match=r"^data \(gaussian_mixture_samples\): (\d+) of 128 values \(in \1 of 64 "
                                            r"samples\) exceed 1522 in size \(largest 1e\+30\); noised to t = 1 by "
                                            r"\{'kind': 'vp', .*\} they would lie over 10 standard deviations from "
                                            r"the N\(0, I\) prior\. Check the data's units"):
        train_from_workflow(wf, progress=False, verbose=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, message", [
    (float("nan"), r"^the training data: 3 of 1024 values are NaN or inf \(in 3 of 512 samples\)$"),
    (float("inf"), r"NaN or inf \(in 3 of 512 samples\)"),
    (1e30, r"^the training data: 3 of 1024 values \(in 3 of 512 samples\) exceed 1522 in size"),
])
def test_train_refuses_non_finite_or_absurd_states(tmp_path, value, message):
    x = _data().tensors[0].clone()
    x[[5, 9, 11], 0] = value
    with pytest.raises(DataError, match=message):
        train(build(**ARCH), TensorDataset(x), VPSchedule(), _config(steps=2), tmp_path,
              card_extra={"modality": "vectors", "architecture": ARCH}, progress=False)
    assert not any(tmp_path.iterdir())


def test_a_mask_with_more_nodes_than_the_model_is_refused(tmp_path):
    import toyclouds
    from molfuse.spaces import node_masks

    toyclouds.register()
    net = build("cloud_mlp", {"hidden": 8})
    mask = node_masks(torch.tensor([12, 10, 12, 11]), 12)
    x = torch.randn(4, 12, 3) * mask[..., None]
    card = {"modality": "toyclouds", "space": {"kind": "point_cloud", "centred": 3}}
    with pytest.raises(DataError, match=r"^the training data: states of shape \[12, 3\] do not fit the model's shape "
                                        r"\[9, 3\]: masks of up to 12 real nodes \(padded to 12\) on a model of 9 nodes"):
        train(net, StateDataset(x, mask), VPSchedule(), _config(steps=2), tmp_path, progress=False,
              card_extra={**card, "shape": [9, 3]})
    with pytest.raises(ConventionError, match=r"node_counts: node count 13 exceeds the model's 12 nodes"):
        train(net, StateDataset(x, mask), VPSchedule(), _config(steps=2), tmp_path, progress=False,
              card_extra={**card, "node_counts": {12: 2, 13: 1}})  # refused before training, not when shipping
    assert not any(tmp_path.iterdir())


def test_fine_tuning_onto_more_nodes_continues_a_net_that_reads_relative_positions_only(tmp_path):
    """cloud_mlp's weights do not depend on the node count: a 9-node parent continues on 12-node
    clouds with every weight copied, and the card records the parent's shape."""
    import toyclouds

    toyclouds.register()
    base = {"seed": 0, "architecture": {"name": "cloud_mlp", "config": {"hidden": 8}},
            "train": {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "threads": 1}}
    parent = train_from_workflow({**base, "name": "nine", "output": str(tmp_path / "a"),
                                  "data": {"kind": "toy_clouds", "n": 16, "sizes": [4, 5], "max_nodes": 9}},
                                 progress=False, verbose=False)
    wf = {**base, "name": "twelve", "output": str(tmp_path / "b"), "init_from": str(parent.checkpoint),
          "train": {**base["train"], "steps": 1, "checkpoint_every": 1, "lr": 1e-4}}
    child = train_from_workflow({**wf, "data": {"kind": "toy_clouds", "n": 16, "sizes": [11, 12], "max_nodes": 12}},
                                progress=False, verbose=False)
    card = load_model(child.checkpoint).card
    assert card["shape"] == [12, 3] and card["init_from"]["shape"] == [9, 3]
    a, b = load_model(parent.checkpoint).state_dict(), load_model(child.checkpoint).state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3  # one small step from the parent's weights


def test_fine_tuning_a_net_whose_weights_depend_on_the_state_size_is_refused_naming_both(tmp_path):
    """An MLP on flattened 2-vectors cannot continue on 3-vectors: refused before training."""
    base = {"seed": 0, "train": {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "threads": 1}}
    parent = train_from_workflow({**base, "name": "two", "output": str(tmp_path / "a"), "architecture": ARCH,
                                  "data": {"kind": "gaussian_mixture_samples", "means": [[-2, 0], [2, 0]],
                                           "covs": [0.3, 0.3], "n": 64}},
                                 progress=False, verbose=False)
    arch3 = {"name": "mlp", "config": {**ARCH["config"], "dim": 3}}
    wf = {**base, "name": "three", "output": str(tmp_path / "b"), "init_from": str(parent.checkpoint),
          "architecture": arch3, "data": {"kind": "gaussian_mixture_samples", "means": [[-2, 0, 0], [2, 0, 0]], "covs": [0.3, 0.3],
                                         "n": 64}}
    with pytest.raises(WorkflowError, match=rf"^init_from: {parent.checkpoint}: data \(gaussian_mixture_samples\): states of shape "
                                            r"\[3\] do not fit the model's shape \[2\]$"):
        train_from_workflow(wf, progress=False, verbose=False)
    assert not (tmp_path / "b").exists()


def _unconditional_cloud_parent(tmp_path):
    """(workflow base, trained checkpoint) of a tiny unconditional cloud_mlp parent, for init_fresh."""
    import toyclouds

    toyclouds.register()
    base = {"seed": 0, "data": {"kind": "toy_clouds", "n": 16, "sizes": [4, 5], "max_nodes": 6},
            "train": {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "threads": 1}}
    parent = train_from_workflow({**base, "name": "plain", "output": str(tmp_path / "a"),
                                  "architecture": {"name": "cloud_mlp", "config": {"hidden": 8}}},
                                 progress=False, verbose=False)
    return base, parent


def test_init_fresh_adds_a_conditioning_to_an_unconditional_parent_and_copies_the_rest(tmp_path):
    """``init_fresh: [prop]``: the property layer a conditional child has and its unconditional
    parent lacks starts fresh; every other weight is the parent's; the card names both."""
    base, parent = _unconditional_cloud_parent(tmp_path)
    child_arch = {"name": "cloud_mlp", "config": {"hidden": 8, "properties": 1}}
    wf = {**base, "name": "cond", "output": str(tmp_path / "b"), "init_from": str(parent.checkpoint),
          "architecture": child_arch, "train": {**base["train"], "steps": 1, "checkpoint_every": 1, "lr": 1e-4}}
    with pytest.raises(WorkflowError, match=r"differs from this workflow in architecture"):
        train_from_workflow(wf, progress=False, verbose=False)  # without init_fresh: refused as before
    child = train_from_workflow({**wf, "init_fresh": ["prop"]}, progress=False, verbose=False)
    card = load_model(child.checkpoint).card
    assert card["init_from"]["fresh"] == ["prop"] and card["init_from"]["architecture"]["config"] == {"hidden": 8}
    a, b = load_model(parent.checkpoint).state_dict(), load_model(child.checkpoint).state_dict()
    assert set(b) - set(a) == {"prop.weight", "prop.bias"}
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3


@pytest.mark.parametrize("change, message", [
    ({"init_fresh": ["prop"], "init_from": None}, r"^init_fresh: names weights that do not come from the parent: "
                                                 r"it needs init_from$"),
    ({"init_fresh": "prop"}, r"^init_fresh: expected a list of module names"),
    ({"init_fresh": ["nothing_here"]}, r"^init_fresh: nothing_here names no weight of this workflow's net$"),
    ({"init_fresh": ["prop"], "architecture": {"name": "cloud_mlp", "config": {"hidden": 16, "properties": 1}}},
     r"beyond init_fresh \(prop\) the weights differ \(of another shape: embed.0.bias, embed.0.weight"),
])
def test_init_fresh_refusals_name_the_problem(tmp_path, change, message):
    base, parent = _unconditional_cloud_parent(tmp_path)
    wf = {**base, "name": "cond", "output": str(tmp_path / "b"), "init_from": str(parent.checkpoint),
          "architecture": {"name": "cloud_mlp", "config": {"hidden": 8, "properties": 1}}, **change}
    with pytest.raises(WorkflowError, match=message):
        train_from_workflow(wf, progress=False, verbose=False)
    assert not (tmp_path / "b").exists()


def test_molecules_of_more_atoms_than_the_normalisation_allows_are_refused_before_training(tmp_path):
    pytest.importorskip("e3nn")
    pytest.importorskip("rdkit")
    from molfuse.modalities.molecules import normalisation_for
    from molfuse.spaces import node_masks
    from molfuse.training.checkpoints import CheckpointError

    net = build("molecule_e3nn", {"num_types": 4, "scalars": 8, "vectors": 2, "layers": 1})
    mask = node_masks(torch.tensor([12, 9, 10]), 12)
    x = torch.randn(3, 12, 7) * mask[..., None]
    with pytest.raises(CheckpointError, match=r"^card: shape \[12, 7\]: 12 atoms per molecule, but the "
                                              r"normalisation's max_atoms is 9$"):
        train(net, StateDataset(x, mask), VPSchedule(), _config(steps=2), tmp_path, progress=False,
              card_extra={"modality": "molecules", "space": {"kind": "point_cloud", "centred": 3},
                          "normalisation": normalisation_for("implicit")})
    assert not any(tmp_path.iterdir())
