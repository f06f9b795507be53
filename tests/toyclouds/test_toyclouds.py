"""A modality written as one folder (this one) plugs in: it registers itself, trains checkpoints
through ``molfuse train``'s workflow path, and runs a superposition workflow with its own
evaluator, schema, metric columns and file writer — no file of molfuse names it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("lightning")

from molfuse import plugins  # noqa: E402
from molfuse.campaign import run_workflow  # noqa: E402
from molfuse.errors import WorkflowError  # noqa: E402
from molfuse.spaces import PointCloud  # noqa: E402
from molfuse.training import load_model, train_from_workflow  # noqa: E402

import toyclouds  # noqa: E402


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    toyclouds.register()
    out = tmp_path_factory.mktemp("clouds")
    ckpts = {}
    for shape, sizes in (("ring", [4, 5, 6]), ("rod", [5, 6, 7])):
        wf = {"name": f"toy_{shape}", "seed": 0, "output": str(out / "train"),
              "architecture": {"name": "cloud_mlp", "config": {"hidden": 32}},
              "data": {"kind": "toy_clouds", "shape": shape, "n": 128, "sizes": sizes},
              "train": {"steps": 6, "batch_size": 32, "log_every": 3, "checkpoint_every": 6, "threads": 1}}
        ckpts[shape] = train_from_workflow(wf, progress=False, verbose=False)
    return out, ckpts


def test_checkpoints_record_the_modality_space_and_sizes(clouds):
    _, ckpts = clouds
    card = ckpts["ring"].card
    assert card["modality"] == "toyclouds" and card["space"] == {"kind": "point_cloud", "centred": 3}
    assert card["shape"] == [8, 3] and set(map(int, card["node_counts"])) == {4, 5, 6}
    net = load_model(ckpts["ring"].checkpoint)
    assert net.space == PointCloud(3) and net.modality == "toyclouds"
    # masking: padding never changes the real nodes' output
    x, mask = torch.randn(2, 8, 3), torch.arange(8)[None, :] < torch.tensor([[4], [6]])
    y = x.clone()
    y[~mask] = 100.0
    t = torch.full((2,), 0.3)
    assert torch.allclose(net(x, t, mask=mask)[mask], net(y, t, mask=mask)[mask], atol=1e-6)


def test_a_superposition_workflow_runs_with_the_modality_s_own_evaluator(clouds):
    out, ckpts = clouds
    wf = {"name": "toy_fusion", "output": str(out / "runs"), "run_name": "r", "n_samples": 12,
          "sampler": {"steps": 30, "chunk_size": 6, "threads": 1},
          "models": {"ring": {"kind": "checkpoint", "path": str(ckpts["ring"].checkpoint)},
                     "rod": {"kind": "checkpoint", "path": str(ckpts["rod"].checkpoint)}},
          "evaluation": {"target_rod_share": 0.5},
          "methods": [{"name": "ring", "operator": "single", "models": ["ring"]},
                      {"name": "or", "operator": "superpose", "models": ["ring", "rod"], "weights": [0.5, 0.5]},
                      {"name": "and", "operator": "superpose", "models": ["ring", "rod"], "mode": "and"},
                      {"name": "avg", "operator": "barycenter", "models": ["ring", "rod"]}]}
    res = run_workflow(wf, progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert list(m.columns[:9]) == ["operator", "models", "n", "n_valid", "n_failed", "rod_share", "rod_share_error",
                                   "mean_nodes", "max_abs_centre_of_mass"]  # the evaluator's column order
    assert (m["n_valid"] == 12).all() and (m["max_abs_centre_of_mass"] < 1e-4).all()
    per = pd.read_csv(res.folder / "per_sample.csv")
    assert {"nodes", "linearity", "shape", "ito_log_q_nats_ring", "ito_log_q_nats_rod"} <= set(per.columns)
    nodes = per.groupby("method")["nodes"].apply(set)
    assert nodes["ring"] <= {4, 5, 6}  # sizes from the member's own histogram
    assert nodes["and"] <= {5, 6} and nodes["avg"] <= {5, 6}  # AND / barycenter: the product of histograms
    assert nodes["or"] <= {4, 5, 6, 7}  # OR: the mixture
    assert np.isfinite(per.loc[per["method"] == "or", "ito_log_q_nats_rod"]).all()
    xyz = (res.folder / "samples" / "or.xyz").read_text().splitlines()
    assert int(xyz[0]) in (4, 5, 6, 7) and xyz[2].startswith("C ")
    assert json.loads((res.folder / "provenance.json").read_text())["modality"] == "toyclouds"
    with pytest.raises(WorkflowError, match="evaluation.target_rod_share"):
        run_workflow({**wf, "run_name": "bad", "evaluation": {"target_rod_share": 2}}, progress=False, verbose=False)


def test_a_workflow_can_choose_the_sizes_a_checkpoint_draws(clouds):
    """``sizes: {7: 1}`` draws 7-node rings only (a size inside the model's capacity that its own
    histogram never draws), and fusion combines the chosen histogram like a card's; sizes beyond the
    capacity, malformed or all-zero are refused naming the model and the field."""
    out, ckpts = clouds
    ring = {"kind": "checkpoint", "path": str(ckpts["ring"].checkpoint)}
    wf = {"name": "toy_sizes", "output": str(out / "runs"), "run_name": "r", "n_samples": 6,
          "sampler": {"steps": 10, "chunk_size": 6, "threads": 1},
          "models": {"ring7": {**ring, "sizes": {7: 1}}, "ring": ring,
                     "rod": {"kind": "checkpoint", "path": str(ckpts["rod"].checkpoint), "sizes": {"6": 1, "7": 3}}},
          "methods": [{"name": "ring7", "operator": "single", "models": ["ring7"]},
                      {"name": "and", "operator": "superpose", "models": ["ring", "rod"], "mode": "and"}]}
    res = run_workflow(wf, progress=False, verbose=False)
    nodes = pd.read_csv(res.folder / "per_sample.csv").groupby("method")["nodes"].apply(set)
    assert nodes["ring7"] == {7} and nodes["and"] == {6}  # {4, 5, 6} x {6, 7}: 6 only
    for sizes, said in (({9: 1}, r"node count 9 is not a whole number in 1 \.\. 8"), ({7: -1}, "weight of 7"),
                        ({7: 0}, "sum to 0"), ([7], "expected a mapping"), ({"7.5": 1}, "'7.5' is not a whole")):
        bad = {**wf, "run_name": "bad", "models": {"ring7": {**ring, "sizes": sizes}}, "methods": wf["methods"][:1]}
        with pytest.raises(WorkflowError, match=rf"models.ring7: sizes: .*{said}"):
            run_workflow(bad, progress=False, verbose=False)


def test_the_modality_is_found_by_name_and_an_unknown_one_is_named():
    toyclouds.register()
    assert plugins.modality("toyclouds") is toyclouds.MODALITY
    assert plugins.data_kind_modality("toy_clouds") == "toyclouds"
    with pytest.raises(plugins.MissingModalityError, match="unknown modality 'bubbles'; registered: .*toyclouds"):
        plugins.modality("bubbles")


def test_numeric_property_conditions_travel_from_data_to_card_to_workflow(clouds):
    out, _ = clouds
    wf = {"name": "toy_radius", "seed": 0, "output": str(out / "train"),
          "architecture": {"name": "cloud_mlp", "config": {"hidden": 32, "properties": 1}},
          "data": {"kind": "toy_clouds", "shape": "ring", "n": 128, "sizes": [5], "radius_property": True},
          "train": {"steps": 60, "batch_size": 64, "lr": 0.005, "log_every": 30, "checkpoint_every": 60,
                    "threads": 1}}
    ckpt = train_from_workflow(wf, progress=False, verbose=False)
    assert ckpt.card["conditioning"]["kind"] == "properties"
    run = {"name": "toy_radius_run", "output": str(out / "runs"), "run_name": "r", "n_samples": 16,
           "sampler": {"steps": 40, "chunk_size": 16, "threads": 1},
           "models": {"small": {"kind": "checkpoint", "path": str(ckpt.checkpoint), "cond": [0.6]},
                      "large": {"kind": "checkpoint", "path": str(ckpt.checkpoint), "cond": [1.9]}},
           "methods": [{"name": "small", "operator": "single", "models": ["small"]},
                       {"name": "large", "operator": "single", "models": ["large"]}]}
    m = run_workflow(run, progress=False, verbose=False).metrics.set_index("method")
    assert m.loc["large", "mean_radius"] > m.loc["small", "mean_radius"]  # the property is read
    with pytest.raises(WorkflowError, match="models.small: cond: expected property values"):
        run_workflow({**run, "run_name": "bad", "models": {**run["models"], "small": {
            "kind": "checkpoint", "path": str(ckpt.checkpoint), "cond": "big"}}}, progress=False, verbose=False)


def test_a_barycenter_fit_on_clouds_larger_than_its_members_is_refused(clouds):
    """12-node clouds used to fit λ of 8-node members: refused naming both, as training data are."""
    out, ckpts = clouds
    wf = {"name": "toy_fit", "output": str(out / "runs"), "run_name": "big", "n_samples": 4,
          "sampler": {"steps": 20, "threads": 1},
          "models": {s: {"kind": "checkpoint", "path": str(c.checkpoint)} for s, c in ckpts.items()},
          "methods": [{"name": "bary", "operator": "barycenter", "models": ["ring", "rod"],
                       "fit": {"data": {"kind": "toy_clouds", "n": 16, "sizes": [11, 12], "max_nodes": 12}}}]}
    with pytest.raises(WorkflowError, match=r"^methods\[0\] \(bary\): fit.data \(toy_clouds\): states of shape \[12, 3\] "
                                            r"do not fit the model's shape \[8, 3\]: masks of up to 12 real nodes "
                                            r"\(padded to 12\) on a model of 8 nodes$"):
        run_workflow(wf, progress=False, verbose=False)
