"""Molecule IO, bond inference and metrics on known inputs (RDKit; no network, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("rdkit")

from molfuse.modalities.molecules import bonds, io, metrics, properties  # noqa: E402
from molfuse.modalities.molecules.elements import HEAVY, WITH_H  # noqa: E402
from molfuse.modalities.molecules.qm9 import load_small  # noqa: E402
from molfuse.modalities.molecules.validation import bond_inference_table, canonical  # noqa: E402


def _embed(smiles: str, seed: int = 0):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    AllChem.MMFFOptimizeMolecule(mol)
    sym = [a.GetSymbol() for a in mol.GetAtoms()]
    return sym, mol.GetConformer().GetPositions()


@pytest.mark.parametrize("smiles", ["CCO", "C#N", "C=CC=O", "C1CCOC1", "OC(F)C#C", "CC(=O)N"])
def test_bond_rule_recovers_known_molecules(smiles):
    sym, pos = _embed(smiles)
    full = bonds.to_molecule(sym, pos)
    assert full.reason == "" and full.smiles == canonical(smiles)
    n_ok, stable = bonds.stability(full.orders, sym)
    assert stable and n_ok == len(sym)  # explicit H: every atom has its valence
    heavy = [i for i, s in enumerate(sym) if s != "H"]
    implicit = bonds.to_molecule([sym[i] for i in heavy], pos[heavy])
    assert implicit.reason == "" and implicit.smiles == canonical(smiles)  # implicit H from open valences


def test_aromatic_rings_sit_on_the_single_double_border():
    # 1.39 Å aromatic C-C is the double-bond threshold (134 + 5 pm): the distance rule may
    # give a non-aromatic tautomer. A known limit of the EDM rule, kept visible here.
    sym, pos = _embed("c1ccncc1")
    res = bonds.to_molecule(sym, pos)
    assert res.reason == "" and res.smiles in (canonical("c1ccncc1"), canonical("C1=CNC=CC1"))


def test_bond_orders_follow_the_distance_table():
    # C-C at 1.54 Å single, 1.34 double, 1.20 triple; 1.70 none (single length 154 pm + 10 margin)
    for d, order in ((1.54, 1), (1.34, 2), (1.20, 3), (1.70, 0), (1.635, 1), (1.645, 0)):
        assert bonds.bond_orders(np.array([[0, 0, 0], [d, 0, 0]]), ["C", "C"])[0, 1] == order, d
    with pytest.raises(ValueError, match="unknown elements"):
        bonds.bond_orders(np.zeros((2, 3)), ["C", "Xe"])


def test_bad_atoms_are_reasons_not_exceptions():
    assert bonds.to_molecule([], np.zeros((0, 3))).reason == "no atoms"
    assert "non-finite" in bonds.to_molecule(["C", "C"], np.array([[0, 0, 0], [np.nan, 0, 0]])).reason
    over = bonds.to_molecule(["F", "C", "F"], np.array([[0, 0, 0], [1.2, 0, 0], [2.4, 0, 0]]) * 0 +
                             np.array([[-1.3, 0, 0], [0, 0, 0], [1.3, 0, 0]]))
    assert over.reason == "" or "valence" in over.reason.lower() or "Error" in over.reason
    bad = bonds.to_molecule(["O", "O", "O", "O"], np.array([[0, 0, 0], [1.2, 0, 0], [0, 1.2, 0], [-1.2, 0, 0]]))
    assert not bad.reason == "" and bad.mol is None  # a four-bonded oxygen


def test_real_held_out_molecules_score_near_the_anchor():
    test = load_small()["test"]
    t = bond_inference_table(test).set_index(["hydrogens", "bonds"])
    edm = t.loc[("explicit", "edm")]
    # EDM paper, real QM9: atom stability 99.0 %, molecule stability 95.2 %, validity 97.7 %
    assert edm["atom_stability"] > 0.985 and edm["mol_stability"] > 0.93 and edm["validity"] > 0.96, t
    assert t.loc[("implicit", "edm"), "validity"] > 0.96 and t.loc[("implicit", "edm"), "smiles_recovered"] > 0.93


def test_molecule_table_and_summary_on_known_inputs():
    train = load_small()["train"]
    types, pos, _ = train.heavy()
    table, mols = metrics.molecule_table(types[:50], pos[:50], HEAVY)
    assert len(table) == 50 and table["valid"].mean() > 0.9
    dup = pd.concat([table, table], ignore_index=True)  # every molecule twice
    s = metrics.summary(dup, train_smiles=table["smiles"])
    assert s["uniqueness"] == pytest.approx(table.loc[table.valid, "smiles"].nunique() / (2 * table.valid.sum()))
    assert s["novelty"] == 0.0  # all of them are "training" molecules
    assert metrics.summary(table, train_smiles=["CC"])["novelty"] > 0.9
    th, ph = train.types[:20], train.positions[:20]
    explicit, _ = metrics.molecule_table(th, ph, WITH_H)
    assert {"atom_stability", "mol_stable"} <= set(explicit) and explicit["mol_stable"].mean() > 0.8


def test_internal_diversity_known_values():
    assert np.isnan(metrics.internal_diversity(["CCO"]))
    assert metrics.internal_diversity(["CCO", "CCO"]) != metrics.internal_diversity(["CCO", "c1ccccc1"])
    same_ish = metrics.internal_diversity(["CCCCO", "CCCCCO"])
    far = metrics.internal_diversity(["CCCCO", "c1ccncc1"])
    assert 0 < same_ish < far <= 1


def test_properties_are_exact_rdkit_values():
    mols, _ = io.parse_smiles(["c1ccccc1", "CCO", "not a smiles"])
    t = properties.compute_properties(mols, ["rings", "heteroatoms", "heavy_atoms"])
    assert t.iloc[0].tolist() == [1.0, 0.0, 6.0] and t.iloc[1].tolist() == [0.0, 1.0, 3.0]
    assert t.iloc[2].isna().all()
    assert properties.hit_rate(np.array([1.0, 2.0, np.nan]), 2.0, 0.0) == pytest.approx(1 / 3)


def test_sdf_and_smiles_round_trip_and_bad_files(tmp_path):
    sym, pos = _embed("CC(=O)O")
    mol = bonds.to_molecule(sym, pos).mol
    path = io.write_sdf(tmp_path / "a.sdf", [mol, None], ["acid", "bad"])
    mols, table = io.read_sdf(path)
    assert table["valid"].tolist() == [True, False] and table.loc[0, "smiles"] == "CC(=O)O"
    assert table.loc[1, "reason"] == "empty record"
    assert mols[0].GetConformer().Is3D()
    smi = io.write_smiles(tmp_path / "a.smi", ["CCO", "", "C1CC"], ["x", "y", "z"])
    _, t = io.read_smiles(smi)
    assert t["valid"].tolist() == [True, False, False] and "unparsable" in t.loc[2, "reason"]
    for bad, why in ((tmp_path / "missing.sdf", "no such file"), (tmp_path, "is a folder")):
        _, t = io.read_sdf(bad)
        assert len(t) == 1 and why in t.loc[0, "reason"]
    (tmp_path / "empty.sdf").write_text("")
    assert "empty file" in io.read_sdf(tmp_path / "empty.sdf")[1].loc[0, "reason"]
    (tmp_path / "junk.sdf").write_text("this is\nnot an\nSDF\n$$$$\n" + (tmp_path / "a.sdf").read_text())
    _, t = io.read_sdf(tmp_path / "junk.sdf")
    assert not t.loc[0, "valid"] and t["valid"].sum() == 1  # the bad record is a row; the good one is read
