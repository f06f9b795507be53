"""The angle-state protein members' workflows: every training workflow validates, a tiny angle
member trains through `molfuse train` (card on the chain space, with its sizes)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("biotite")
pytest.importorskip("lightning")

import yaml  # noqa: E402

from molfuse.base.provenance import REPO_ROOT as REPO  # noqa: E402
from molfuse.campaign import run_workflow  # noqa: E402
from molfuse.modalities.proteins.angles import angle_normalisation, angle_space  # noqa: E402
from molfuse.training import load_model, train_from_workflow  # noqa: E402
from molfuse.training.workflow import expand_sweep, load_train_workflow  # noqa: E402

WORKFLOWS = REPO / "workflows" / "proteins"
SHIPPED = REPO / "models" / "proteins"
EXPERIMENTS = ["members_angles", "members_angles_geom", "members_angles_helix_rich", "members_angles_strand_rich", "steer_weights_angles", "members_angles128", "members_angles_clash", "steer_weights_angles128", "superdiff_angles", "barycenter_angles", "dmm_angles"]  # the experiments whose members are shipped
TRAINING = ["train_angles_all", "train_angles_all_geom", "train_angles_all_clash", "train_angles_helix_geom", "train_angles_strand_geom", "train_angles_all128", "train_angles_helix", "train_angles_strand",
            "train_angles_bary_scratch", "train_angles_bary_finetune", "train_angles_dmm"]


@pytest.mark.parametrize("name", TRAINING)
def test_the_angle_training_workflows_validate(name):
    runs = expand_sweep(WORKFLOWS / f"{name}.yaml")
    for raw in runs:
        wf = load_train_workflow({**raw, "init_from": None})  # the parent checkpoint is trained first
        arch = wf.architecture["config"].get("base", wf.architecture)
        assert arch["name"] == "protein_angles" and wf.checkpoint_dir.startswith("models/proteins/")
        assert wf.data["kind"] == "protein_angles" and wf.train.batch_size == 32 and wf.train.threads == 1
    assert len(runs) == (2 if "bary" in name else 1)


def test_a_tiny_angle_member_trains_and_its_card_lives_on_the_chain_space(tmp_path):
    wf = {"name": "tiny_angles", "seed": 0, "output": str(tmp_path / "train"),
          "architecture": {"name": "protein_angles",
                           "config": {"width": 16, "layers": 1, "heads": 2, "kernel": 3, "max_separation": 4,
                                      "time_dim": 8}},
          "data": {"kind": "protein_angles", "length": [64, 128], "stride": 32, "n": 24},
          "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "threads": 1}}
    res = train_from_workflow(wf, progress=False, verbose=False)
    card = json.loads((res.checkpoint / "card.json").read_text())
    assert card["space"] == angle_space().config() and card["shape"] == [128, 4]
    assert card["normalisation"] == angle_normalisation() and set(card["node_counts"]) == {"64", "128"}
    assert load_model(res.checkpoint).space == angle_space()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_shipped_angle_experiments_run_at_tiny_size(name, tmp_path):
    """Each angle experiment as shipped, on the shipped checkpoints, at 3 samples x 10 steps."""
    wf = yaml.safe_load((WORKFLOWS / f"{name}.yaml").read_text())
    for spec in wf["models"].values():
        assert (REPO / spec["path"] / "card.json").is_file(), f"{spec['path']} is not shipped"
        spec["path"] = str(REPO / spec["path"])
    wf.update(output=str(tmp_path), run_name="tiny", n_samples=3)
    wf["sampler"].update(steps=10, chunk_size=3)
    for r in wf.get("reports", []):
        if r["kind"] == "backbone_reference":
            r["n"] = 2
    for m in wf["methods"]:  # barycenter fits: a few Monte Carlo draws
        if "fit" in m:
            m["fit"]["n_mc"] = 64
    for hook in ("diversity", "designability_proxy"):  # optional packages: covered by the Cα workflows' tests
        wf["evaluation"].pop(hook, None)
    res = run_workflow(wf, progress=False, verbose=False)
    assert len(res.metrics) == len(wf["methods"]) and (res.metrics["n"] == 3).all()
    assert (res.folder / "sse_composition.png").is_file()
