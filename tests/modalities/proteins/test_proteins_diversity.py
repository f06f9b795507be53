"""TM-scores, clusters, diversity and novelty on real held-out fragments, rigid copies and random walks."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

pytest.importorskip("biotite")

from molfuse.modalities.proteins import diversity as dv  # noqa: E402
from molfuse.modalities.proteins.data import load_backbones  # noqa: E402


@pytest.fixture(scope="module")
def held_out():
    """The 64-residue fragments of the test split (whole proteins held out from training)."""
    return load_backbones().select("test", 64)


def random_walks(n: int, length: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Freely jointed chains: 3.8 Å steps in uniformly random directions."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, length - 1, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    return list(np.concatenate([np.zeros((n, 1, 3)), np.cumsum(steps, axis=1)], axis=1))


def rigid_copy(ca: np.ndarray, seed: int) -> np.ndarray:
    """``ca`` rotated by a random proper rotation and translated."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return ca @ q.T + rng.normal(scale=20.0, size=3)


def overlapping_pair(data) -> tuple[np.ndarray, np.ndarray]:
    """Two windows of one protein 16 residues apart (48 residues shared)."""
    for p in np.unique(data.protein):
        idx = np.flatnonzero((data.protein == p))
        starts = data.start[idx]
        for a in range(len(idx)):
            b = np.flatnonzero(starts == starts[a] + 16)
            if len(b):
                return data.ca[idx[a]][data.mask[idx[a]]], data.ca[idx[b[0]]][data.mask[idx[b[0]]]]
    raise AssertionError("no overlapping windows in the test split")


