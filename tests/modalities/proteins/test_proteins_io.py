"""Protein structure files in and out (biotite): round trips, compression, bad files as reason rows."""

from __future__ import annotations

import bz2
import re
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("biotite")

from molfuse.modalities.proteins import io as st  # noqa: E402
from molfuse.modalities.proteins.data import load_backbones  # noqa: E402

MDA = importlib.util.find_spec("MDAnalysisTests")
MDA_DATA = Path(list(MDA.submodule_search_locations)[0]) / "data" if MDA else None
needs_mda = pytest.mark.skipif(MDA is None, reason="MDAnalysisTests is not installed")


@pytest.fixture(scope="module")
def trace() -> np.ndarray:
    """A real 64-residue Cα trace (Å) from the shipped fragments."""
    data = load_backbones().select("test", 64)
    return data.ca[0][data.mask[0]].astype(np.float64)


@pytest.mark.parametrize("fmt", ["pdb", "cif"])
def test_write_read_round_trip(tmp_path, trace, fmt):
    path = tmp_path / f"model.{fmt}"
    writer = st.write_pdb if fmt == "pdb" else st.write_mmcif
    names = ["GLY"] * len(trace)
    writer(path, trace, res_names=names, chain_id="B", remark="sample 7")
    assert st.TITLE in path.read_text()
    chains, table = st.read_structure(path)
    assert table["valid"].tolist() == [True] and table.loc[0, "chain"] == "B"
    assert len(chains) == 1 and len(chains[0]) == len(trace)
    np.testing.assert_allclose(chains[0].ca, trace, atol=1e-3)  # PDB keeps 3 decimals
    assert chains[0].sequence == "G" * len(trace)
    assert np.isnan(chains[0].atoms[:, [0, 2, 3]]).all()  # Cα only: N, C, O missing


def test_gzip_bzip2_and_binary_cif(tmp_path, trace):
    from biotite.structure.io import pdbx

    text = st.write_pdb(tmp_path / "m.pdb", trace).read_bytes()
    (tmp_path / "m.pdb.gz").write_bytes(gzip.compress(text))
    (tmp_path / "m.pdb.bz2").write_bytes(bz2.compress(text))
    (tmp_path / "no_suffix").write_bytes(gzip.compress(text))  # format sniffed, compression by magic
    bcif = pdbx.BinaryCIFFile()
    pdbx.set_structure(bcif, st.backbone_atoms(trace))
    bcif.write(tmp_path / "m.bcif")
    for name in ("m.pdb.gz", "m.pdb.bz2", "no_suffix", "m.bcif"):
        chains, table = st.read_structure(tmp_path / name)
        assert table["valid"].all(), (name, table["reason"].tolist())
        np.testing.assert_allclose(chains[0].ca, trace, atol=1e-3)


def test_bad_files_are_rows_with_reasons(tmp_path, trace):
    (tmp_path / "empty.pdb").write_text("")
    (tmp_path / "blank.pdb.gz").write_bytes(gzip.compress(b"   \n\n"))
    (tmp_path / "garbage.cif").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "broken.cif").write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n")
    (tmp_path / "water.pdb").write_text(
        "HETATM    1  O   HOH A   1       1.000   2.000   3.000  1.00  0.00           O\nEND\n")
    (tmp_path / "no_ca.pdb").write_text("".join(
        f"ATOM  {i + 1:5d}  N   ALA A{i + 1:4d}    {3.8 * i:8.3f}   0.000   0.000  1.00  0.00           N\n"
        for i in range(5)) + "END\n")
    (tmp_path / "folder.pdb").mkdir()
    paths = [tmp_path / n for n in ("empty.pdb", "blank.pdb.gz", "garbage.cif", "broken.cif", "water.pdb",
                                    "no_ca.pdb", "folder.pdb", "missing.pdb")]
    good = st.write_pdb(tmp_path / "good.pdb", trace)
    chains, table = st.read_structures([*paths, good])  # one batch: nothing raises
    bad = table[table["file"] != "good.pdb"]
    assert not bad["valid"].any() and bad["reason"].str.len().gt(0).all()
    reasons = dict(zip(bad["file"], bad["reason"]))
    assert reasons["empty.pdb"] == "empty file" and reasons["blank.pdb.gz"] == "empty file"
    assert reasons["missing.pdb"] == "no such file" and reasons["folder.pdb"] == "is a folder"
    assert "no CA atom" in reasons["no_ca.pdb"] and reasons["water.pdb"] == "no amino-acid residue"
    assert reasons["garbage.cif"].startswith("unreadable") or reasons["garbage.cif"] == "no amino-acid residue"
    assert len(chains) == 1 and len(chains[0]) == len(trace)


