"""The ``distill`` training objective end to end on tiny vector models: teachers fine-tuned from one
parent, a style student trained through ``molfuse train``, grown by a teacher (incremental merging
from the teachers' own samples), sampled per style and mixed in a campaign, with the fidelity report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from molfuse.campaign import run_workflow
from molfuse.errors import WorkflowError
from molfuse.training import train_from_workflow
from molfuse.training.checkpoints import load_model

MLP = {"name": "mlp", "config": {"dim": 2, "hidden": 32, "depth": 2, "time_dim": 16}}
TRAIN = {"steps": 40, "batch_size": 64, "log_every": 10, "checkpoint_every": 20, "threads": 1}


def data(*means):
    return {"kind": "gaussian_mixture_samples", "means": [list(m) for m in means], "covs": [0.3] * len(means), "n": 256}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    base = {"seed": 0, "output": str(root / "out"), "architecture": MLP, "train": TRAIN}
    train_from_workflow({**base, "name": "parent", "checkpoint_dir": str(root / "parent"), "data": data((0, 0))},
                        progress=False, verbose=False)
    for name, mu in (("ta", (2, 0)), ("tb", (-2, 0)), ("tc", (0, 2))):
        train_from_workflow({**base, "name": name, "checkpoint_dir": str(root / name), "data": data(mu),
                             "init_from": str(root / "parent")}, progress=False, verbose=False)
    student = {**base, "name": "dmm", "checkpoint_dir": str(root / "dmm"), "data": data((2, 0), (-2, 0)),
               "architecture": {"name": "style_student", "config": {"base": MLP, "num_styles": 2}},
               "objective": {"kind": "distill", "teachers": [str(root / "ta"), str(root / "tb")],
                             "init_base": str(root / "parent"), "feature_layers": ["time_emb"], "feature_weight": 0.1,
                             "adversarial_weight": 0.01}}
    train_from_workflow(student, progress=False, verbose=False)
    grown = {**student, "name": "dmm3", "checkpoint_dir": str(root / "dmm3"),
             "architecture": {"name": "style_student", "config": {"base": MLP, "num_styles": 3}},
             "objective": {"kind": "distill", "teachers": [str(root / "tc")], "previous": str(root / "dmm"),
                           "source": "teacher_samples", "teacher_samples": {"n": 32, "steps": 20, "batch": 16}}}
    train_from_workflow(grown, progress=False, verbose=False)
    return root, student


def test_the_card_lists_every_teacher_and_the_student_loads(zoo):
    root, _ = zoo
    net = load_model(root / "dmm")
    obj = net.card["objective"]
    shas = [json.loads((root / n / "card.json").read_text())["weights"]["sha256"] for n in ("ta", "tb")]
    assert [t["sha256"] for t in obj["teachers"]] == shas and [t["style"] for t in obj["teachers"]] == [0, 1]
    assert net.card["styles"] == ["ta", "tb"] and net.card["conditioning"]["kind"] == "style"
    assert obj["init_base"]["name"] == "parent" and obj["feature_layers"] == ["time_emb"]
    assert net(torch.zeros(3, 2), torch.full((3,), 0.5), cond=1).shape == (3, 2)
    grown = load_model(root / "dmm3")
    assert grown.card["styles"] == ["ta", "tb", "tc"] and grown.card["objective"]["previous"]["name"] == "dmm"
    assert (root / "out" / "dmm3" / "teacher_samples.safetensors").is_file()


def test_a_teacher_in_another_convention_is_refused(zoo, tmp_path):
    root, student = zoo
    bad = {**student, "output": str(tmp_path), "schedule": {"kind": "vp", "beta_min": 0.1, "beta_max": 10.0}}
    with pytest.raises(WorkflowError, match=r"objective.teachers\[0\].*schedule"):
        train_from_workflow(bad, progress=False, verbose=False)
    wrong = {**student, "output": str(tmp_path), "architecture": {"name": "style_student",
                                                                  "config": {"base": MLP, "num_styles": 3}}}
    with pytest.raises(WorkflowError, match="num_styles: 3, but the objective has 2"):
        train_from_workflow(wrong, progress=False, verbose=False)
    with pytest.raises(WorkflowError, match="objective.kind"):
        train_from_workflow({**student, "objective": {"kind": "nope"}}, progress=False, verbose=False)


def test_styles_and_mixing_sample_in_a_campaign_with_the_fidelity_report(zoo, tmp_path):
    root, _ = zoo
    wf = {"name": "mix", "seed": 0, "output": str(tmp_path), "n_samples": 48,
          "sampler": {"steps": 20, "chunk_size": 48, "threads": 1},
          "models": {"ta": {"kind": "checkpoint", "path": str(root / "ta")},
                     "s_a": {"kind": "checkpoint", "path": str(root / "dmm3"), "cond": "ta"},
                     "s_c": {"kind": "checkpoint", "path": str(root / "dmm3"), "cond": 2},
                     "mixed": {"kind": "checkpoint", "path": str(root / "dmm3"), "cond": {"ta": 0.5, "tb": 0.5}}},
          "methods": [{"name": "teacher_a", "operator": "single", "models": ["ta"]},
                      {"name": "teacher_a_b", "operator": "single", "models": ["ta"]},
                      {"name": "student_a", "operator": "single", "models": ["s_a"]},
                      {"name": "student_c", "operator": "single", "models": ["s_c"]},
                      {"name": "student_mixed", "operator": "single", "models": ["mixed"]}],
          "reports": [{"kind": "fidelity", "pairs": [
              {"name": "a", "method": "student_a", "reference": "teacher_a", "control": "teacher_a_b"},
              {"name": "c vs a", "method": "student_c", "reference": "teacher_a"}]}]}
    res = run_workflow(wf, progress=False, verbose=False)
    fid = pd.read_csv(res.folder / "fidelity.csv")
    assert list(fid["name"]) == ["a", "c vs a"] and {"frechet", "frechet_control", "frechet_ratio"} <= set(fid)
    assert fid["frechet"].iloc[1] > fid["frechet"].iloc[0]  # another style is farther than the student's own
    assert "Fidelity" in (res.folder / "summary.md").read_text()
    for bad, match in ((5, "outside 0..2"), ("zz", "unknown style"), ([0.5, 0.6, 0.0], "sum to 1")):
        wf2 = {**wf, "models": {**wf["models"], "s_a": {"kind": "checkpoint", "path": str(root / "dmm3"), "cond": bad}}}
        with pytest.raises(WorkflowError, match=match):
            run_workflow(wf2, progress=False, verbose=False)
