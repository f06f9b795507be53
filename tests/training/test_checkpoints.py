"""Checkpoints: safetensors + card round trip, and refusals of tampered or mismatched files."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

pytest.importorskip("safetensors")
pytest.importorskip("lightning")

import molfuse as mf  # noqa: E402
from molfuse.training.checkpoints import CheckpointError, load_model, save_checkpoint  # noqa: E402
from molfuse.nets import build  # noqa: E402
from molfuse.training import DiffusionModule  # noqa: E402

ARCH = {"name": "mlp", "config": {"dim": 2, "hidden": 16, "depth": 2, "time_dim": 8, "num_classes": 3}}


@pytest.fixture
def trained(tmp_path):
    """A few hand-driven training steps; returns the module and its saved EMA checkpoint."""
    torch.manual_seed(0)
    module = DiffusionModule(build(**ARCH), mf.VPSchedule(), ema_decay=0.5, cond_drop_prob=0.2, null_cond=3)
    opt = torch.optim.Adam(module.net.parameters(), lr=1e-2)
    x0, labels = torch.randn(64, 2), torch.randint(0, 3, (64,))
    for k in range(5):
        batch = {"x": x0, "cond": labels}
        loss = module.batch_loss(module.net, batch, torch.Generator().manual_seed(k), dropout=True).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        module.update_ema()
    folder = save_checkpoint(tmp_path / "ckpt", module.ema, {
        "modality": "vectors", "architecture": ARCH, "schedule": mf.VPSchedule(), "shape": [2],
        "normalisation": {"scale": 2.0, "shift": -1.0}, "data": {"kind": "test"}, "seed": 0, "steps": 5,
        "name": "tiny", "conditioning": {"kind": "class_label", "null_cond": 3, "cond_drop_prob": 0.2}})
    return module, folder


def test_round_trip_gives_the_ema_net(trained):
    module, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]  # no temporary files left
    model = load_model(folder)
    x, t, c = torch.randn(10, 2), torch.rand(10), torch.randint(0, 4, (10,))
    assert torch.equal(model(x, t, cond=c), module.ema(x, t, cond=c))
    assert not torch.equal(model(x, t, cond=c), module.net(x, t, cond=c))
    assert model.prediction == "eps" and model.schedule == mf.VPSchedule() and model.name == "tiny"
    assert model.normalisation == {"scale": 2.0, "shift": -1.0} and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    card = json.loads((folder / "card.json").read_text())
    assert card["weights"]["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert card["molfuse_version"] == mf.__version__ and card["architecture"] == ARCH
    assert load_model(folder / "card.json").card == card  # a card path works too


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_half_precision_storage_halves_the_file_and_loads_as_float32(trained, tmp_path, storage):
    module, folder = trained
    card = json.loads((folder / "card.json").read_text())
    half = save_checkpoint(tmp_path / storage, module.ema, {k: v for k, v in card.items() if k != "weights"},
                           storage=storage)
    hcard = json.loads((half / "card.json").read_text())
    assert hcard["weights"]["dtype"] == storage and "dtype" not in card["weights"]
    assert hcard["weights"]["bytes"] < 0.6 * card["weights"]["bytes"]
    model = load_model(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    want = {k: v.to(getattr(torch, storage)).float() for k, v in module.ema.state_dict().items()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k  # exactly the rounded weights
    with pytest.raises(CheckpointError, match="storage dtype"):
        save_checkpoint(tmp_path / "bad", module.ema, {k: v for k, v in card.items() if k != "weights"}, storage="int8")


def test_loaded_model_samples(trained):
    _, folder = trained
    model = load_model(folder)
    g = torch.Generator().manual_seed(0)
    res = mf.sample(mf.bind(model, 1), model.schedule, (32, 2), steps=20, generator=g)
    assert res.x.shape == (32, 2) and torch.isfinite(res.x).all()
    assert model.modality == "vectors" and model.space == mf.Euclidean()


def test_tampered_weights_are_refused(trained):
    _, folder = trained
    blob = bytearray((folder / "model.safetensors").read_bytes())
    blob[-1] ^= 0x01
    (folder / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        load_model(folder)


def test_a_card_that_names_a_key_twice_is_refused(trained):
    _, folder = trained
    text = (folder / "card.json").read_text()
    (folder / "card.json").write_text(text.replace('"name": "tiny"', '"name": "tiny", "name": "other"', 1))
    with pytest.raises(CheckpointError, match=r"card\.json: key 'name' is given twice in one object"):
        load_model(folder)


def test_wrong_architecture_config_is_refused(trained):
    _, folder = trained
    card = json.loads((folder / "card.json").read_text())
    card["architecture"]["config"]["hidden"] = 8
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(\d+\): .*inp.weight \(16, 2\) != \(8, 2\)"):
        load_model(folder)
    card["architecture"] = {"name": "nope", "config": {}}
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="unknown architecture 'nope'; registered: .*mlp"):
        load_model(folder)


def test_missing_keys_are_named(trained):
    from safetensors.torch import load_file, save_file

    _, folder = trained
    state = load_file(folder / "model.safetensors")
    del state["out.1.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    card = json.loads((folder / "card.json").read_text())
    card["weights"]["sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): out.1.bias; unexpected keys \(1\): extra.weight"):
        load_model(folder)


def test_missing_and_foreign_files_are_refused(trained, tmp_path):
    _, folder = trained
    with pytest.raises(CheckpointError, match="no checkpoint card"):
        load_model(tmp_path / "elsewhere")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_model(folder)
    (folder / "card.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a molfuse checkpoint card"):
        load_model(folder)


def test_save_refuses_a_card_that_would_not_load(tmp_path):
    net = build(**ARCH)
    base = {"modality": "vectors", "architecture": ARCH, "schedule": mf.VPSchedule(), "shape": [2]}
    with pytest.raises(CheckpointError, match="shape mismatches"):
        save_checkpoint(tmp_path, net, {**base, "architecture": {**ARCH, "config": {**ARCH["config"], "hidden": 8}}})
    with pytest.raises(CheckpointError, match="needs 'schedule'"):
        save_checkpoint(tmp_path, net, {k: v for k, v in base.items() if k != "schedule"})
    with pytest.raises(CheckpointError, match="needs 'modality'"):
        save_checkpoint(tmp_path, net, {k: v for k, v in base.items() if k != "modality"})
    with pytest.raises(CheckpointError, match="prediction must be one of"):
        save_checkpoint(tmp_path, net, {**base, "prediction": "noise"})
    with pytest.raises(CheckpointError, match="conditioning must be"):
        save_checkpoint(tmp_path, net, {**base, "conditioning": {"kind": "labels"}})
    assert not any(tmp_path.iterdir())


def test_cards_name_their_modality_and_refuse_unknown_or_old_ones(trained):
    _, folder = trained
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "modality": "hologram"}))
    with pytest.raises(CheckpointError, match="unknown modality 'hologram'; registered: .*vectors"):
        load_model(folder)
    old = {k: v for k, v in card.items() if k not in ("modality", "space", "shape")}
    (folder / "card.json").write_text(json.dumps({**old, "format_version": 1}))
    with pytest.raises(CheckpointError, match="format_version 1.*name no modality"):
        load_model(folder)


@pytest.mark.parametrize("name", ["../../other/model.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
def test_weights_outside_the_checkpoint_folder_are_refused(trained, tmp_path, name):
    _, folder = trained
    other = tmp_path / "other"
    other.mkdir(exist_ok=True)
    (other / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    card = json.loads((folder / "card.json").read_text())
    card["weights"]["file"] = name
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="weights.file must be a file name inside the checkpoint folder"):
        load_model(folder)


@pytest.fixture
def cloud_ckpt(tmp_path):
    """A point-cloud checkpoint (the tests' toyclouds modality): 8 padded nodes, sizes 4 and 5."""
    import toyclouds

    toyclouds.register()
    net = build("cloud_mlp", {"hidden": 8})
    return save_checkpoint(tmp_path / "cloud", net, {
        "modality": "toyclouds", "architecture": net.architecture, "schedule": mf.VPSchedule(), "shape": [8, 3],
        "space": {"kind": "point_cloud", "centred": 3}, "node_counts": {4: 3, 5: 2}})


def _edit_card(folder, **entries):
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, **entries}))


