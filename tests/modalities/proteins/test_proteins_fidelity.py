"""The proteins' ``set_distance`` (the campaign's fidelity report) on real fragments and random walks:
zero for identical sets, symmetric, helix-rich far from strand-rich, walks far from proteins,
NaN samples tolerated; its circular W1 on known cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("biotite")

from molfuse import plugins  # noqa: E402
from molfuse.campaign.reports import fidelity_table  # noqa: E402
from molfuse.modalities import proteins as prot  # noqa: E402
from molfuse.modalities.proteins.evaluate import decoded_traces  # noqa: E402
from molfuse.modalities.proteins.fidelity import backbone_values, circular_w1  # noqa: E402
from molfuse.modalities.proteins.geometry import DIHEDRAL_BINS, histogram_w1  # noqa: E402

DISTANCES = ("dihedral_w1_deg", "angle_w1_deg", "helix_w1", "strand_w1", "rg_w1_A", "step_share_diff",
             "validity_diff")


def _run(name: str, traces: list[np.ndarray], valid: np.ndarray | None = None) -> plugins.MethodRun:
    """A run of (L, 3) Å traces of one length, in model space as a sampler hands them over."""
    ca = np.stack(traces)
    x, mask = prot.encode(ca, np.ones(ca.shape[:2], bool))
    x = x.numpy()
    x[~np.isfinite(ca).all(-1)] = np.nan  # encode centres; keep a NaN sample NaN
    n = len(ca)
    table = pd.DataFrame({"id": [f"{name}-{i:06d}" for i in range(n)], "seed": 0, "reason": "",
                          "valid": np.ones(n, bool) if valid is None else valid})
    return plugins.MethodRun(name, "single", ["m"], x, np.zeros(n), np.zeros(n), mask=mask.numpy(), table=table)


def _ctx() -> plugins.EvalContext:
    models = {"m": SimpleNamespace(normalisation=prot.NORMALISATION)}
    return plugins.EvalContext(folder=None, settings={}, models=models, schedule=None, seed=0, t_end=1e-3, n_samples=0)


@pytest.fixture(scope="module")
def test_split() -> prot.Backbones:
    return prot.load_backbones().select("test", 64)


@pytest.fixture(scope="module")
def helix_rich(test_split) -> plugins.MethodRun:
    return _run("helix", prot.population(test_split, "helix_rich").traces())


@pytest.fixture(scope="module")
def strand_rich(test_split) -> plugins.MethodRun:
    return _run("strand", prot.population(test_split, "strand_rich").traces())


def _distances(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("n_a", "n_b")}


def test_circular_w1_on_known_cases():
    assert circular_w1(np.array([170.0]), np.array([-170.0])) == pytest.approx(20.0)  # across ±180, not 340
    x = np.random.default_rng(0).uniform(-60, 60, 500)
    assert circular_w1(x, x + 15) == pytest.approx(15.0)  # a rotation moves every angle by 15°
    assert circular_w1(x, x) == 0.0 and circular_w1(x, x + 360) == pytest.approx(0.0, abs=1e-9)
    assert circular_w1(np.array([0.0, 180.0]), np.array([90.0, -90.0])) == pytest.approx(90.0)
    y = np.random.default_rng(1).normal(50, 20, 2000)
    h = [np.histogram(np.mod(v + 180, 360) - 180, DIHEDRAL_BINS)[0] / len(v) for v in (x, y)]
    assert circular_w1(x, y) == pytest.approx(histogram_w1(*h, 10.0, circular=True), abs=3.0)  # the binned rule
    assert math.isnan(circular_w1(np.zeros(0), x))


def test_identical_sets_are_at_distance_zero(helix_rich):
    d = prot.set_distance(_ctx(), helix_rich, helix_rich)
    assert set(DISTANCES) <= set(d) and d["n_a"] == d["n_b"] == len(helix_rich.x) > 10
    assert isinstance(d["n_a"], int) and all(v == 0.0 for v in _distances(d).values()), d


def test_helix_rich_against_strand_rich_is_symmetric_and_far_in_sse(helix_rich, strand_rich):
    hs, sh = prot.set_distance(_ctx(), helix_rich, strand_rich), prot.set_distance(_ctx(), strand_rich, helix_rich)
    assert set(hs) == set(sh) and (hs["n_a"], hs["n_b"]) == (sh["n_b"], sh["n_a"])
    for k, v in _distances(hs).items():
        assert math.isfinite(v) and v >= 0 and v == pytest.approx(sh[k], rel=1e-9, abs=1e-12), k
    assert hs["helix_w1"] > 0.3 and hs["strand_w1"] > 0.15 and hs["dihedral_w1_deg"] > 20
    assert hs["step_share_diff"] < 0.02 and hs["validity_diff"] == 0.0  # both real: the same bond lengths


def test_random_walks_are_far_from_real_fragments(test_split, helix_rich):
    real = _run("real", test_split.traces()[:40])
    walks = _run("walks", prot.random_walks(40, 64, seed=0))
    d = prot.set_distance(_ctx(), real, walks)
    floor = prot.set_distance(_ctx(), real, _run("real2", test_split.traces()[40:80]))  # real against real
    assert d["n_a"] == d["n_b"] == 40
    for k in ("dihedral_w1_deg", "angle_w1_deg", "helix_w1", "strand_w1", "rg_w1_A", "validity_diff"):
        assert d[k] > floor[k] and d[k] > 0, (k, d[k], floor[k])
    for k in ("angle_w1_deg", "strand_w1", "rg_w1_A"):  # far beyond the spread between real fragments
        assert d[k] > 3 * floor[k], (k, d[k], floor[k])
    assert d["angle_w1_deg"] > 10 and d["validity_diff"] > 0.8  # walks bend out of range and clash
    assert d["step_share_diff"] < 0.05  # every walk step is 3.8 Å: the steps alone do not tell them apart


def test_stretched_steps_show_in_the_step_share(test_split):
    real = test_split.traces()[:20]
    d = prot.set_distance(_ctx(), _run("real", real), _run("stretched", [1.1 * t for t in real]))
    assert d["step_share_diff"] > 0.8 and d["angle_w1_deg"] < 1e-3 and d["dihedral_w1_deg"] < 1e-3  # same shape


def test_nan_samples_are_left_out_and_count_as_invalid(test_split):
    traces = [t.copy() for t in test_split.traces()[:20]]
    for t in traces[:4]:
        t[:] = np.nan
    flagged = np.ones(20, bool)
    flagged[4:6] = False  # the sampler's own failures (their coordinates are still measured)
    broken = _run("broken", traces, valid=flagged)
    d = prot.set_distance(_ctx(), _run("real", test_split.traces()[:20]), broken)
    assert d["n_b"] == 16 and backbone_values(_ctx(), broken)["validity"] == pytest.approx(14 / 20)
    assert d["validity_diff"] == pytest.approx(6 / 20)
    assert all(math.isfinite(v) and v >= 0 for v in _distances(d).values()), d
    every = _run("all_nan", [np.full((64, 3), np.nan)] * 3)
    assert all(math.isnan(v) for k, v in _distances(prot.set_distance(_ctx(), broken, every)).items()
               if k != "validity_diff")


def test_the_evaluators_table_gives_the_same_numbers(test_split):
    traces = test_split.traces()[:12]
    fresh, evaluated = _run("fresh", traces), _run("evaluated", traces)
    evaluated.cache["proteins_table"] = prot.score_backbones(decoded_traces(evaluated, prot.NORMALISATION))[0]
    d = prot.set_distance(_ctx(), fresh, evaluated)
    assert all(v == 0.0 for v in _distances(d).values()), d


def test_the_modality_registers_it_and_the_fidelity_report_uses_it(helix_rich, strand_rich):
    modality = plugins.modality("proteins")
    assert modality.set_distance is prot.set_distance
    runs = {"helix": helix_rich, "strand": strand_rich, "helix2": _run("helix2", [t for t in prot.population(
        prot.load_backbones().select("valid", 64), "helix_rich").traces()])}
    table = fidelity_table(_ctx(), runs, modality, [{"name": "p", "method": "strand", "reference": "helix",
                                                     "control": "helix2"}])
    assert {"helix_w1", "helix_w1_control", "helix_w1_ratio", "n_a", "n_b"} <= set(table.columns)
    assert table.loc[0, "helix_w1"] > table.loc[0, "helix_w1_control"] > 0 and table.loc[0, "helix_w1_ratio"] > 1
