"""Bad and odd inputs to the molecule functions: a reason per row, or an error naming the argument,
file or field; never an RDKit traceback or a dead process (docs/reliability.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("rdkit")

from molfuse.errors import WorkflowError  # noqa: E402
from molfuse.modalities.molecules import bonds, data, io, metrics, properties, validation  # noqa: E402
from molfuse.modalities.molecules.elements import HEAVY  # noqa: E402
from molfuse.modalities.molecules.limits import MAX_INPUT_ATOMS  # noqa: E402
from molfuse.modalities.molecules.schema import parse_evaluation  # noqa: E402

WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


@pytest.mark.parametrize("symbol", ["Xx", "", "*", "c"])
def test_an_unknown_element_is_a_reason(symbol):
    res = bonds.to_molecule(["O", symbol, "H"], WATER)
    assert res.mol is None and f"unknown element {symbol!r} (atom 1)" in res.reason
    assert bonds.to_molecule(["O", symbol, "H"], WATER, method="rdkit").reason == res.reason


def test_positions_of_the_wrong_shape_are_a_value_error_naming_the_argument():
    for bad, shape in ((np.zeros((3, 2)), r"\(3, 2\)"), (np.zeros((2, 3)), r"\(2, 3\)"), (np.zeros(9), r"\(9,\)")):
        with pytest.raises(ValueError, match=rf"positions: expected shape \(3, 3\).*got {shape}"):
            bonds.to_molecule(["O", "H", "H"], bad)
    with pytest.raises(ValueError, match="positions: expected an"):
        bonds.to_molecule(["O", "H", "H"], [[0, 0, 0], [1, 0], "x"])
    with pytest.raises(ValueError, match=r"positions: expected shape \(n, N, 3\) = \(1, 3, 3\)"):
        metrics.molecule_table(np.zeros((1, 3), int), np.zeros((1, 3, 2)), HEAVY)
    with pytest.raises(ValueError, match=r"types: expected an \(n, N\) array"):
        metrics.molecule_table(np.zeros(3, int), np.zeros((1, 3, 3)), HEAVY)
    with pytest.raises(ValueError, match=r"x: expected shape \(n, N, 3 \+ 4\)"):
        data.decode(np.zeros((2, 9, 3)), np.ones((2, 9), bool), data.normalisation_for("implicit"))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 9\)"):
        data.decode(np.zeros((2, 9, 7)), np.ones((2, 8), bool), data.normalisation_for("implicit"))


@pytest.mark.parametrize("atom_type, why", [(-2, "atom type -2 at position 0"), (0.7, "atom type 0.7 at position 0"),
                                            (4, "atom type 4 at position 0"), (np.nan, "atom type nan at position 0")])
def test_atom_types_that_are_not_indices_mark_the_row_invalid(atom_type, why):
    pos = np.stack([np.array([[0.0, 0, 0], [1.5, 0, 0], [3.0, 0, 0]])] * 2)
    types = np.array([[atom_type, 0, 0], [0, 0, 0]], dtype=float)
    table, mols = metrics.molecule_table(types, pos, HEAVY)
    assert table["valid"].tolist() == [False, True] and mols[0] is None and mols[1] is not None
    assert why in table.loc[0, "reason"] and "-1 (padding) or an index 0..3 into ('C', 'N', 'O', 'F')" in \
        table.loc[0, "reason"]
    assert table.loc[1, "smiles"] == "CCC"  # whole-number floats are indices; the next row is untouched


def test_too_many_atoms_are_a_reason_before_rdkit():
    n = MAX_INPUT_ATOMS + 1
    res = bonds.to_molecule(["C"] * n, np.arange(3 * n, dtype=float).reshape(n, 3))
    assert res.mol is None and f"{n:,} atoms is above the limit of {MAX_INPUT_ATOMS:,}" in res.reason
    table, _ = metrics.molecule_table(np.zeros((1, n), int), np.zeros((1, n, 3)), HEAVY)
    assert not table.loc[0, "valid"] and "above the limit" in table.loc[0, "reason"]
    with pytest.raises(ValueError, match="above the limit"):
        bonds.bond_orders(np.zeros((n, 3)), ["C"] * n)
    mols, t = io.parse_smiles(["CCO", "C" * 200_000])
    assert t["valid"].tolist() == [True, False] and "SMILES of 200,000 atoms is above the limit" in t.loc[1, "reason"]
    assert validation.canonical("C" * 200_000) == ""
    for fn in (metrics.internal_diversity, lambda s: metrics.fcd(s, ["CCO", "CCN"])):
        with pytest.raises(ValueError, match=r"smiles\[1\]: SMILES of 200,000 atoms"):
            fn(["CCO", "C" * 200_000])


def test_a_huge_smiles_does_not_kill_the_process(tmp_path):
    """200,000 chained carbons crashed RDKit's SMILES writer (SIGSEGV): run in a child process."""
    (tmp_path / "big.smi").write_text("C" * 200_000 + " big\nCCO ok\n")
    code = textwrap.dedent(f"""
        from molfuse.modalities.molecules import io
        _, t = io.read_smiles({str(tmp_path / 'big.smi')!r})
        print(t['valid'].tolist(), t.loc[0, 'reason'])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.returncode
    assert "[False, True] SMILES of 200,000 atoms is above the limit" in out.stdout


def test_an_sdf_record_that_declares_too_many_atoms_is_a_row(tmp_path):
    n = MAX_INPUT_ATOMS + 5
    atoms = "".join(f"M  V30 {i + 1} C {1.5 * i:.4f} 0 0 0\n" for i in range(n))
    block = (f"big\n     RDKit          3D\n\n  0  0  0  0  0  0  0  0  0  0999 V3000\nM  V30 BEGIN CTAB\n"
             f"M  V30 COUNTS {n} 0 0 0 0\nM  V30 BEGIN ATOM\n{atoms}M  V30 END ATOM\nM  V30 END CTAB\nM  END\n$$$$\n")
    ok = io.write_sdf(tmp_path / "ok.sdf", [bonds.to_molecule(["O", "H", "H"], WATER).mol]).read_text()
    (tmp_path / "big.sdf").write_text(block + ok)
    mols, t = io.read_sdf(tmp_path / "big.sdf")
    assert t["valid"].tolist() == [False, True] and mols[0] is None
    assert f"SDF record of {n:,} atoms is above the limit" in t.loc[0, "reason"]


def test_a_smiles_file_without_smiles_says_so(tmp_path):
    path = tmp_path / "comments.smi"
    path.write_text("# generated by hand\n\n   # indented comment\n")
    mols, t = io.read_smiles(path)
    assert len(t) == 1 and mols == [None] and not t.loc[0, "valid"]
    assert t.loc[0, "reason"] == f"{path}: no SMILES lines (only comments and blank lines)"


def test_a_bare_property_name_is_one_property():
    mols, _ = io.parse_smiles(["c1ccccc1", "CCO"])
    t = properties.compute_properties(mols, "rings")
    assert list(t.columns) == ["rings"] and t["rings"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"unknown properties \['ring'\]"):
        properties.compute_properties(mols, "ring")


@pytest.mark.parametrize("margins, message", [
    ([-500, 5, 3], r"evaluation\.margins\[0\]: must be a finite number in \[0\.0, 50\.0\]; got -500"),
    ([10, 5], r"evaluation\.margins: expected 3 numbers \(single, double, triple\), got 2"),
    ([10, "five", 3], r"evaluation\.margins\[1\]: expected a number, got 'five'"),
    ([10, 5, 300], r"evaluation\.margins\[2\]: must be a finite number in \[0\.0, 50\.0\]; got 300"),
    ("10 5 3", r"evaluation\.margins: expected a list of numbers")])
def test_non_physical_margins_are_refused_naming_the_field(margins, message):
    with pytest.raises(WorkflowError, match=message):
        parse_evaluation({"margins": margins})
    assert parse_evaluation({"margins": [0, "5", 3.5]})["margins"] == [0.0, 5.0, 3.5]


def test_negative_margins_are_refused_by_the_functions_too():
    with pytest.raises(ValueError, match=r"margins: each must be a number in \[0, 50\] pm; got \[-500"):
        bonds.to_molecule(["O", "H", "H"], WATER, margins=(-500, 5, 3))
    with pytest.raises(ValueError, match=r"margins: expected 3 numbers"):
        metrics.molecule_table(np.zeros((1, 3), int), np.zeros((1, 3, 3)), HEAVY, margins=(10, 5))


@pytest.fixture
def bare_install(monkeypatch, tmp_path):
    """An install without the qm9 and fcd extras (and no cached QM9 parse)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in
                        ("qm9pack", "fcd_torch") else real(name, *a))
    monkeypatch.setenv("MOLFUSE_CACHE", str(tmp_path / "no_cache"))


