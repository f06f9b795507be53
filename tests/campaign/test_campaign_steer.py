"""The steer operator in workflows (MATH §8): potentials named from the modality's registry, checked
while the workflow is read; the fkc columns plus each potential's energy; a closed-form tilt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molfuse import WorkflowError, plugins
from molfuse.campaign import load_workflow, run_workflow
from molfuse.campaign.potentials import potential_params
from molfuse.modalities.vectors import linear_energy


def _wf(tmp_path, potentials=None, **options):
    """N(1, 0.5) on the first coordinate (N(0, 0.5) on the second), steered, next to the plain member."""
    return {
        "name": "steer_tiny", "seed": 1, "output": str(tmp_path), "run_name": "r",
        "models": {"a": {"kind": "gaussian_mixture", "means": [[1.0, 0.0]], "covs": [0.5]}},
        "n_samples": 600, "sampler": {"steps": 100, "chunk_size": 300, "threads": 1},
        "methods": [{"name": "tilted", "operator": "steer", "models": ["a"],
                     "potentials": [{"name": "linear", "weight": 2.0}, {"name": "quadratic", "weight": 0.0}]
                     if potentials is None else potentials, **options},
                    {"name": "plain", "operator": "single", "models": ["a"]}],
    }


def test_steer_writes_the_fkc_columns_and_each_energy_and_hits_the_tilted_mean(tmp_path):
    """exp(−2 x_0) tilts N(1, 0.5) to N(0, 0.5) in x_0 (the weight-0 quadratic is only measured). Measured
    over workflow seeds 0-4 (2 chunks of 300): mean x0 −0.14 to 0.07 (seed 1: −0.14), the plain member
    0.97-1.02; 118-145 ancestors and 1-2 resamplings per chunk."""
    res = run_workflow(_wf(tmp_path), progress=False, verbose=False)
    ps = pd.read_csv(res.folder / "per_sample.csv")
    steered, plain = ps[ps.method == "tilted"], ps[ps.method == "plain"]
    assert abs(steered["x0"].mean()) < 0.25 and abs(plain["x0"].mean() - 1.0) < 0.1
    assert np.allclose(steered["energy_linear"], steered["x0"], atol=1e-5)  # slope 1, coordinate 0
    assert np.allclose(steered["energy_quadratic"], 0.5 * (steered["x0"] ** 2 + steered["x1"] ** 2), atol=1e-5)
    for col in ("fkc_log_weight", "fkc_ess_min", "fkc_resamples", "fkc_ancestors"):
        assert steered[col].notna().all() and plain[col].isna().all(), col
    assert steered.groupby("chunk")["fkc_ancestors"].nunique().eq(1).all()
    m = res.metrics.set_index("method")
    for col in ("fkc_ess_min", "fkc_ess_final", "fkc_resamples", "fkc_ancestors", "energy_linear", "energy_quadratic"):
        assert np.isfinite(m.loc["tilted", col]) and np.isnan(m.loc["plain", col]), col
    assert 1 < m.loc["tilted", "fkc_ancestors"] < 300
    prov = res.provenance["methods"][0]
    assert prov["ramp"] == "alpha2" and prov["potentials"][0] == {"name": "linear", "weight": 2.0, "slope": 1.0,
                                                                    "coordinate": 0}


def test_the_resolved_potentials_are_the_config(tmp_path):
    wf = load_workflow(_wf(tmp_path, [{"name": "quadratic", "k": 2, "centre": "1e-1"}], ramp="linear"))
    assert wf.methods[0].options["potentials"] == [{"name": "quadratic", "weight": 1.0, "k": 2.0, "centre": 0.1}]
    assert wf.to_config()["methods"][0]["ramp"] == "linear"


@pytest.mark.parametrize("potentials, field, message", [
    (None, "potentials", "required field is missing"),
    ([], "potentials", "non-empty list"),
    ([{"weight": 1.0}], r"potentials\[0\].name", "mapping with a name"),
    ([{"name": "clash"}], r"potentials\[0\].name", "unknown potential 'clash' for modality 'vectors'; known: linear, "
                                                   "quadratic"),
    ([{"name": "linear"}, {"name": "linear", "slope": 2.0}], r"potentials\[1\].name", "listed twice"),
    ([{"name": "linear", "weight": -1.0}], r"potentials\[0\].weight", r"finite number in \[0.0, inf\]"),
    ([{"name": "linear", "slop": 2.0}], r"potentials\[0\].slop",
     "potential 'linear' has no parameter 'slop'; its parameters: slope, coordinate"),
    ([{"name": "linear", "coordinate": 0.5}], r"potentials\[0\].coordinate", "expected an integer"),
    ([{"name": "linear", "coordinate": -1}], r"potentials\[0\].coordinate", "must be >= 0"),
    ([{"name": "quadratic", "k": -2.0}], r"potentials\[0\].k", r"finite number in \[0.0, inf\]"),
    ([{"name": "quadratic", "centre": "far"}], r"potentials\[0\].centre", "expected a number"),
])
def test_bad_potentials_are_refused_while_the_workflow_is_read(tmp_path, potentials, field, message):
    wf = _wf(tmp_path)
    if potentials is None:
        del wf["methods"][0]["potentials"]
    else:
        wf["methods"][0]["potentials"] = potentials
    with pytest.raises(WorkflowError, match=rf"methods\[0\].{field}: .*{message}"):
        load_workflow(wf)


def test_bad_ramp_and_a_coordinate_past_the_dimension_are_named(tmp_path):
    with pytest.raises(WorkflowError, match=r"methods\[0\].ramp: must be one of alpha2, linear, constant"):
        load_workflow(_wf(tmp_path, ramp="cosine"))
    with pytest.raises(WorkflowError, match=r"methods\[0\] \(tilted\): potentials: evaluating them on a state of "
                                            r"shape \(2, 2\) failed: ValueError: coordinate 5 is not one of the 2"):
        run_workflow(_wf(tmp_path, [{"name": "linear", "coordinate": 5}]), progress=False, verbose=False)
    assert not (tmp_path / "steer_tiny" / "r" / "samples").exists()  # refused before any chunk was drawn


def test_modalities_register_potentials_as_functions_or_with_bounds():
    assert potential_params(linear_energy) == {"slope": 1.0, "coordinate": 0}
    vectors = plugins.modality("vectors")
    assert set(vectors.potentials) == {"linear", "quadratic"}
    assert vectors.potentials["quadratic"].bounds == {"k": (0.0, None)}
