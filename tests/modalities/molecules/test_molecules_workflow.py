"""The molecules modality end to end at tiny size: train a few steps on the shipped subset, then
single / OR / AND / barycenter / ensemble workflows with the molecule evaluator and writers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("e3nn")
pytest.importorskip("lightning")

from molfuse.campaign import run_workflow  # noqa: E402
from molfuse.errors import WorkflowError  # noqa: E402
from molfuse.modalities.molecules import read_sdf, read_smiles  # noqa: E402
from molfuse.spaces import PointCloud  # noqa: E402
from molfuse.training import load_model, train_from_workflow  # noqa: E402

NET = {"name": "molecule_e3nn", "config": {"num_types": 4, "scalars": 8, "vectors": 2, "lmax": 1, "layers": 1}}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = tmp_path_factory.mktemp("mol")
    made = {}
    for name, data, net in (
            ("cyclic", {"where": {"rings": [1, 9]}}, NET),
            ("acyclic", {"where": {"rings": [0, 0]}}, NET),
            ("rings", {"properties": ["rings"]},
             {**NET, "config": {**NET["config"], "num_properties": 1, "property_mean": [1.75],
                                "property_std": [1.22]}})):
        wf = {"name": f"tiny_{name}", "seed": 0, "output": str(out / "train"), "architecture": net,
              "data": {"kind": "qm9", "source": "small", "n": 64, **data},
              "train": {"steps": 3, "batch_size": 16, "log_every": 1, "checkpoint_every": 3, "threads": 1,
                        "cond_drop_prob": 0.2 if name == "rings" else 0.0}}
        made[name] = train_from_workflow(wf, progress=False, verbose=False)
    return out, made


def test_cards_describe_molecules(ckpts):
    _, made = ckpts
    card = made["cyclic"].card
    assert card["modality"] == "molecules" and card["shape"] == [9, 7]
    assert card["space"] == {"kind": "point_cloud", "centred": 3} and card["normalisation"]["alphabet"] == list("CNOF")
    assert card["data"]["population"] == {"rings": [1, 9]} and sum(card["node_counts"].values()) == 64
    rings = made["rings"].card
    assert rings["conditioning"]["kind"] == "properties" and rings["conditioning"]["cond_drop_prob"] == 0.2
    net = load_model(made["rings"].checkpoint)
    assert net.space == PointCloud(3) and net.num_properties == 1


def test_a_molecule_workflow_runs_every_operator(ckpts):
    out, made = ckpts
    path = lambda k: str(made[k].checkpoint)  # noqa: E731
    wf = {"name": "tiny_mol", "output": str(out / "runs"), "run_name": "r", "n_samples": 6,
          "sampler": {"steps": 20, "chunk_size": 6, "threads": 1},
          "models": {"cyc": {"kind": "checkpoint", "path": path("cyclic")},
                     "acyc": {"kind": "checkpoint", "path": path("acyclic")},
                     "r3": {"kind": "checkpoint", "path": path("rings"), "cond": [3.0]},
                     "r3g": {"kind": "checkpoint", "path": path("rings"), "cond": [3.0], "guidance": 1.0}},
          "evaluation": {"reference_source": "small", "targets": {"rings": {"value": 3, "tolerance": 0}}},
          "methods": [{"name": "cyc", "operator": "single", "models": ["cyc"]},
                      {"name": "or", "operator": "superpose", "models": ["cyc", "acyc"]},
                      {"name": "and", "operator": "superpose", "models": ["cyc", "acyc"], "mode": "and"},
                      {"name": "avg", "operator": "barycenter", "models": ["cyc", "acyc"]},
                      {"name": "poe", "operator": "ensemble", "models": ["cyc", "acyc"], "rule": "sum"},
                      {"name": "rc", "operator": "random_choice", "models": ["cyc", "acyc"]},
                      {"name": "r3", "operator": "single", "models": ["r3"]},
                      {"name": "r3g", "operator": "single", "models": ["r3g"]}]}
    res = run_workflow(wf, progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert {"validity", "uniqueness", "novelty", "diversity", "rings_hit"} <= set(m.columns)
    assert m["validity"].between(0, 1).all() and (m["n"] == 6).all()
    per = pd.read_csv(res.folder / "per_sample.csv")
    assert {"smiles", "n_atoms", "logp", "rings", "ito_log_q_nats_cyc"} <= set(per.columns)
    assert per["n_atoms"].between(1, 9).all()
    mols, table = read_sdf(res.folder / "samples" / "or.sdf")
    assert len(table) == 6 and all(m is None or m.GetConformer().Is3D() for m in mols)
    assert len(read_smiles(res.folder / "samples" / "or.smi")[1]) == 6
    assert (res.folder / "samples" / "or.png").stat().st_size > 0 and (res.folder / "properties.png").is_file()
    assert json.loads((res.folder / "provenance.json").read_text())["modality"] == "molecules"
    with pytest.raises(WorkflowError, match="evaluation.targets.rings.value"):
        run_workflow({**wf, "run_name": "bad", "evaluation": {"targets": {"rings": {"tolerance": 1}}}},
                     progress=False, verbose=False)


def test_node_counts_follow_the_operators(ckpts):
    _, made = ckpts
    from molfuse.spaces import node_count_distribution

    cyc = {int(k): v for k, v in made["cyclic"].card["node_counts"].items()}
    acyc = {int(k): v for k, v in made["acyclic"].card["node_counts"].items()}
    mix = node_count_distribution([cyc, acyc], [0.5, 0.5], "mixture")
    prod = node_count_distribution([cyc, acyc], None, "product")
    assert set(prod) <= set(cyc) & set(acyc) and set(mix) == set(cyc) | set(acyc)
    assert np.isclose(sum(mix.values()), 1) and np.isclose(sum(prod.values()), 1)
    assert torch.is_tensor(torch.as_tensor(list(prod)))


def test_a_prompted_model_draws_sizes_given_its_condition(ckpts):
    from molfuse.campaign.kinds import build_models
    from molfuse.campaign.parse import parse_models
    from molfuse.schedules import VPSchedule

    _, made = ckpts
    card = made["rings"].card
    by = card["node_counts_by_condition"]
    assert sum(sum(h.values()) for h in by.values()) == sum(card["node_counts"].values()) == 64
    key = max(by, key=lambda k: sum(by[k].values()))
    path = str(made["rings"].checkpoint)
    specs = {"prompted": {"kind": "checkpoint", "path": path, "cond": [float(key)]},
             "unseen": {"kind": "checkpoint", "path": path, "cond": [0.5]},
             "plain": {"kind": "checkpoint", "path": str(made["cyclic"].checkpoint)}}
    models = build_models(SimpleNamespace(models=parse_models(specs)), VPSchedule())
    assert models["prompted"].node_counts == {int(n): c for n, c in by[key].items()}
    assert models["prompted"].node_counts_given == key and "sizes=p(n | " in repr(models["prompted"])
    assert models["unseen"].node_counts == {int(n): c for n, c in card["node_counts"].items()}
    assert models["unseen"].node_counts_given is None and "node_counts_by_condition" not in made["cyclic"].card


def test_explicit_hydrogens_are_the_same_code_with_a_flag(tmp_path):
    wf = {"name": "tiny_h", "seed": 0, "output": str(tmp_path),
          "architecture": {"name": "molecule_e3nn", "config": {**NET["config"], "num_types": 5}},
          "data": {"kind": "qm9", "source": "small", "n": 32, "hydrogens": "explicit"},
          "train": {"steps": 2, "batch_size": 16, "checkpoint_every": 2, "threads": 1}}
    card = train_from_workflow(wf, progress=False, verbose=False).card
    assert card["shape"] == [29, 8] and card["normalisation"]["alphabet"] == list("HCNOF")
    run = {"name": "tiny_h_run", "output": str(tmp_path / "runs"), "run_name": "r", "n_samples": 3,
           "sampler": {"steps": 20, "chunk_size": 3, "threads": 1},
           "models": {"h": {"kind": "checkpoint", "path": str(tmp_path / "tiny_h" / "checkpoint")}},
           "evaluation": {"reference_source": "small", "novelty": False},
           "methods": [{"name": "h", "operator": "single", "models": ["h"]}]}
    m = run_workflow(run, progress=False, verbose=False).metrics
    assert {"atom_stability", "mol_stability"} <= set(m.columns)  # defined with explicit hydrogens


def test_fcd_on_real_molecules():
    pytest.importorskip("fcd_torch")
    from molfuse.modalities.molecules import fcd, load_small

    s = load_small()
    a, b = list(s["train"].smiles[:200]), list(s["test"].smiles[:200])
    assert fcd(a, a) < 0.1 < fcd(a, b) < 10  # two real samples of QM9: small but not zero