def test_settings_this_install_cannot_honour_are_refused_at_read(bare_install):
    with pytest.raises(WorkflowError, match=r"evaluation\.reference_source: the full QM9 set needs the qm9pack wheel.*"
                                            r"pip install 'molfuse\[qm9\]'.*or use small"):
        parse_evaluation({"reference_source": "qm9"})
    with pytest.raises(WorkflowError, match=r"evaluation\.fcd: the Fréchet ChemNet distance needs fcd_torch: "
                                            r"pip install 'molfuse\[fcd\]'; or fcd: false"):
        parse_evaluation({"fcd": True})
    from molfuse.modalities.molecules.reports import REFERENCE

    with pytest.raises(WorkflowError, match=r"reports\[0\]\.source: the full QM9 set needs the qm9pack wheel"):
        REFERENCE.check({"n": 10, "hydrogens": "implicit", "source": "qm9"}, "reports[0]")
    s = parse_evaluation({"reference_source": "auto", "fcd": False})  # auto and small always work
    assert s["reference_source"] == "auto" and data.resolve_source("auto") == "small"


def test_installed_extras_are_accepted(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("qm9pack", "fcd_torch")
                        else real(name, *a))
    s = parse_evaluation({"reference_source": "qm9", "fcd": True})
    assert s["reference_source"] == "qm9" and s["fcd"] is True and data.resolve_source("auto") == "qm9"
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setenv("MOLFUSE_CACHE", str(tmp_path))
    from molfuse.modalities.molecules import qm9

    qm9._cache_path().write_bytes(b"")  # a cached parse of the full set is enough to read it
    assert qm9.full_available() and data.resolve_source("auto") == "qm9"


@pytest.mark.parametrize("atom_type", [-2, 0.7, 4])
def test_encode_refuses_atom_types_that_are_not_indices(atom_type):
    types = np.array([[0, atom_type, -1]], dtype=float)
    with pytest.raises(ValueError, match=rf"types: atom type {atom_type:g} at \[0, 1\] is not -1 \(padding\) or an "
                                         r"index 0\.\.3"):
        data.encode(types, np.zeros((1, 3, 3)), 4)
    x, mask = data.encode(np.array([[0.0, 3.0, -1.0]]), np.zeros((1, 3, 3)), 4)  # whole-number floats are indices
    assert mask.tolist() == [[True, True, False]] and x.shape == (1, 3, 7)
