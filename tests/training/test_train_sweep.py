"""Training workflows: sweeps (one run per combination) and fine-tuning with init_from."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner

pytest.importorskip("lightning")
pytest.importorskip("safetensors")

from molfuse import WorkflowError, cli  # noqa: E402
from molfuse.training.checkpoints import load_model  # noqa: E402
from molfuse.training import expand_sweep, load_train_workflow, train_from_workflow, train_sweep  # noqa: E402

BASE = {
    "name": "base", "seed": 0,
    "architecture": {"name": "mlp", "config": {"dim": 2, "hidden": 16, "depth": 1, "time_dim": 8}},
    "data": {"kind": "gaussian_mixture_samples", "means": [[-2, 0], [2, 0]], "covs": [0.3, 0.3], "n": 64},
    "train": {"steps": 4, "batch_size": 16, "lr": 1e-3, "ema_decay": 0.9, "log_every": 2, "checkpoint_every": 2,
              "threads": 1},
}


def test_sweep_is_the_product_with_values_substituted():
    wf = {**BASE, "name": "r_n{data.n}_s{seed}", "checkpoint_dir": "models/x/n{data.n}_s{seed}",
          "data": {**BASE["data"], "seed": "{seed}"}, "sweep": {"data.n": [8, 32], "seed": [0, 1, 2]}}
    runs = expand_sweep(wf)
    assert [r["name"] for r in runs] == ["r_n8_s0", "r_n8_s1", "r_n8_s2", "r_n32_s0", "r_n32_s1", "r_n32_s2"]
    assert runs[4]["data"]["n"] == 32 and runs[4]["seed"] == 1 and runs[4]["data"]["seed"] == 1  # typed, not "1"
    assert runs[4]["checkpoint_dir"] == "models/x/n32_s1" and "sweep" not in runs[4]
    assert [w.name for w in map(load_train_workflow, runs)] == [r["name"] for r in runs]
    assert expand_sweep(BASE) == [BASE]


@pytest.mark.parametrize("sweep, field", [
    ({"seed": 3}, "sweep.seed"),
    ({"seed": []}, "sweep.seed"),
    ({"nope.n": [1]}, "sweep.nope.n"),
    ({"train.steps.x": [1]}, "sweep.train.steps.x"),
    ({"seed": [0, 1]}, "name"),  # the name does not change with the seed
])
def test_sweep_errors_name_the_field(sweep, field):
    with pytest.raises(WorkflowError, match=field.replace(".", r"\.")):
        expand_sweep({**BASE, "sweep": sweep})


def test_load_train_workflow_refuses_a_sweep():
    with pytest.raises(WorkflowError, match="train_sweep"):
        load_train_workflow({**BASE, "sweep": {"seed": [0, 1]}})


def test_cli_trains_every_run_of_a_sweep(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "s{seed}", "sweep": {"seed": [0, 1]}}))
    res = CliRunner().invoke(cli.main, ["train", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    a, b = (load_model(tmp_path / "out" / n / "checkpoint") for n in ("s0", "s1"))
    assert a.card["seed"] == 0 and b.card["seed"] == 1
    assert a.card["rebuild"] == f"molfuse train {path}" and "MIT" in a.card["licence"]
    assert not torch.equal(a.state_dict()["out.1.weight"], b.state_dict()["out.1.weight"])


def test_init_from_fine_tunes_the_given_checkpoint(tmp_path):
    parent = train_from_workflow({**BASE, "name": "parent"}, output=tmp_path, progress=False, verbose=False)
    child_wf = {**BASE, "name": "child", "seed": 5, "init_from": str(parent.checkpoint),
                "train": {**BASE["train"], "lr": 1e-12}}  # (almost) no update: the child must equal its parent
    child = train_from_workflow(child_wf, output=tmp_path, progress=False, verbose=False)
    p, c = load_model(parent.checkpoint), load_model(child.checkpoint)
    assert c.card["init_from"]["sha256"] == p.card["weights"]["sha256"]
    for k, v in p.state_dict().items():
        torch.testing.assert_close(c.state_dict()[k], v, atol=1e-6, rtol=0)
    fresh = train_from_workflow({**child_wf, "name": "fresh", "init_from": None}, output=tmp_path, progress=False,
                                verbose=False)
    assert not torch.allclose(load_model(fresh.checkpoint).state_dict()["out.1.weight"], p.state_dict()["out.1.weight"])


def test_init_from_refuses_another_architecture_or_a_missing_checkpoint(tmp_path):
    parent = train_from_workflow({**BASE, "name": "parent"}, output=tmp_path, progress=False, verbose=False)
    wider = {**BASE, "name": "wide", "init_from": str(parent.checkpoint),
             "architecture": {"name": "mlp", "config": {**BASE["architecture"]["config"], "hidden": 32}}}
    with pytest.raises(WorkflowError, match="init_from.*architecture"):
        train_from_workflow(wider, output=tmp_path, progress=False, verbose=False)
    with pytest.raises(WorkflowError, match="init_from"):
        train_sweep({**BASE, "name": "x", "init_from": str(tmp_path / "nowhere")}, output=tmp_path, progress=False,
                    verbose=False)