@pytest.mark.parametrize("field, value, message", [
    ("node_counts", {"12": 5}, r"node_counts: node count 12 exceeds the model's 8 nodes \(shape\[0\]\)"),
    ("node_counts", {}, r"node_counts: expected a non-empty mapping \{node count: how many\}; got \{\}"),
    ("node_counts", {"4": 0, "5": 0}, r"node_counts: every count is zero"),
    ("node_counts", {"4": -3, "5": 2}, r"node_counts\['4'\]: expected a finite count >= 0; got -3"),
    ("node_counts", {"five": 5}, r"node_counts: key 'five' is not a node count \(a whole number >= 1\)"),
    ("node_counts", {"0": 5}, r"node_counts: key '0' is not a node count"),
    ("node_counts", [4, 5], r"node_counts: expected a non-empty mapping"),
    ("node_counts_by_condition", {"3": {"9": 1}}, r"node_counts_by_condition\['3'\]: node count 9 exceeds"),
    ("node_counts_by_style", {"a": {"4": -1}}, r"node_counts_by_style\['a'\]\['4'\]: expected a finite count"),
])
def test_bad_size_histograms_in_a_card_name_the_card_and_the_field(cloud_ckpt, field, value, message):
    assert load_model(cloud_ckpt).card["node_counts"] == {"4": 3, "5": 2}
    _edit_card(cloud_ckpt, **{field: value})
    with pytest.raises(CheckpointError, match=f"^{cloud_ckpt / 'card.json'}: {message}"):
        load_model(cloud_ckpt)


