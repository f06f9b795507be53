"""The issue-12 merging workflows as shipped (distillation students, style mixing, weight merges)
run end to end on the shipped checkpoints at tiny size, and the shipped students' cards rebuild them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from molfuse.campaign import run_workflow
from molfuse.training.workflow import load_train_workflow

ROOT = Path(__file__).resolve().parents[2]
NEEDS = {"images": (), "molecules": ("rdkit", "e3nn"), "proteins": ("biotite", "e3nn")}
EXPERIMENTS = [("images", "dmm_fidelity_digits"), ("images", "dmm_mixing_digits"), ("images", "merge_digits"),
               ("images", "dmm_adversarial_digits"),
               ("molecules", "dmm_cyclic_acyclic"), ("molecules", "merge_cyclic_acyclic"),
               ("molecules", "dmm_graph_cyclic_acyclic"),
               ("proteins", "dmm_helix_strand"), ("proteins", "dmm_helix_strand_ts")]
STUDENTS = [("images", "dmm_shards", 3), ("images", "dmm_shards_2", 2), ("images", "dmm_add789_reg", 3),
            ("images", "dmm_add789_noreg", 3), ("images", "dmm_shards_adv", 3), ("images", "dmm_shards_plain", 3),
            ("molecules", "dmm_cyclic_acyclic", 2), ("molecules", "dmm_graph_cyclic_acyclic", 2),
            ("proteins", "dmm_helix_strand", 2), ("proteins", "dmm_helix_strand_ts", 2), ("proteins", "angles_dmm", 2)]


def _skip_without(modality: str) -> None:
    for module in NEEDS[modality]:
        pytest.importorskip(module)


def _tiny(modality: str, name: str, out: Path) -> dict:
    wf = yaml.safe_load((ROOT / "workflows" / modality / f"{name}.yaml").read_text())
    wf.update(output=str(out), run_name="tiny", n_samples=3)
    wf["sampler"].update(steps=20, chunk_size=3)
    ev = wf.get("evaluation", {})
    if modality == "molecules":
        ev["reference_source"] = "small"
    if "heldout" in ev:
        ev["heldout"]["n"] = 4
    for spec in wf["models"].values():
        if "select" in spec:
            spec["select"].update(n=16, n_t=1)
            if modality == "molecules":
                spec["select"]["data"]["source"] = "small"  # the shipped subset, not the qm9pack wheel
    return wf


@pytest.mark.parametrize("modality, name", EXPERIMENTS)
def test_the_merging_experiments_run_at_tiny_size(tmp_path, modality, name):
    _skip_without(modality)
    wf = _tiny(modality, name, tmp_path)
    res = run_workflow(wf, progress=False, verbose=False)
    assert list(res.metrics["method"]) == [m["name"] for m in wf["methods"]] and (res.metrics["n"] == 3).all()
    kinds = [r["kind"] for r in wf.get("reports", [])]
    if "fidelity" in kinds:
        fid = pd.read_csv(res.folder / "fidelity.csv")
        pairs = next(r for r in wf["reports"] if r["kind"] == "fidelity")["pairs"]
        assert list(fid["name"]) == [p["name"] for p in pairs] and any(c.endswith("_ratio") for c in fid)
    if "rank_agreement" in kinds:
        assert (res.folder / "rank_agreement.csv").is_file() and (res.folder / "rank_agreement.png").is_file()
    assert (res.folder / "provenance.json").is_file() and (res.folder / "summary.md").is_file()


@pytest.mark.parametrize("modality, name, styles", STUDENTS)
def test_the_shipped_students_have_cards_that_rebuild_them(modality, name, styles):
    _skip_without(modality)
    from molfuse.training.checkpoints import load_model

    net = load_model(ROOT / "models" / modality / name)
    card = net.card
    assert card["architecture"]["name"] == "style_student" and net.num_styles == styles == len(card["styles"])
    assert card["conditioning"]["kind"] == "style" and card["rebuild"].startswith("molfuse train workflows/")
    for t in card["objective"]["teachers"]:  # every teacher's hash is the shipped teacher's
        assert json.loads((ROOT / t["path"] / "card.json").read_text())["weights"]["sha256"] == t["sha256"]
    wf = load_train_workflow(ROOT / card["rebuild"].split()[-1])
    assert wf.objective["kind"] == "distill" and wf.checkpoint_dir == f"models/{modality}/{name}"


def test_forgetting_workflows_differ_only_in_the_regulariser():
    a = yaml.safe_load((ROOT / "workflows/images/train_dmm_add789_reg.yaml").read_text())
    b = yaml.safe_load((ROOT / "workflows/images/train_dmm_add789_noreg.yaml").read_text())
    assert a["objective"]["regularise"] is True and b["objective"]["regularise"] is False
    a["objective"].pop("regularise"), b["objective"].pop("regularise")
    for d in (a, b):
        d.pop("name"), d.pop("checkpoint_dir")
    assert a == b


def test_the_molecule_merge_children_validate():
    _skip_without("molecules")
    for pop in ("cyclic", "acyclic"):
        wf = load_train_workflow(ROOT / f"workflows/molecules/train_merge_{pop}.yaml")
        assert wf.init_from == "models/molecules/qm9_uncond" and wf.data["where"]["rings"] == (
            [1, 9] if pop == "cyclic" else [0, 0])
