"""The fkc operator in workflows: options checked, ESS and weights in the tables, resumable chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molfuse import WorkflowError
from molfuse.campaign import load_workflow, run_workflow


def _wf(tmp_path, **fkc):
    return {
        "name": "fkc_tiny", "seed": 1, "output": str(tmp_path), "run_name": "r",
        "models": {"a": {"kind": "gaussian_mixture", "means": [[-2.0, 0.0], [2.0, 0.0]], "covs": [0.5, 0.5]},
                   "b": {"kind": "gaussian_mixture", "means": [[-1.5, 0.0], [1.5, 0.0]], "covs": [1.0, 1.0],
                         "weights": [0.7, 0.3]}},
        "n_samples": 64, "sampler": {"steps": 40, "chunk_size": 32, "threads": 1},
        "methods": [{"name": "product_fkc", "operator": "fkc", "models": ["a", "b"], **fkc},
                    {"name": "product_sum", "operator": "ensemble", "models": ["a", "b"], "rule": "sum"}],
    }


def test_fkc_rows_carry_weights_ess_and_resampling(tmp_path):
    res = run_workflow(_wf(tmp_path, noise_ratio=3.0), progress=False, verbose=False)
    m = res.metrics.set_index("method")
    for col in ("fkc_ess_min", "fkc_ess_final", "fkc_resamples", "fkc_ancestors"):
        assert np.isfinite(m.loc["product_fkc", col]) and np.isnan(m.loc["product_sum", col]), col
    assert 0 < m.loc["product_fkc", "fkc_ess_min"] <= 1 and m.loc["product_fkc", "fkc_resamples"] >= 1
    ps = pd.read_csv(res.folder / "per_sample.csv")
    fk = ps[ps.method == "product_fkc"]
    assert fk["fkc_log_weight"].notna().all() and fk.groupby("chunk")["fkc_resamples"].nunique().eq(1).all()
    assert fk["ito_log_q_nats_a"].isna().all()  # extra noise: the members' Itô log q is not tracked
    prov = res.provenance["methods"][0]
    assert prov["exponents"] == [1.0, 1.0] and prov["noise_ratio"] == 3.0


def test_fkc_with_the_sde_noise_tracks_each_member(tmp_path):
    res = run_workflow(_wf(tmp_path, exponents=[1.0, 1.0]), progress=False, verbose=False)
    ps = pd.read_csv(res.folder / "per_sample.csv")
    assert ps.loc[ps.method == "product_fkc", ["ito_log_q_nats_a", "ito_log_q_nats_b"]].notna().all().all()


@pytest.mark.parametrize("opts, field", [({"exponents": [1.0]}, "exponents"),
                                         ({"exponents": [1.0, -1.0]}, "exponents"),
                                         ({"ess_threshold": 2}, "ess_threshold"),
                                         ({"resampling": "residual"}, "resampling"),
                                         ({"noise_ratio": -1}, "noise_ratio")])
def test_fkc_options_are_checked(tmp_path, opts, field):
    with pytest.raises(WorkflowError, match=f"methods\\[0\\].{field}"):
        load_workflow(_wf(tmp_path, **opts))
