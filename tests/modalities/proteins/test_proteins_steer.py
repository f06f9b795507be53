"""Steering protein backbones by the proteins modality's potentials (MATH §8) at tiny size: a member on
angle states (the chain space) trained a few steps, steered by clash and bond-angle energies that
decode each denoised state to a Cα trace; the potentials' parameters checked while the workflow is read."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("biotite")
pytest.importorskip("e3nn")
pytest.importorskip("lightning")

from molfuse import WorkflowError  # noqa: E402
from molfuse.campaign import load_workflow, run_workflow  # noqa: E402
from molfuse.training import train_from_workflow  # noqa: E402


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    out = tmp_path_factory.mktemp("steer_prot")
    wf = {"name": "tiny_angles", "seed": 0, "output": str(out / "train"),
          "architecture": {"name": "protein_angles", "config": {"width": 16, "layers": 1, "heads": 2, "kernel": 3,
                                                                  "max_separation": 8, "time_dim": 8}},
          "data": {"kind": "protein_angles", "length": 64, "stride": 16, "n": 32},
          "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "threads": 1}}
    return out, train_from_workflow(wf, progress=False, verbose=False).checkpoint


def _wf(member, potentials):
    out, ckpt = member
    return {"name": "tiny_steer", "output": str(out / "runs"), "run_name": "r", "n_samples": 16,
            "sampler": {"steps": 20, "chunk_size": 16, "threads": 1},
            "models": {"m": {"kind": "checkpoint", "path": str(ckpt)}},
            "methods": [{"name": "steered", "operator": "steer", "models": ["m"], "potentials": potentials},
                        {"name": "plain", "operator": "fkc", "models": ["m"]}]}


def test_clash_and_bond_angle_steering_of_an_angle_member(member):
    """A weight of 5 per Å² of clash on a 3-step member: the weights keep the least clashing lineage of 16
    particles, so the steered backbones clash far less (the evaluator's n_clashes, Cα pairs under 3 Å)
    than the unsteered FKC particles of the same member. Measured over workflow seeds 0-4: mean
    n_clashes 3.5-11.1 steered against 33-39 plain; 1 lineage survives (a strong tilt of an untrained net)."""
    res = run_workflow(_wf(member, [{"name": "clash", "weight": 5.0, "cutoff": 4.0},
                                    {"name": "bond_angle", "weight": 1.0}]), progress=False, verbose=False)
    ps = pd.read_csv(res.folder / "per_sample.csv")
    steered = ps[ps.method == "steered"]
    assert steered[["energy_clash", "energy_bond_angle", "fkc_ancestors", "fkc_log_weight"]].notna().all().all()
    m = res.metrics.set_index("method")
    assert m.loc["steered", "fkc_ancestors"] <= 16 and m.loc["steered", "energy_clash"] >= 0
    assert res.provenance["methods"][0]["potentials"][0] == {"name": "clash", "weight": 5.0, "cutoff": 4.0,
                                                             "separation": 3}
    plain = ps[ps.method == "plain"]
    assert plain["energy_clash"].isna().all()
    assert steered["n_clashes"].mean() < 0.5 * plain["n_clashes"].mean()


@pytest.mark.parametrize("potential, field, message", [
    ({"name": "bond_angle", "lo": 150.0, "hi": 80.0}, "lo", "lo < hi degrees; got lo 150.0, hi 80.0"),
    ({"name": "clash", "cutoff": -1.0}, "cutoff", r"finite number in \[0.0, 20.0\]"),
    ({"name": "clash", "separation": 0}, "separation", "must be >= 1"),
    ({"name": "valence"}, "name", "unknown potential 'valence' for modality 'proteins'; known: bond_angle, "
                                  "chain_break, clash"),
])
def test_protein_potential_parameters_are_checked_while_the_workflow_is_read(member, potential, field, message):
    with pytest.raises(WorkflowError, match=rf"methods\[0\].potentials\[0\].{field}: .*{message}"):
        load_workflow(_wf(member, [potential]))
