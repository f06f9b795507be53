"""The shipped backbone fragments: splits by whole protein, padded centred point clouds, populations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("biotite")

from molfuse.modalities.proteins import data as pdata  # noqa: E402
from molfuse.modalities.proteins import dataset  # noqa: E402
from molfuse.modalities.proteins.io import Backbone  # noqa: E402


@pytest.fixture(scope="module")
def backbones() -> pdata.Backbones:
    return pdata.load_backbones()


def test_shipped_file_is_small_and_plain(backbones):
    assert pdata.SHIPPED.stat().st_size < 3_000_000
    np.load(pdata.SHIPPED, allow_pickle=False)["ca"]  # no pickles
    assert backbones.ca.dtype == np.float32 and set(np.unique(backbones.length)) == {64, 128}
    assert backbones.mask.sum(1).tolist() == backbones.length.tolist()
    real = np.where(backbones.mask[..., None], backbones.ca, 0.0)
    np.testing.assert_allclose(real.sum(1) / backbones.length[:, None], 0.0, atol=1e-3)  # centred, Å
    assert (backbones.ca[~backbones.mask] == 0).all()


def test_no_protein_or_family_in_two_splits(backbones):
    for key in ("protein", "family"):
        splits_of = {}
        for k, s in zip(getattr(backbones, key), backbones.split):
            splits_of.setdefault(int(k), set()).add(int(s))
        assert all(len(v) == 1 for v in splits_of.values()), key
    names = [backbones.protein_name[backbones.protein[backbones.split == s]] for s in range(3)]
    assert all(len(set(names[a]) & set(names[b])) == 0 for a in range(3) for b in range(a + 1, 3))
    assert all(len(set(n)) >= 10 for n in names)  # each split holds many proteins


def test_point_clouds_are_padded_centred_model_space(backbones):
    sub = backbones.take(np.r_[np.flatnonzero(backbones.length == 64)[:3], np.flatnonzero(backbones.length == 128)[:2]])
    x, mask = pdata.point_clouds(sub)
    assert x.shape == (5, 128, 3) and x.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [64, 64, 64, 128, 128]
    assert (x[~mask] == 0).all()
    centre = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert centre.abs().max() < 1e-5
    np.testing.assert_allclose(x.numpy() * pdata.ANGSTROM_PER_UNIT, sub.ca, atol=1e-4)  # positions / 10 Å
    pos, m = pdata.decode(x, mask)
    np.testing.assert_allclose(pos, sub.ca, atol=1e-4)
    x64, m64 = pdata.point_clouds(backbones.select("valid", 64))
    assert x64.shape[1:] == (64, 3) and bool(m64.all())


def test_populations_follow_their_thresholds(backbones):
    train = backbones.select("train", 64)
    helix = pdata.population(train, "helix_rich")
    strand = pdata.population(train, "strand_rich")
    assert len(helix) > 100 and len(strand) > 100
    assert (helix.sse_fraction[:, 0] >= 0.5).all() and (strand.sse_fraction[:, 1] >= 0.25).all()
    custom = pdata.population(train, where={"coil": [0.0, 0.3]})
    assert (custom.sse_fraction[:, 2] <= 0.3).all()
    with pytest.raises(ValueError, match="unknown SSE"):
        pdata.population(train, where={"turns": [0, 1]})


def test_data_kind_builds_training_data(backbones):
    td = pdata.backbone_data({"split": "train", "length": 64, "population": "helix_rich", "n": 16,
                              "properties": ["helix", "strand"]})
    assert td.x.shape == (16, 64, 3) and td.mask.shape == (16, 64) and td.cond.shape == (16, 2)
    assert td.space == {"kind": "point_cloud", "centred": 3} and td.node_counts == {64: 16}
    assert td.normalisation["angstrom_per_unit"] == 10.0 and td.condition == "properties"
    assert (td.cond[:, 0] >= 0.5).all()
    again = pdata.backbone_data({"split": "train", "length": 64, "population": "helix_rich", "n": 16})
    assert again.description["fragment_sha256"] == td.description["fragment_sha256"]  # seeded
    with pytest.raises(ValueError, match="population has"):
        pdata.backbone_data({"split": "test", "length": 128, "n": 10_000})


def test_break_dedupe_windows_and_splits():
    ca = np.cumsum(np.full((10, 3), [3.8, 0.0, 0.0]), axis=0)
    ca[6:] += [5.0, 0.0, 0.0]  # a 8.8 Å gap between residues 5 and 6
    bb = Backbone("x.pdb", "A", np.array(["ALA"] * 10), np.arange(1, 11), np.repeat(ca[:, None], 4, axis=1))
    parts = dataset.break_chain(bb)
    assert [(o, len(p)) for o, p in parts] == [(0, 6), (6, 4)]
    rep = dataset.deduplicate(["ACDEFGHIKLMNPQ", "DEFGHIKL", "ACDEFGHIKLMNPW", "WWWWYYYYWWWW"])
    assert rep.tolist() == [0, 0, 0, 3]
    assert dataset.window_starts(100, 64, 16).tolist() == [0, 16, 32] and len(dataset.window_starts(50, 64, 16)) == 0
    split = dataset.assign_splits(np.ones(100), seed=0)
    assert np.bincount(split).tolist() == [80, 10, 10]
    assert (dataset.assign_splits(np.ones(100), seed=0) == split).all()


def test_families_join_homologues_only():
    base = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAACRESVSALL"
    rng = np.random.default_rng(0)
    mutant = "".join(c if rng.random() > 0.4 else "ACDEFGHIKLMNPQRSTVWY"[rng.integers(20)] for c in base[:120])
    unrelated = "".join("ACDEFGHIKLMNPQRSTVWY"[k] for k in rng.integers(0, 20, 120))
    fam = dataset.families([base[:120], mutant, unrelated])
    assert fam.tolist() == [0, 0, 1]
    assert dataset.families([base[:60], unrelated[:60]], groups=[7, 7]).tolist() == [0, 0]


PER_FRAGMENT = ("ca", "mask", "length", "split", "protein", "family", "start", "sse", "sse_fraction", "aa", "piece")


def _source(tmp_path, name: str = "frags.npz", drop: tuple[str, ...] = (), **replace) -> str:
    """A small backbones file: the shipped file's first 12 train fragments of 64 residues, edited."""
    with np.load(pdata.SHIPPED, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    keep = np.flatnonzero((arrays["split"] == 0) & (arrays["length"] == 64))[:12]
    arrays.update({k: arrays[k][keep] for k in PER_FRAGMENT})
    arrays.update(replace)
    for k in drop:
        arrays.pop(k)
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


def _build(source: str):
    from molfuse.training.data import build_data, check_data_spec

    return build_data(check_data_spec({"kind": "protein_backbones", "source": source, "length": 64}, "data"))


def test_a_good_small_source_builds(tmp_path):
    td = _build(_source(tmp_path))
    assert td.x.shape == (12, 64, 3) and bool(torch.isfinite(td.x).all())


def test_a_missing_source_file_is_named(tmp_path):
    from molfuse.errors import WorkflowError

    with pytest.raises(WorkflowError, match=r"data \(protein_backbones\): source .*none\.npz: no such file"):
        _build(str(tmp_path / "none.npz"))
    with pytest.raises(WorkflowError, match=r"source .*: is a folder"):
        _build(str(tmp_path))


def test_a_source_without_an_array_names_it_and_lists_what_it_has(tmp_path):
    from molfuse.errors import WorkflowError

    src = _source(tmp_path, drop=("ca",))
    with pytest.raises(WorkflowError, match=r"source .*frags\.npz has no array 'ca'; it has: .*'mask'"):
        _build(src)
    with pytest.raises(ValueError, match=r"frags\.npz has no array 'ca'"):
        pdata.load_backbones(src)


def test_a_source_with_bad_coordinates_or_masks_is_refused_when_read(tmp_path):
    from molfuse.errors import WorkflowError

    n = 12  # fragments in _source's files
    flat = _source(tmp_path, "flat.npz", ca=np.zeros((n, 128, 2), np.float32))
    with pytest.raises(WorkflowError, match=r"flat\.npz: 'ca' has shape \(12, 128, 2\); expected \(fragments, "
                                            r"residues, 3\)"):
        _build(flat)
    empty = _source(tmp_path, "empty.npz", mask=np.zeros((n, 128), bool))
    with pytest.raises(WorkflowError, match=r"empty\.npz: 'mask' marks no residue in 12 of 12 fragments"):
        _build(empty)
    ca = pdata.load_backbones(_source(tmp_path)).ca.copy()
    ca[0, [3, 5]] = np.nan
    ca[4, 7, 2] = np.inf
    bad = _source(tmp_path, "nan.npz", ca=ca)
    with pytest.raises(WorkflowError, match=r"nan\.npz: 'ca' has NaN/inf at 3 residues of 2 fragments "
                                            r"\(fragments 0, 4\)"):
        _build(bad)
    short = _source(tmp_path, "short.npz", length=np.full(n, 60, np.int16))
    with pytest.raises(WorkflowError, match=r"short\.npz: 'mask' marks 64 residues where 'length' says 60 "
                                            r"in 12 of 12 fragments"):
        _build(short)
    with pytest.raises(WorkflowError, match=r"'sse_fraction' has shape \(11, 3\); expected \(12, 3\)"):
        _build(_source(tmp_path, "odd.npz", sse_fraction=np.zeros((n - 1, 3), np.float32)))
    with pytest.raises(WorkflowError, match=r"source must be a path to a backbones \.npz or null; got 5"):
        _build(5)


def test_a_selection_with_no_fragment_names_the_selection(tmp_path):
    from molfuse.errors import WorkflowError
    from molfuse.training.data import build_data, check_data_spec

    spec = check_data_spec({"kind": "protein_backbones", "source": _source(tmp_path), "length": 128}, "data")
    with pytest.raises(WorkflowError, match=r"no fragment of split 'train', length 128, population 'all' in source "
                                            r".*frags\.npz"):
        build_data(spec)


def test_encode_and_decode_name_shapes():
    with pytest.raises(ValueError, match=r"Cα positions must be \(n, N, 3\); got shape \(2, 8, 2\)"):
        pdata.encode(np.zeros((2, 8, 2)), np.ones((2, 8), bool))
    with pytest.raises(ValueError, match=r"mask must be \(n, N\) = \(2, 8\); got shape \(2, 5\)"):
        pdata.encode(np.zeros((2, 8, 3)), np.ones((2, 5), bool))
    with pytest.raises(ValueError, match=r"mask must be \(n, N\) = \(2, 8\); got shape \(2, 5\)"):
        pdata.decode(np.zeros((2, 8, 3)), np.ones((2, 5), bool))