def test_blank_occupancy_is_repaired_and_noted(tmp_path):
    lines = [f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {3.8 * i:8.3f}   0.000   0.000" for i in range(6)]
    (tmp_path / "bare.pdb").write_text("\n".join(lines) + "\nEND\n")
    chains, table = st.read_structure(tmp_path / "bare.pdb")
    assert table["valid"].all() and table.loc[0, "note"] == st.REPAIRED and len(chains[0]) == 6


def test_write_backbones_one_file_per_masked_trace(tmp_path, trace):
    ca = np.zeros((2, 64, 3))
    ca[0], ca[1, :40] = trace, trace[:40]
    mask = np.zeros((2, 64), bool)
    mask[0], mask[1, :40] = True, True
    paths = st.write_backbones(tmp_path / "samples", ca, mask, fmt="cif")
    assert [p.name for p in paths] == ["sample_00000.cif", "sample_00001.cif"]
    assert [len(st.read_structure(p)[0][0]) for p in paths] == [64, 40]
    with pytest.raises(ValueError, match="finite"):
        st.write_pdb(tmp_path / "nan.pdb", np.full((3, 3), np.nan))


@needs_mda
@pytest.mark.parametrize("name, chain, n", [("dssp/1ahsA.pdb.gz", "A", 126), ("mmcif/5PTI.cif.gz", "A", 58),
                                            ("adk_oplsaa.gro", "", 214)])
def test_real_files(name, chain, n):
    chains, table = st.read_structure(MDA_DATA / name)
    assert table.loc[0, "valid"] and table.loc[0, "chain"] == chain and len(chains[0]) == n
    assert table.loc[0, "full_backbone"] > 0.99  # N, CA, C, O read where present
    d = np.linalg.norm(np.diff(chains[0].ca, axis=0), axis=1)
    assert abs(np.median(d) - 3.8) < 0.05


@needs_mda
def test_real_unreadable_file_is_a_row():
    chains, table = st.read_structure(MDA_DATA / "huge_box.gro")
    assert chains == [] and not table.loc[0, "valid"] and table.loc[0, "reason"].startswith("unreadable")


def _eight() -> np.ndarray:
    return np.cumsum(np.full((8, 3), [3.8, 0.0, 0.0]), axis=0)


def _pdb_with(tmp_path, name: str, rows: dict[int, tuple[str, str, str]]) -> Path:
    """A Cα-only PDB of 8 residues whose rows ``rows`` (0-based) carry the given x, y, z fields."""
    lines = st.write_pdb(tmp_path / "base.pdb", _eight()).read_text().splitlines()
    atoms = [k for k, line in enumerate(lines) if line.startswith("ATOM")]
    for r, xyz in rows.items():
        line = lines[atoms[r]]
        lines[atoms[r]] = line[:30] + "".join(f"{v:>8}" for v in xyz) + line[54:]
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path / name


def test_non_finite_ca_coordinates_make_the_chain_invalid_and_are_named(tmp_path):
    path = _pdb_with(tmp_path, "nan.pdb", {3: ("nan", "0.000", "0.000"), 5: ("1.000", "inf", "0.000")})
    chains, table = st.read_structure(path)
    assert chains == [] and table["valid"].tolist() == [False]
    assert table.loc[0, "reason"] == ("chain 'A': CA coordinates missing or not finite at 2 of 8 residues "
                                      "(residues 4, 6)")


def test_mmcif_unknown_coordinates_are_not_read_as_zero(tmp_path):
    text = st.write_mmcif(tmp_path / "m.cif", _eight()).read_text()
    text = text.replace("ALA A CA 15.2 0.0 0.0", "ALA A CA ? ? ?")
    assert "? ? ?" in text
    (tmp_path / "q.cif").write_text(text)
    chains, table = st.read_structure(tmp_path / "q.cif")
    assert chains == [] and not table.loc[0, "valid"]
    assert table.loc[0, "reason"] == ("chain 'A': CA coordinates missing or not finite at 1 of 8 residues "
                                      "(residue 4)")


def test_binary_cif_masked_coordinates_are_not_read_as_values(tmp_path):
    from biotite.structure.io import pdbx

    f = pdbx.BinaryCIFFile()
    pdbx.set_structure(f, st.backbone_atoms(_eight()))
    site, unknown = f.block["atom_site"], np.zeros(8, np.uint8)
    unknown[3] = 1  # 1: '.', not present
    for axis in "xyz":
        values = pdbx.BinaryCIFData(site[f"Cartn_{axis}"].as_array(np.float64))
        site[f"Cartn_{axis}"] = pdbx.BinaryCIFColumn(values, pdbx.BinaryCIFData(unknown))
    f.write(tmp_path / "q.bcif")
    chains, table = st.read_structure(tmp_path / "q.bcif")
    assert chains == [] and not table.loc[0, "valid"]
    assert "at 1 of 8 residues (residue 4)" in table.loc[0, "reason"]


def test_residues_without_a_ca_atom_are_noted(tmp_path):
    lines = st.write_pdb(tmp_path / "base.pdb", _eight()).read_text().splitlines()
    lines = [ln.replace("  CA  ALA A   3", "  N   ALA A   3") for ln in lines]
    (tmp_path / "gap.pdb").write_text("\n".join(lines) + "\n")
    chains, table = st.read_structure(tmp_path / "gap.pdb")
    assert table["valid"].tolist() == [True] and len(chains[0]) == 7
    assert table.loc[0, "note"] == "chain 'A': 1 residue without a CA atom skipped (residue 3)"


@pytest.mark.parametrize("writer", [st.write_pdb, st.write_mmcif])
def test_writers_name_the_expected_shape(tmp_path, writer):
    for bad in (np.zeros((5, 2)), np.arange(15.0), np.zeros((2, 4, 3))):  # never reshaped into a trace
        shape = re.escape(str(bad.shape))
        with pytest.raises(ValueError, match=rf"expected \(L, 3\) Cα positions in Å; got shape {shape}"):
            writer(tmp_path / "x", bad)
    with pytest.raises(ValueError, match=r"expected \(L, 3\) Cα positions in Å as numbers"):
        writer(tmp_path / "x", [["a", "b", "c"]])
    with pytest.raises(ValueError, match="res_names has 3 names for 8 residues"):
        writer(tmp_path / "x", _eight(), res_names=["GLY"] * 3)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_pdb_chain_ids_are_one_character(tmp_path):
    with pytest.raises(ValueError, match="chain_id must be one character in a PDB file; got 'AB'"):
        st.write_pdb(tmp_path / "x.pdb", _eight(), chain_id="AB")
    st.write_mmcif(tmp_path / "x.cif", _eight(), chain_id="AB")
    assert st.read_structure(tmp_path / "x.cif")[1].loc[0, "chain"] == "AB"


def test_write_backbones_names_batch_and_mask_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"ca must be \(n, L, 3\) Cα positions in Å; got shape \(8, 3\)"):
        st.write_backbones(tmp_path / "s", _eight())
    with pytest.raises(ValueError, match=r"mask must be \(n, L\) = \(1, 8\); got shape \(1, 5\)"):
        st.write_backbones(tmp_path / "s", _eight()[None], np.ones((1, 5), bool))
    assert not (tmp_path / "s").exists()
