"""The ``merge`` model kind and ``merge_checkpoints``: lineage and card checks, provenance, and a
shippable merged checkpoint (MATH §5)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("safetensors")

from molfuse import VPSchedule, WorkflowError  # noqa: E402
from molfuse import campaign  # noqa: E402
from molfuse.campaign.merges import merge_checkpoints  # noqa: E402
from molfuse.fusion.merge import dare, ties, weighted_sum  # noqa: E402
from molfuse.nets import build  # noqa: E402
from molfuse.schedules import schedule_from_config  # noqa: E402
from molfuse.training.checkpoints import load_model, read_card, save_checkpoint  # noqa: E402

ARCH = {"name": "mlp", "config": {"dim": 2, "hidden": 8, "depth": 1, "time_dim": 8}}


def _perturbed(net, seed: int, size: float = 0.1):
    out = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return out


def _save(folder, net, arch=ARCH, **card):
    return save_checkpoint(folder, net, {"modality": "vectors", "architecture": arch, "schedule": VPSchedule(),
                                         "shape": [2], "seed": 0, **card})


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A parent, two children fine-tuned from it, one from another parent, one of another width."""
    tmp = tmp_path_factory.mktemp("merge")
    torch.manual_seed(0)
    base = _perturbed(build(**ARCH), 0, 0.5)  # non-zero output layer
    parent = _save(tmp / "parent", base, name="parent", steps=10, final_losses={"train": 0.5})
    sha = read_card(parent)[0]["weights"]["sha256"]
    lineage = {"path": str(parent), "name": "parent", "sha256": sha, "steps": 10}
    kids = [_save(tmp / f"child{i}", _perturbed(base, i + 1), name=f"child{i}", steps=5, init_from=lineage)
            for i in range(2)]
    stranger = _save(tmp / "stranger", _perturbed(base, 9), name="stranger", init_from={**lineage, "sha256": "0" * 64})
    wide_arch = {"name": "mlp", "config": {**ARCH["config"], "hidden": 16}}
    wide = _save(tmp / "wide", build(**wide_arch), arch=wide_arch, name="wide", init_from=lineage)
    return {"parent": str(parent), "kids": [str(k) for k in kids], "sha": sha, "stranger": str(stranger),
            "wide": str(wide)}


def _build(models, tmp_path):
    wf = campaign.load_workflow({"name": "b", "output": str(tmp_path), "models": models,
                                 "methods": [{"name": "a", "operator": "single", "models": [next(iter(models))]}]})
    return campaign.build_models(wf, schedule_from_config(wf.schedule))


def _states(family):
    return load_model(family["parent"]).state_dict(), [load_model(k).state_dict() for k in family["kids"]]


def test_merge_kind_builds_ties_with_provenance(family, tmp_path):
    spec = {"kind": "merge", "rule": "ties", "paths": family["kids"], "parent": family["parent"],
            "density": 0.5, "scale": 0.8}
    m = _build({"t": spec}, tmp_path)["t"]
    parent, kids = _states(family)
    expect = ties(parent, kids, density=0.5, scale=0.8)
    assert all(torch.equal(v, expect[k]) for k, v in m.model.state_dict().items())
    prov = m.card["merge"]
    assert prov["rule"] == "ties" and prov["options"] == {"weights": None, "scale": 0.8, "density": 0.5, "drop": None,
                                                          "seed": None, "combine": None}
    assert prov["parent"]["path"] == family["parent"] and prov["parent"]["name"] == "parent"
    assert prov["parent"]["sha256"] == family["sha"]
    assert [e["name"] for e in prov["members"]] == ["child0", "child1"]
    assert [e["sha256"] for e in prov["members"]] == [read_card(k)[0]["weights"]["sha256"] for k in family["kids"]]
    assert m.modality == "vectors" and m.sample_shape == (2,) and len(m.checkpoints) == 3
    assert m(torch.zeros(4, 2), torch.full((4,), 0.5)).shape == (4, 2)


def test_merge_kind_dare_and_weighted_sum(family, tmp_path):
    models = _build({"d": {"kind": "merge", "rule": "dare", "paths": family["kids"], "parent": family["parent"],
                           "drop": 0.5, "seed": 3, "weights": [0.6, 0.4]},
                     "w": {"kind": "merge", "rule": "weighted_sum", "paths": family["kids"], "weights": [0.7, 0.3]}},
                    tmp_path)
    parent, kids = _states(family)
    expect = dare(parent, kids, drop=0.5, seed=3, weights=[0.6, 0.4])
    assert all(torch.equal(v, expect[k]) for k, v in models["d"].model.state_dict().items())
    soup = weighted_sum(kids, [0.7, 0.3])
    assert all(torch.equal(v, soup[k]) for k, v in models["w"].model.state_dict().items())
    assert models["w"].card["merge"]["parent"] is None and len(models["w"].checkpoints) == 2


def test_parent_mismatch_is_refused_naming_both_hashes(family, tmp_path):
    spec = {"kind": "merge", "rule": "task_arithmetic", "paths": [family["kids"][0], family["stranger"]],
            "parent": family["parent"]}
    with pytest.raises(WorkflowError) as e:
        _build({"m": spec}, tmp_path)
    msg = str(e.value)
    assert "models.m:" in msg and "parent mismatch" in msg and family["stranger"] in msg and family["parent"] in msg
    assert "0" * 64 in msg and family["sha"] in msg and family["kids"][0] not in msg.split("parent mismatch")[1]


