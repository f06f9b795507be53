"""The molecules' ``set_distance`` (the campaign's fidelity report) on real QM9 molecules: zero for
identical sets, symmetric, clearly positive against damaged molecules, NaN samples tolerated."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("rdkit")

from molfuse import plugins  # noqa: E402
from molfuse.campaign.reports import fidelity_table  # noqa: E402
from molfuse.modalities.molecules import encode, load_small, normalisation_for, set_distance  # noqa: E402
from molfuse.modalities.molecules.fidelity import molecule_values  # noqa: E402

NORM = normalisation_for("implicit")
DISTANCES = ("n_atoms_w1", "logp_w1", "qed_w1", "rings_w1", "heteroatoms_w1", "property_w1_mean", "validity_diff")


def _atoms(part: str, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heavy atoms of ``n`` real molecules with at least 5 heavy atoms (types, positions)."""
    types, pos, _ = load_small()[part].heavy()
    keep = np.flatnonzero((types >= 0).sum(1) >= 5)[offset:offset + n]
    return types[keep].copy(), pos[keep].copy()


def _run(name: str, types: np.ndarray, pos: np.ndarray, valid: np.ndarray | None = None) -> plugins.MethodRun:
    x, mask = encode(types, pos, len(NORM["alphabet"]))
    n = len(types)
    table = pd.DataFrame({"id": [f"{name}-{i:06d}" for i in range(n)], "valid": np.ones(n, bool) if valid is None
                          else valid, "reason": ""})
    return plugins.MethodRun(name, "single", ["m"], x.numpy(), np.zeros(n), np.zeros(n), mask=mask.numpy(), table=table)


def _ctx(settings: dict | None = None) -> plugins.EvalContext:
    return plugins.EvalContext(folder=None, settings=settings or {}, models={"m": SimpleNamespace(normalisation=NORM)},
                               schedule=None, seed=0, t_end=1e-3, n_samples=0)


@pytest.fixture(scope="module")
def real() -> plugins.MethodRun:
    return _run("real", *_atoms("train", 80))


@pytest.fixture(scope="module")
def other() -> plugins.MethodRun:
    return _run("other", *_atoms("test", 80))


def _distances(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("n_a", "n_b")}


def _all_zero(d: dict) -> bool:
    """Every distance 0: the W1s exactly, FCD up to its matrix square root's rounding."""
    return all(v == pytest.approx(0.0, abs=1e-3 if k == "fcd" else 1e-12) for k, v in _distances(d).items())


def test_identical_sets_are_at_distance_zero(real):
    d = set_distance(_ctx(), real, real)
    assert set(DISTANCES) <= set(d) and isinstance(d["n_a"], int) and d["n_a"] == d["n_b"] > 70
    assert _all_zero(d), d
    assert ("fcd" in d) == (importlib.util.find_spec("fcd_torch") is not None)


def test_the_distance_is_symmetric_non_negative_and_finite(real, other):
    ab, ba = set_distance(_ctx(), real, other), set_distance(_ctx(), other, real)
    assert set(ab) == set(ba) and (ab["n_a"], ab["n_b"]) == (ba["n_b"], ba["n_a"])
    for k, v in _distances(ab).items():
        assert math.isfinite(v) and v >= 0 and v == pytest.approx(ba[k], rel=1e-4 if k == "fcd" else 1e-9), k


def test_molecules_with_atoms_removed_are_far(real):
    types, pos = _atoms("train", 80)
    n_real = (types >= 0).sum(1)
    cut = types.copy()
    for i, n in enumerate(n_real):
        cut[i, n - 3:n] = -1  # the last three heavy atoms of every molecule are gone
    d = set_distance(_ctx(), real, _run("cut", cut, pos))
    assert d["n_atoms_w1"] == pytest.approx(3.0)  # every atom count shifts by exactly 3
    assert d["heteroatoms_w1"] > 0.2 and d["property_w1_mean"] > 0.5
    control = set_distance(_ctx(), real, _run("again", *_atoms("train", 80)))  # the same molecules, rebuilt
    assert _all_zero(control), control


def test_noisy_molecules_are_mostly_invalid_and_far(real):
    types, pos = _atoms("train", 80)
    noisy = pos + np.random.default_rng(0).normal(scale=0.6, size=pos.shape) * (types >= 0)[..., None]
    d = set_distance(_ctx(), real, _run("noisy", types, noisy))
    assert d["validity_diff"] > 0.3 and d["n_b"] < d["n_a"] - 20
    assert d["property_w1_mean"] > 0.1 and d["n_atoms_w1"] == 0.0  # same atoms, broken chemistry
    if "fcd" in d:
        assert d["fcd"] > 1.0


def test_nan_samples_and_sampler_failures_count_as_invalid(real):
    types, pos = _atoms("train", 80)
    pos = pos.copy()
    pos[:10] = np.nan
    flagged = np.ones(80, bool)
    flagged[10:15] = False  # the sampler's own failures
    broken = _run("broken", types, pos, valid=flagged)
    d = set_distance(_ctx(), real, broken)
    own = molecule_values(_ctx(), broken)
    assert not own["valid"][:15].any() and d["n_b"] == own["valid"].sum() <= 65
    assert d["validity_diff"] == pytest.approx(abs(molecule_values(_ctx(), real)["valid"].mean() - own["valid"].mean()))
    assert all(math.isfinite(v) and v >= 0 for v in _distances(d).values()), d


def test_evaluation_properties_add_columns():
    ctx = _ctx({"bonds": "edm", "margins": [10, 5, 3], "properties": ["tpsa"]})
    a = _run("a", *_atoms("train", 30))
    d = set_distance(ctx, a, a)
    assert {"n_atoms_w1", "tpsa_w1", "rings_w1", "heteroatoms_w1"} <= set(d) and "logp_w1" not in d


def test_the_modality_registers_it_and_the_fidelity_report_uses_it(real, other):
    modality = plugins.modality("molecules")
    assert modality.set_distance is set_distance
    runs = {"real": real, "other": other, "again": _run("again", *_atoms("train", 80))}
    table = fidelity_table(_ctx(), runs, modality, [{"name": "p", "method": "other", "reference": "real",
                                                     "control": "again"}])
    assert {"rings_w1", "rings_w1_control", "rings_w1_ratio", "n_a"} <= set(table.columns)
    assert table.loc[0, "rings_w1"] > 0 and table.loc[0, "rings_w1_control"] == 0.0
