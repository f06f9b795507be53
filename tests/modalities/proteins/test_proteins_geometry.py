"""Cα geometry on real held-out fragments, random walks, mirror images and closed-form helices."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("biotite")

from molfuse.modalities.proteins import geometry as geo  # noqa: E402
from molfuse.modalities.proteins.data import load_backbones  # noqa: E402


@pytest.fixture(scope="module")
def held_out() -> list[np.ndarray]:
    """The 64-residue fragments of the test split (Å)."""
    return load_backbones().select("test", 64).traces()


@pytest.fixture(scope="module")
def train() -> list[np.ndarray]:
    return load_backbones().select("train", 64).take(np.arange(0, 1000, 5)).traces()


def random_walks(n: int, length: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Freely jointed chains: 3.8 Å steps in uniformly random directions."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, length - 1, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    return list(np.concatenate([np.zeros((n, 1, 3)), np.cumsum(steps, axis=1)], axis=1))


def ideal_helix(n: int = 30, handed: int = 1) -> np.ndarray:
    """Cα of an ideal α-helix: radius 2.3 Å, 100° and 1.5 Å rise per residue (right-handed for +1)."""
    k = np.arange(n)
    phi = handed * np.radians(100.0) * k
    return np.stack([2.3 * np.cos(phi), 2.3 * np.sin(phi), 1.5 * k], axis=1)


def test_angles_and_dihedrals_match_biotite():
    import biotite.structure as struc

    p = np.random.default_rng(3).normal(size=(20, 3)) * 3
    np.testing.assert_allclose(geo.virtual_dihedrals(p),
                               np.degrees(struc.dihedral(p[:-3], p[1:-2], p[2:-1], p[3:])), atol=1e-4)
    np.testing.assert_allclose(geo.bond_angles(p), np.degrees(struc.angle(p[:-2], p[1:-1], p[2:])), atol=1e-4)


def test_ideal_helix_handedness():
    right, left = ideal_helix(handed=1), ideal_helix(handed=-1)
    assert abs(geo.bond_lengths(right).mean() - 3.8) < 0.05  # the ideal helix has Cα–Cα ≈ 3.8 Å
    assert 45 < geo.virtual_dihedrals(right).mean() < 55
    np.testing.assert_allclose(geo.virtual_dihedrals(left), -geo.virtual_dihedrals(right), atol=1e-9)
    assert geo.sse_fractions(geo.sse_codes(right))["helix"] > 0.8


def test_real_held_out_fragments_are_valid(held_out):
    table = geo.geometry_table(held_out)
    assert len(table) == len(held_out) > 50
    assert table["valid"].all(), table.loc[~table["valid"], "reason"].tolist()[:3]
    assert abs(table["bond_mean"].mean() - 3.8) < 0.02 and table["n_clashes"].sum() == 0
    s = geo.summary(table)
    assert s["validity"] == 1.0 and 45 < s["helix_dihedral"] < 55  # right-handed helices ≈ +50°


def test_random_walks_are_invalid(held_out):
    table = geo.geometry_table(random_walks(30))
    assert not table["valid"].any()
    assert table["reason"].str.contains("clashes|angles").all()
    assert (table["bond_share"] == 1.0).all()  # exact 3.8 Å steps: only the shape gives them away
    assert table["helix"].max() < 0.2


def test_mirror_image_flips_the_helical_dihedral(held_out):
    real = geo.geometry_table(held_out)
    mirrored = geo.geometry_table([t * np.array([1.0, 1.0, -1.0]) for t in held_out])
    both = real["helix_dihedral"].notna() & mirrored["helix_dihedral"].notna()
    assert both.sum() > 20
    assert abs(geo.summary(real)["helix_dihedral"] - 50) < 5
    assert abs(geo.summary(mirrored)["helix_dihedral"] + 50) < 5  # left-handed: ≈ −50°
    assert mirrored["valid"].all()  # local geometry cannot see handedness; the dihedral does
    np.testing.assert_allclose(mirrored["rg"], real["rg"], rtol=1e-9)


def test_histogram_distances_rank_real_above_random(held_out, train):
    real = geo.distribution_distances(held_out, train)
    walk = geo.distribution_distances(random_walks(60), train)
    mirror = geo.distribution_distances([t * np.array([-1.0, 1.0, 1.0]) for t in held_out], train)
    assert real["angle_w1"] < 5 and real["dihedral_js"] < 0.1
    assert walk["angle_w1"] > 3 * real["angle_w1"] and walk["angle_js"] > 5 * real["angle_js"]
    assert mirror["angle_w1"] == pytest.approx(real["angle_w1"])  # angles are mirror-blind
    assert mirror["dihedral_w1"] > 3 * real["dihedral_w1"]


def test_histogram_w1_closed_forms():
    p, q = np.zeros(36), np.zeros(36)
    p[0], q[3] = 1.0, 1.0
    assert geo.histogram_w1(p, q, 10.0) == pytest.approx(30.0)
    p[0], q[3], q[35] = 1.0, 0.0, 1.0  # neighbours across ±180°: one bin apart on the circle
    assert geo.histogram_w1(p, q, 10.0, circular=True) == pytest.approx(10.0)
    assert geo.js_divergence(p, p) == 0.0 and geo.js_divergence(p, q) == pytest.approx(1.0)


def test_unmeasurable_traces_are_rows_with_reasons():
    bad = np.array([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [np.nan, 0.0, 0.0], [7.6, 1.0, 0.0], [9.0, 4.0, 0.0]])
    broken = ideal_helix(12)
    broken[6:] += 10.0
    table = geo.geometry_table([np.zeros((2, 3)), bad, broken])
    assert not table["valid"].any()
    assert table["reason"].tolist()[:2] == ["2 residues (< 4)", "non-finite coordinates"]
    assert "1 chain breaks" in table.loc[2, "reason"] and table.loc[2, "n_breaks"] == 1


def test_rg_law_and_padded_input(held_out):
    assert geo.expected_rg(100) == pytest.approx(2.2 * 100 ** 0.38)
    ca = np.zeros((2, 70, 3))
    ca[0, :64], ca[1, :50] = held_out[0], held_out[1][:50]
    mask = np.zeros((2, 70), bool)
    mask[0, :64], mask[1, :50] = True, True
    table = geo.geometry_table(ca, mask)
    assert table["n_res"].tolist() == [64, 50]
    assert table.loc[0, "rg"] == pytest.approx(geo.radius_of_gyration(held_out[0]))


def test_traces_of_the_wrong_shape_are_named_never_reshaped():
    for bad, shape in ((np.zeros((5, 2)), r"\(5, 2\)"), (np.arange(15.0), r"\(15,\)")):
        with pytest.raises(ValueError, match=rf"trace 1 has shape {shape}; expected \(L, 3\) Cα positions in Å"):
            geo.geometry_table([ideal_helix(8), bad])
    assert geo.backbone_row(np.zeros((5, 2)))["reason"] == "shape (5, 2); expected (L, 3) Å"
    assert geo.geometry_table([np.zeros(0)]).loc[0, "reason"] == "0 residues (< 4)"
    with pytest.raises(ValueError, match=r"a batch of traces is \(n, L, 3\) Å; got shape \(2, 8, 2\)"):
        geo.geometry_table(np.zeros((2, 8, 2)))
    with pytest.raises(ValueError, match=r"mask must be \(n, L\) = \(2, 8\); got shape \(2, 5\)"):
        geo.geometry_table(np.zeros((2, 8, 3)), np.ones((2, 5), bool))