def test_architecture_mismatch_and_bad_specs_are_refused(family, tmp_path):
    base = {"kind": "merge", "paths": family["kids"], "parent": family["parent"]}
    for spec, match in (({"rule": "ties", "paths": [family["kids"][0], family["wide"]]},
                         f"{family['wide']} cannot be merged with {family['parent']}: they differ in architecture"),
                        ({"rule": "ties", "parent": None}, "parent: rule ties .* needs the parent"),
                        ({"rule": "average"}, "rule: expected one of weighted_sum, task_arithmetic, ties, dare"),
                        ({"rule": "ties", "drop": 0.5}, "ties does not take option.s. drop"),
                        ({"rule": "ties", "density": 0.0}, r"density must lie in \(0, 1\]"),
                        ({"rule": "dare", "paths": []}, "paths: expected a non-empty list")):
        with pytest.raises(WorkflowError, match=match):
            _build({"m": {**base, **spec}}, tmp_path)


def test_merge_checkpoints_writes_a_loadable_checkpoint(family, tmp_path):
    out = tmp_path / "merged"
    net, card = merge_checkpoints("task_arithmetic", family["kids"], family["parent"], out=out, weights=[0.5, 0.5])
    loaded = load_model(out)  # checks the weights' sha256 against the card
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.state_dict().items())
    written = json.loads((out / "card.json").read_text())
    assert written == card == loaded.card and card["name"] == "merged" and card["steps"] == 0
    parent_card = read_card(family["parent"])[0]
    for key in ("modality", "architecture", "prediction", "schedule", "space", "shape", "seed"):
        assert card[key] == parent_card[key]
    assert "final_losses" not in card and card["weights"]["sha256"] != parent_card["weights"]["sha256"]
    assert card["merge"]["options"]["weights"] == [0.5, 0.5] and card["init_from"]["sha256"] == family["sha"]
    assert "merge_checkpoints('task_arithmetic'" in card["rebuild"]
    # the merge is itself a child of the parent: it can be merged again
    again, _ = merge_checkpoints("ties", [str(out), family["kids"][0]], family["parent"], density=1.0)
    assert again.card["merge"]["members"][0]["name"] == "merged"


def test_select_picks_the_scale_with_the_lowest_heldout_dsm_loss(family, tmp_path):
    from molfuse.fusion.selection import heldout_dsm
    from molfuse.training.data import build_data, check_data_spec

    data_spec = {"kind": "gaussian_mixture_samples", "means": [[0.0, 0.0]], "covs": [1.0], "n": 64, "seed": 3}
    spec = {"kind": "merge", "rule": "task_arithmetic", "paths": family["kids"], "parent": family["parent"],
            "select": {"option": "scale", "values": [0.0, 0.5, 1.0], "data": data_spec, "n": 64, "n_t": 2, "seed": 1}}
    m = _build({"t": spec}, tmp_path)["t"]
    sel = m.card["merge"]["selection"]
    assert sel["option"] == "scale" and sel["values"] == [0.0, 0.5, 1.0] and set(sel["heldout_dsm"]) == {
        "scale=0.0", "scale=0.5", "scale=1.0"}
    best = min(sel["heldout_dsm"], key=lambda k: sel["heldout_dsm"][k]["mean"])
    assert sel["chosen"] == float(best.split("=")[1]) and m.card["merge"]["options"]["scale"] == sel["chosen"]
    # the same numbers by hand: the candidates' losses on the same draws
    x = build_data(check_data_spec(data_spec, "d")).x
    g = torch.Generator().manual_seed(__import__("molfuse").base.seeds.derive_seed(1, "select"))
    x = x[torch.randperm(len(x), generator=g)[:64]]
    nets = {f"scale={s}": merge_checkpoints("task_arithmetic", family["kids"], family["parent"], scale=s)[0]
            for s in (0.0, 0.5, 1.0)}
    table = heldout_dsm(nets, x, VPSchedule(), n_t=2, seed=1)
    assert all(abs(table[k][0] - sel["heldout_dsm"][k]["mean"]) < 1e-9 for k in table)
    with pytest.raises(WorkflowError, match="select"):
        _build({"t": {**spec, "select": {**spec["select"], "option": "nope"}}}, tmp_path)


def test_rank_agreement_report_counts_orderings():
    import pandas as pd

    from molfuse.campaign.reports import rank_agreement_table

    m = pd.DataFrame({"method": list("abcde"), "loss": [1, 2, 3, 4, 5], "same": [10, 20, 30, 40, 50],
                      "reversed": [5, 4, 3, 2, 1]})
    t = rank_agreement_table(m, "loss", ["same", "reversed"], [])
    assert list(t["spearman"]) == [1.0, -1.0] and list(t["kendall"]) == [1.0, -1.0] and list(t["methods"]) == [5, 5]
    assert rank_agreement_table(m, "loss", ["same"], ["a", "b"])["spearman"].isna().all()  # < 3 methods