def test_a_card_with_bad_sizes_is_never_written(tmp_path, cloud_ckpt):
    net = load_model(cloud_ckpt)
    card = {k: v for k, v in net.card.items() if k != "weights"}
    with pytest.raises(CheckpointError, match=r"^card: node_counts: node count 9 exceeds the model's 8 nodes"):
        save_checkpoint(tmp_path / "bad", net, {**card, "node_counts": {9: 1}})
    assert not (tmp_path / "bad").exists()


def test_node_counts_on_a_euclidean_card_are_refused(trained):
    _, folder = trained
    _edit_card(folder, node_counts={"2": 1})
    with pytest.raises(CheckpointError, match=r"card.json: node_counts: only cards of a masked space \(point clouds, chains\) have node counts"):
        load_model(folder)


def test_a_workflow_names_the_card_with_bad_sizes(cloud_ckpt, tmp_path):
    from molfuse.campaign import run_workflow
    from molfuse.errors import WorkflowError

    _edit_card(cloud_ckpt, node_counts={"4": 2, "5": -1})
    wf = {"name": "sizes", "output": str(tmp_path / "runs"), "n_samples": 4, "sampler": {"steps": 20, "threads": 1},
          "models": {"a": {"kind": "checkpoint", "path": str(cloud_ckpt)}},
          "methods": [{"name": "a", "operator": "single", "models": ["a"]}]}
    with pytest.raises(WorkflowError, match=rf"models.a: {cloud_ckpt / 'card.json'}: node_counts\['5'\]: expected a "
                                            r"finite count >= 0; got -1"):
        run_workflow(wf, progress=False, verbose=False)


def test_files_that_link_out_of_the_checkpoint_folder_are_refused(trained, tmp_path):
    """The path rules refuse ``../`` and absolute names; a link's target must stay inside too."""
    _, folder = trained
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("model.safetensors", "card.json"):
        (folder / name).rename(elsewhere / name)
        (folder / name).symlink_to(elsewhere / name)
        with pytest.raises(CheckpointError, match=rf"{folder / 'card.json'}: the (card|weights file {name}) is a "
                                                  rf"link to {elsewhere / name}, outside the checkpoint folder"):
            load_model(folder)
        (folder / name).unlink()
        (elsewhere / name).rename(folder / name)
    (folder / "v2.safetensors").symlink_to("model.safetensors")  # a link inside the folder is its own file
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "weights": {**card["weights"], "file": "v2.safetensors"}}))
    assert load_model(folder).checkpoint == folder / "v2.safetensors"
    linked = tmp_path / "linked"
    linked.symlink_to(folder, target_is_directory=True)  # the folder itself may be a link
    assert load_model(linked).name == "tiny"