def unrelated_pairs(data, k: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """First fragments of k different proteins of different families, paired in turn."""
    _, first = np.unique(data.family, return_index=True)
    tr = [data.ca[i][data.mask[i]] for i in first[:k + 1]]
    return list(zip(tr[:-1], tr[1:]))


def test_kabsch_recovers_a_rigid_motion(held_out):
    ca = held_out.traces()[0].astype(np.float64)
    assert dv.ca_rmsd(rigid_copy(ca, 1), ca) < 1e-6
    mirror = ca * np.array([-1.0, 1.0, 1.0])  # a reflection is not a rotation: Kabsch must not use it
    assert dv.ca_rmsd(mirror, ca) > 1.0


@pytest.mark.parametrize("method", dv.METHODS)
def test_tm_self_rigid_copy_and_random_walk(held_out, method):
    if method == "tmalign":
        pytest.importorskip("tmtools", reason="tmtools is in molfuse[designability]")
    ca = held_out.traces()[0].astype(np.float64)
    assert dv.tm_score(ca, ca, method) == pytest.approx(1.0, abs=1e-6)
    assert dv.tm_score(rigid_copy(ca, 2), ca, method) == pytest.approx(1.0, abs=1e-4)
    walks = [dv.tm_score(w, ca, method) for w in random_walks(5)]
    assert max(walks) < 0.3, walks


def test_tmalign_overlapping_windows_beat_unrelated_proteins(held_out):
    pytest.importorskip("tmtools", reason="tmtools is in molfuse[designability]")
    a, b = overlapping_pair(held_out)
    same = dv.tm_score(a, b)
    other = [dv.tm_score(x, y) for x, y in unrelated_pairs(held_out)]
    assert same > 0.7  # 48 of 64 residues superpose exactly: TM >= 48/64
    assert max(other) < same and np.mean(other) < 0.45, (same, other)


def test_fixed_alignment_is_a_lower_bound_of_tmalign(held_out):
    pytest.importorskip("tmtools", reason="tmtools is in molfuse[designability]")
    tr = held_out.traces()[:8]
    fixed, free = dv.tm_matrix(tr, "fixed"), dv.tm_matrix(tr, "tmalign")
    iu = np.triu_indices(len(tr), 1)
    assert (fixed[iu] <= np.minimum(free, free.T)[iu] + 0.02).all()
    with pytest.raises(ValueError, match="equal lengths"):
        dv.tm_score_fixed(tr[0], tr[0][:-3])


@pytest.mark.parametrize("linkage", dv.LINKAGES)
def test_identical_copies_form_one_cluster(held_out, linkage):
    ca = held_out.traces()[0].astype(np.float64)
    copies = [ca] + [rigid_copy(ca, s) for s in range(4)]
    labels = dv.clusters(dv.tm_matrix(copies, "fixed"), 0.5, linkage)
    assert (labels == 0).all()


@pytest.mark.parametrize("linkage", dv.LINKAGES)
def test_clusters_on_a_known_matrix(linkage):
    # 0-1-2 chained at 0.6 (0 and 2 at 0.3): single links all three; greedy and complete split them.
    tm = np.array([[1, .6, .3, .1], [.6, 1, .6, .1], [.3, .6, 1, .1], [.1, .1, .1, 1]])
    labels = dv.clusters(tm, 0.5, linkage)
    n = len(set(labels))
    assert n == {"single": 2, "complete": 3, "greedy": 2}[linkage], labels
    if linkage == "greedy":  # centre 1 takes 0 and 2 (every member >= 0.5 to its centre)
        assert labels[0] == labels[1] == labels[2] != labels[3]


def test_diversity_table_rows_summary_and_invalid_sample(held_out):
    tr = held_out.traces()[:4]
    samples = [tr[0], rigid_copy(tr[0], 3), tr[1], np.full((64, 3), np.nan), tr[2][:3]]
    table, summary = dv.diversity_table(samples, reference=held_out.traces()[:6], method="fixed")
    assert list(table["valid"]) == [True, True, True, False, False]
    assert "non-finite" in table.loc[3, "reason"] and "residues" in table.loc[4, "reason"]
    assert table.loc[0, "cluster"] == table.loc[1, "cluster"] and table.loc[0, "cluster_size"] == 2
    assert table.loc[0, "novelty"] == pytest.approx(1.0) and table.loc[0, "nearest_reference"] == 0
    assert summary["n"] == 5 and summary["n_clusters"] == len(set(table["cluster"][table["valid"]]))
    assert summary["cluster_fraction"] == pytest.approx(summary["n_clusters"] / 5)  # invalid ones count
    assert summary["settings"]["tm_method"] == "fixed" and summary["settings"]["linkage"] == "greedy"
    assert np.isnan(summary["tm_matrix"][3]).all()
    with pytest.raises(ValueError, match="one length"):
        dv.tm_matrix([tr[0], tr[1][:50]], "fixed")


def test_cost_of_tm_scores_is_measured(held_out):
    tr = held_out.traces()[:6]
    start = time.perf_counter()
    dv.tm_matrix(tr, "fixed")
    per_pair = (time.perf_counter() - start) / 15
    print(f"tm_score_fixed, 64 residues: {1e3 * per_pair:.1f} ms per pair")
    assert per_pair < 0.5
    if importlib.util.find_spec("tmtools") is not None:
        start = time.perf_counter()
        dv.tm_matrix(tr, "tmalign")
        per_pair = (time.perf_counter() - start) / 15
        print(f"tm_align, 64 residues: {1e3 * per_pair:.1f} ms per pair")
        assert per_pair < 0.5


@pytest.mark.slow
def test_novelty_of_held_out_against_training(held_out):
    pytest.importorskip("tmtools", reason="tmtools is in molfuse[designability]")
    ref = dv.reference_traces("train", 64, n=200, seed=0)
    _, first = np.unique(held_out.protein, return_index=True)
    samples = [held_out.ca[i][held_out.mask[i]] for i in first[:6]]
    nov, arg = dv.novelty(samples, ref)
    assert np.isfinite(nov).all() and (arg >= 0).all()
    assert nov.max() < 0.9  # held-out proteins are not copies of training fragments
    nov_train, _ = dv.novelty(ref[:3], ref)
    assert np.allclose(nov_train, 1.0)
