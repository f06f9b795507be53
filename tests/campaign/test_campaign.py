"""Workflows: validation names the field, runs write every RESULTS.md file, resume, refusal."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from molfuse import GaussianMixture, WorkflowError
from molfuse import campaign
from molfuse import plugins
from molfuse.base.checks import REQUIRED
from molfuse.base.seeds import derive_seed
from molfuse.campaign import load_workflow, run_workflow

METHODS = ["single_a", "or", "and", "bary_fit", "ens", "rc"]


def tiny(tmp_path, **top) -> dict:
    """A 2-D workflow small enough for a unit test (32 samples, 20 steps, two chunks)."""
    wf = {
        "name": "tiny", "seed": 3, "output": str(tmp_path / "results"), "run_name": "r1",
        "models": {
            "a": {"kind": "gaussian_mixture", "means": [[-2.0, 0.0], [-2.0, 2.0]], "covs": [0.5, 0.5]},
            "b": {"kind": "gaussian_mixture", "means": [[2.0, 0.0]], "covs": [1.0]},
            "target": {"kind": "gaussian_mixture", "means": [[1.0, 0.0]], "covs": [1.0]},
        },
        "target": "target",
        "n_samples": 32,
        "sampler": {"steps": 20, "chunk_size": 16, "threads": 1},
        "methods": [
            {"name": "single_a", "operator": "single", "models": ["a"]},
            {"name": "or", "operator": "superpose", "models": ["a", "b"], "weights": [0.7, 0.3]},
            {"name": "and", "operator": "superpose", "models": ["a", "b"], "mode": "and"},
            {"name": "bary_fit", "operator": "barycenter", "models": ["a", "b"],
             "fit": {"data_from": "target", "n": 64, "n_mc": 256}},
            {"name": "ens", "operator": "ensemble", "models": ["a", "b"], "rule": "mean"},
            {"name": "rc", "operator": "random_choice", "models": ["a", "b"], "weights": [0.5, 0.5]},
        ],
    }
    wf.update(top)
    return wf


def run(wf: dict):
    return run_workflow(wf, progress=False, verbose=False)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("camp")
    wf = tiny(tmp)
    return wf, run(wf)


def test_run_writes_every_results_file(first_run):
    wf, res = first_run
    folder = res.folder
    for name in ("config.yaml", "provenance.json", "per_sample.csv", "metrics.csv", "summary.md", "samples.png"):
        assert (folder / name).is_file(), name
    for m in METHODS:
        x = np.load(folder / "samples" / f"{m}.npy")
        assert x.shape == (32, 2) and np.isfinite(x).all()
    metrics, per_sample = pd.read_csv(folder / "metrics.csv"), pd.read_csv(folder / "per_sample.csv")
    assert list(metrics["method"]) == METHODS and len(per_sample) == 32 * len(METHODS)
    assert per_sample["id"].is_unique and per_sample["valid"].all()
    for col in ("seed", "reason", "x0", "x1", "log_q_nats_a", "log_q_nats_target", "ito_log_q_nats_a",
                "ito_log_q_nats_b", "fallbacks", "chosen_model"):
        assert col in per_sample, col
    for col in ("n", "mean_log_q_nats_target", "share_a", "share_b", "ito_abs_err_nats_a", "mean_abs_log_q_gap_nats",
                "fallbacks", "weight_a", "heldout_dsm_loss", "wall_time_s"):
        assert col in metrics, col
    pd.testing.assert_frame_equal(metrics, res.metrics, check_dtype=False)
    shares = metrics.set_index("method").loc["or", ["share_a", "share_b"]]
    assert shares.sum() == pytest.approx(1.0)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["sampler"]["t_end"] == 1e-3 and config["methods"][1]["temperature"] == 1.0  # defaults filled
    assert config["methods"][3]["fit"]["window"] == "full"
    prov = json.loads((folder / "provenance.json").read_text())
    for key in ("molfuse_version", "git", "seeds", "methods", "started", "finished", "machine"):
        assert key in prov, key
    fitted = prov["methods"][3]
    assert fitted["weights"] == pytest.approx(metrics.loc[3, ["weight_a", "weight_b"]].tolist())
    assert sum(fitted["weights"]) == pytest.approx(1.0) and "heldout_dsm_loss" in fitted["fit"]
    assert prov["seeds"]["chunks"]["or"] == [derive_seed(3, "or", 0), derive_seed(3, "or", 1)]
    assert "## Caveats" in (folder / "summary.md").read_text()


def test_resume_keeps_finished_chunks(first_run):
    wf, res = first_run
    chunks = sorted((res.folder / "samples" / "chunks").rglob("chunk_*.npz"))
    assert len(chunks) == 2 * len(METHODS)
    before = {p: p.stat().st_mtime_ns for p in chunks}
    x_or = np.load(res.folder / "samples" / "or.npy")
    removed = res.folder / "samples" / "chunks" / "or" / "chunk_00001.npz"
    removed.unlink()
    again = run(copy.deepcopy(wf))
    assert again.provenance["chunks"] == {"reused": len(chunks) - 1, "generated": 1}
    for p, t in before.items():
        if p != removed:
            assert p.stat().st_mtime_ns == t, p
    np.testing.assert_array_equal(np.load(res.folder / "samples" / "or.npy"), x_or)  # same seeds, same samples
    assert len(again.per_sample) == 32 * len(METHODS) and again.per_sample["id"].is_unique
    reported = run({**copy.deepcopy(wf), "reports": [{"kind": "by_n", "metrics": ["n"]}]})  # reports: no new run
    assert reported.provenance["chunks"]["generated"] == 0 and (res.folder / "by_n.csv").is_file()


def test_changed_config_is_refused(first_run):
    wf, _ = first_run
    changed = copy.deepcopy(wf)
    changed["sampler"]["steps"] = 21
    with pytest.raises(WorkflowError, match=r"different configuration.*sampler\.steps: 20 -> 21"):
        run(changed)


def test_derive_seed_is_stable():
    assert derive_seed(0, "a", 0) == 7756895851570414870  # fixed forever: resumed runs depend on it
    assert derive_seed(7, "or", 3) == 1369670478088464737
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 0) < 2**63


def _break(wf: dict, path: str, value) -> dict:
    wf = copy.deepcopy(wf)
    *keys, last = path.split("/")
    node = wf
    for k in keys:
        node = node[int(k)] if k.isdigit() else node[k]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return wf


@pytest.mark.parametrize("path, value, message", [
    ("methods/2/models", ["a", "c"], r"methods\[2\]\.models: unknown model 'c'; known: a, b, target"),
    ("methods/0/operator", "superpos",
     r"methods\[0\]\.operator: unknown operator 'superpos' \(did you mean 'superpose'"),
    ("methods/5/weights", [0.7, 0.7], r"methods\[5\]\.weights: weights \[0.7, 0.7\] are off the simplex"),
    ("methods/4/weights", [0.5, 0.5], r"methods\[4\]\.weights: weights only apply to rule 'weighted'"),
    ("methods/1/temprature", 2.0, r"methods\[1\]\.temprature: unknown key \(did you mean 'temperature'"),
    ("methds", [], r"methds: unknown key \(did you mean 'methods'"),
    ("sampler/stpes", 3, r"sampler\.stpes: unknown key"),
    ("name", KeyError, r"^name: required field is missing"),
    ("methods/3/fit/data_from", "nope", r"methods\[3\]\.fit\.data_from: unknown model 'nope'"),
    ("methods/2/temperature", 5.0, r"methods\[2\]\.temperature: temperature only enters mode 'or'"),
    ("methods/1/ito_correction", True, r"methods\[1\]\.ito_correction: ito_correction only applies to mode 'and'"),
    ("methods/0/models", ["a", "b"], r"methods\[0\]\.models: operator 'single' takes exactly 1 models; got 2"),
    ("target", "zz", r"target: unknown model 'zz'"),
    ("models/b/kind", "gmm", r"models\.b\.kind: unknown model kind 'gmm'"),
    ("models/b/mean", [[0, 0]], r"models\.b\.mean: unknown key \(did you mean 'means'"),
    ("sampler/t_end", 2.0, r"sampler\.t_end: must be a finite number"),
    ("sampler/grid_power", 0.5, r"sampler\.grid_power: must be a finite number"),
    ("sampler/denoise", "yes", r"sampler\.denoise: must be true or false"),
    ("n_samples", 0, r"n_samples: must be >= 1"),
])
def test_malformed_fields_are_named(tmp_path, path, value, message):
    with pytest.raises(WorkflowError, match=message):
        load_workflow(_break(tiny(tmp_path), path, value))


def test_the_workflow_and_the_python_api_share_the_and_estimator(tmp_path):
    """Left out, ``ito_correction`` means the exact AND estimator in both: the same name, default and rule."""
    import inspect

    from molfuse.fusion import superpose

    assert inspect.signature(superpose).parameters["ito_correction"].default is None
    assert campaign.OPERATORS.get("superpose").options["ito_correction"] is None
    wf = load_workflow(tiny(tmp_path))
    assert [m.options["ito_correction"] for m in wf.methods if m.operator == "superpose"] == [False, True]


def test_duplicate_method_name_and_bad_model_spec(tmp_path):
    wf = tiny(tmp_path)
    wf["methods"][1]["name"] = "single_a"
    with pytest.raises(WorkflowError, match=r"methods\[1\]\.name: duplicate method name 'single_a'"):
        load_workflow(wf)
    bad = _break(tiny(tmp_path), "models/a/weights", [0.9, 0.3])
    with pytest.raises(WorkflowError, match=r"models\.a: weights must be"):
        run(bad)
    assert not (tmp_path / "results").exists()  # nothing written before the models build


def test_yaml_file_numeric_strings_and_overrides(tmp_path):
    text = yaml.safe_dump(tiny(tmp_path)).replace("chunk_size: 16", "chunk_size: 16\n  t_end: 1e-3")
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    wf = load_workflow(path, output=tmp_path / "elsewhere", run_name="x", device="cpu")
    assert wf.sampler.t_end == 1e-3  # YAML 1.1 reads 1e-3 as a string; accepted
    assert wf.folder == tmp_path / "elsewhere" / "tiny" / "x"
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(tmp_path / "missing.yaml")


def test_model_kind_registry_is_open(tmp_path):
    def iso(spec, sched):
        gm = GaussianMixture([spec["mean"]], [spec["var"]], schedule=sched)
        gm.modality = "vectors"
        return gm

    plugins.register_model_kind("iso", plugins.ModelKind(iso, {"mean": REQUIRED, "var": 1.0}, lambda spec: "vectors"),
                                replace=True)
    wf = tiny(tmp_path, models={"p": {"kind": "iso", "mean": [0.0, 1.0]}, "q": {"kind": "iso", "mean": [1.0, 0.0]}},
              target=None, n_samples=8, methods=[{"name": "bary", "operator": "barycenter", "models": ["p", "q"]}])
    loaded = load_workflow(wf)
    assert loaded.to_config()["models"]["p"] == {"kind": "iso", "mean": [0.0, 1.0], "var": 1.0}
    assert loaded.methods[0].options["weights"] == [0.5, 0.5]
    res = run(wf)
    assert res.metrics.loc[0, "n"] == 8 and "mean_log_q_nats_target" not in res.metrics


def test_operator_refusal_writes_nothing(tmp_path):
    wf = tiny(tmp_path)
    wf["methods"][4].update(rule="trimmed", trim=0.5)  # K = 2: trimming 1 from each end leaves nothing
    with pytest.raises(WorkflowError, match=r"methods\[4\].trim: .*nothing remains"):
        run(wf)
    assert not (tmp_path / "results").exists()


def test_by_n_report_aggregates_seeds_and_validates():
    from molfuse.campaign.reports import by_n_table

    metrics = pd.DataFrame({"method": ["fused_n16_seed0", "fused_n16_seed1", "scratch_n16_seed0", "uniform"],
                            "bpd": [1.0, 3.0, 5.0, 7.0]})
    t = by_n_table(metrics, ["bpd"]).set_index("family")
    assert t.loc["fused", "seeds"] == 2 and t.loc["fused", "bpd_mean"] == 2.0
    assert (t.loc["fused", "bpd_min"], t.loc["fused", "bpd_max"]) == (1.0, 3.0) and "uniform" not in t.index
    wf = {"name": "r", "models": {"a": {"kind": "gaussian_mixture", "means": [[0.0]], "covs": [1.0]}},
          "methods": [{"name": "a", "operator": "single", "models": ["a"]}]}
    with pytest.raises(WorkflowError, match=r"reports\[0\].kind"):
        campaign.load_workflow({**wf, "reports": [{"kind": "nope"}]})
    with pytest.raises(WorkflowError, match=r"reports\[0\].metrics"):
        campaign.load_workflow({**wf, "reports": [{"kind": "by_n", "metrics": "bpd"}]})
    with pytest.raises(WorkflowError, match=r"reports\[0\].classes"):
        campaign.load_workflow({**wf, "reports": [{"kind": "class_share", "classes": []}]})
    assert campaign.load_workflow({**wf, "reports": [{"kind": "by_n", "metrics": ["x"]}]}).reports[0]["reference"] == []


def test_barycenter_fit_on_a_dataset_kind_needs_no_lightning(tmp_path):
    """fit.data reads the dataset registry (molfuse.datasets), not the training stack."""
    import subprocess
    import sys

    wf = tiny(tmp_path)
    data = {"kind": "gaussian_mixture_samples", "means": [[1.0, 0.0]], "covs": [1.0], "n": 64, "seed": 0}
    wf["methods"] = [{"name": "fit", "operator": "barycenter", "models": ["a", "b"],
                      "fit": {"data": data, "n_mc": 256}}]
    wf["evaluation"] = {}
    code = ("import sys; sys.modules['lightning'] = None\n"  # importing lightning now fails
            "import json, yaml; from molfuse.campaign import run_workflow\n"
            f"r = run_workflow(yaml.safe_load({yaml.safe_dump(wf)!r}), progress=False, verbose=False)\n"
            "print(json.dumps(r.metrics[['weight_a', 'weight_b']].iloc[0].tolist()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    w = json.loads(out.stdout.strip().splitlines()[-1])
    assert np.isclose(sum(w), 1.0) and w[1] > w[0]  # the data sit on b's side


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """YAML keeps the last of two equal keys; a workflow (or training workflow) refuses them."""
    path = tmp_path / "wf.yaml"
    text = yaml.safe_dump(tiny(tmp_path), sort_keys=False)
    path.write_text(text.replace("n_samples: 32\n", "n_samples: 32\nn_samples: 1000\n"))
    line = text.splitlines().index("n_samples: 32") + 1
    with pytest.raises(WorkflowError, match=rf"wf.yaml: line {line + 1}: duplicate key 'n_samples' "
                                            rf"\(first at line {line}\)"):
        load_workflow(path)
    path.write_text(text.replace("    covs:\n    - 1.0\n", "    covs:\n    - 1.0\n    covs:\n    - 2.0\n", 1))
    with pytest.raises(WorkflowError, match=r"duplicate key 'covs'"):
        load_workflow(path)
    from molfuse.training.workflow import load_train_workflow

    path.write_text("name: t\narchitecture: {name: mlp, config: {dim: 2}}\ndata: {kind: x, n: 4, n: 8}\n")
    with pytest.raises(WorkflowError, match=r"wf.yaml: line 3: duplicate key 'n' \(first at line 3\)"):
        load_train_workflow(path)


def test_n_samples_beyond_memory_is_refused_before_anything_runs(tmp_path, monkeypatch):
    """10^12 samples used to run for minutes and die with MemoryError: refused while read, with the limit."""
    with pytest.raises(WorkflowError, match=r"n_samples: 1000000000000 per method cannot be held: .* 6 method\(s\) "
                                            r"x 1000000000000 .* at most \d+ samples per method fit here"):
        load_workflow(tiny(tmp_path, n_samples=10**12))
    from molfuse.campaign import parse

    monkeypatch.setattr(parse, "_memory_bytes", lambda: (10**6, "this machine has"))
    assert load_workflow(tiny(tmp_path, n_samples=550)).n_samples == 550  # 6 x 550 x 300 bytes of rows fit
    with pytest.raises(WorkflowError, match=r"n_samples: 550 .* \(8 bytes per sample of shape \(2,\) \+ about 300 "
                                            r"bytes per row\) = 1\.02e\+06 bytes, and this machine has 1e\+06 bytes; "
                                            r"at most 541 samples per method fit here"):
        run(tiny(tmp_path, n_samples=550))  # the samples' own bytes, once the models say their shape
    assert not (tmp_path / "results").exists()


def _rings_workflow(tmp_path, cond) -> dict:
    """One property-conditioned molecule member (qm9_rings: one property, rings; mean 1.75, sd 1.22)."""
    return {"name": "prompt", "output": str(tmp_path / "results"), "n_samples": 4,
            "models": {"rings": {"kind": "checkpoint", "path": "models/molecules/qm9_rings", "cond": cond}},
            "methods": [{"name": "alone", "operator": "single", "models": ["rings"]}]}


def test_a_property_prompt_of_the_wrong_length_or_range_is_refused_while_read(tmp_path):
    with pytest.raises(WorkflowError, match=r"models\.rings: cond: this net is conditioned on 1 property value "
                                            r"\(rings\) \(its card's architecture num_properties\), "
                                            r"got 2: \[3\.0, 4\.0\]"):
        load_workflow(_rings_workflow(tmp_path, [3.0, 4.0]))
    path = tmp_path / "wf.yaml"  # YAML 1.1 reads 1e30 as the string '1e30': a number all the same, but far out
    path.write_text(yaml.safe_dump(_rings_workflow(tmp_path, [3.0])).replace("- 3.0", "- 1e30"))
    with pytest.raises(WorkflowError, match=r"models\.rings: cond: rings = '1e30' is 8\.2e\+29 standard deviations "
                                            r"from the training mean 1\.75 \(sd 1\.22\); beyond 50"):
        load_workflow(path)
    for bad in (["three"], [True], [float("nan")]):
        with pytest.raises(WorkflowError, match=r"models\.rings: cond: (expected 1 property value|rings = nan)"):
            load_workflow(_rings_workflow(tmp_path, bad))


def test_a_property_prompt_as_a_numeric_string_is_a_number(tmp_path):
    from molfuse.schedules import schedule_from_config

    pytest.importorskip("e3nn")  # the molecules extra builds the net
    wf = load_workflow(_rings_workflow(tmp_path, ["3"]))
    model = campaign.build_models(wf, schedule_from_config(wf.schedule))["rings"]
    assert model.cond == [3.0] and model.node_counts_given == "3"
