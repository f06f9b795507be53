"""Molecule metrics as pure functions: one row per molecule, and the summary a chemist reads.

- :func:`molecule_table`: from generated (or real) 3-D atoms to molecules: ``valid``,
  ``reason``, ``smiles`` (largest fragment), ``n_atoms``, ``fragments`` and, with explicit
  hydrogens, ``atom_stability`` (share of atoms with their valence) and ``mol_stable``.
- :func:`summary`: validity, uniqueness (distinct valid SMILES / valid), novelty (distinct
  valid SMILES not in the training set / distinct valid), atom and molecule stability.
- :func:`internal_diversity`: 1 − mean pairwise Tanimoto similarity of Morgan fingerprints
  (radius 2, 2048 bits) of the distinct valid molecules.
- :func:`fcd`: Fréchet ChemNet distance through ``fcd_torch`` when installed (else NaN).

Every setting that changes a number (bond rule and margins, fingerprint) is returned with
the numbers by :func:`settings`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .bonds import stability, to_molecule
from .elements import MARGINS

__all__ = ["molecule_table", "summary", "internal_diversity", "fcd", "settings", "FINGERPRINT"]

FINGERPRINT = {"kind": "Morgan", "radius": 2, "bits": 2048}


def molecule_table(types: np.ndarray, positions: np.ndarray, alphabet: Sequence[str], method: str = "edm",
                   margins: Sequence[float] = MARGINS) -> tuple[pd.DataFrame, list]:
    """Per-molecule rows and RDKit molecules (None if invalid) of padded atoms.

    Args:
        types: (n, N) int indices into ``alphabet`` (-1 = padding).
        positions: (n, N, 3) Å.
        alphabet: e.g. ``("C", "N", "O", "F")`` (implicit H) or ``("H", "C", "N", "O", "F")``.
        method: ``"edm"`` (distance rule) or ``"rdkit"`` (DetermineBonds, explicit H only).
    """
    from rdkit import RDLogger

    explicit = "H" in alphabet
    rows, mols = [], []
    RDLogger.DisableLog("rdApp.*")  # each failure is a row's reason, not a line on stderr
    for i in range(len(types)):
        real = np.flatnonzero(np.asarray(types[i]) >= 0)
        symbols = [alphabet[int(k)] for k in np.asarray(types[i])[real]]
        res = to_molecule(symbols, np.asarray(positions[i])[real], method, margins)
        row = {"valid": res.reason == "", "reason": res.reason, "smiles": res.smiles, "n_atoms": len(symbols),
               "fragments": res.fragments}
        if explicit and res.orders is not None:
            n_ok, ok = stability(res.orders, symbols)
            row.update(atom_stability=n_ok / max(len(symbols), 1), mol_stable=ok)
        elif explicit:
            row.update(atom_stability=math.nan, mol_stable=False)
        rows.append(row)
        mols.append(res.mol)
    RDLogger.EnableLog("rdApp.*")
    return pd.DataFrame(rows), mols


def summary(table: pd.DataFrame, train_smiles: Iterable[str] | None = None) -> dict:
    """Validity, uniqueness, novelty (vs ``train_smiles``, canonical non-isomeric), stability."""
    n = len(table)
    valid = table.loc[table["valid"].astype(bool), "smiles"]
    distinct = set(valid)
    out = {"validity": len(valid) / n if n else math.nan,
           "uniqueness": len(distinct) / len(valid) if len(valid) else math.nan,
           "valid_and_unique": len(distinct) / n if n else math.nan,
           "connected": float((table["fragments"] == 1).sum() / n) if n else math.nan}
    if train_smiles is not None:
        known = set(train_smiles)
        out["novelty"] = len(distinct - known) / len(distinct) if distinct else math.nan
    if "atom_stability" in table:
        atoms = (table["atom_stability"].fillna(0) * table["n_atoms"]).sum()
        out.update(atom_stability=float(atoms / max(table["n_atoms"].sum(), 1)),
                   mol_stability=float(table["mol_stable"].astype(bool).mean()))
    return out


def _fingerprints(smiles: Iterable[str]) -> list:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=FINGERPRINT["radius"], fpSize=FINGERPRINT["bits"])
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    return [gen.GetFingerprint(m) for m in mols if m is not None]


def internal_diversity(smiles: Iterable[str]) -> float:
    """1 − mean pairwise Tanimoto similarity over distinct molecules (NaN below 2)."""
    from rdkit import DataStructs

    fps = _fingerprints(sorted(set(s for s in smiles if s)))
    if len(fps) < 2:
        return math.nan
    sims = [s for i in range(1, len(fps)) for s in DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])]
    return float(1.0 - np.mean(sims))


def fcd(smiles: Sequence[str], reference: Sequence[str], device: str = "cpu") -> float:
    """Fréchet ChemNet distance (``fcd_torch``, optional) between valid generated and reference
    SMILES; NaN when fcd_torch is not installed or either set has fewer than 2 molecules."""
    try:
        from fcd_torch import FCD
    except ImportError:
        return math.nan
    a, b = [s for s in smiles if s], tuple(s for s in reference if s)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(FCD(device=device, n_jobs=1)(gen=a, pref=_reference_stats(b, device)))


@lru_cache(maxsize=4)
def _reference_stats(reference: tuple[str, ...], device: str) -> dict:
    """ChemNet activation mean and covariance of a reference set, computed once per process
    (the 13,083 test molecules take minutes on a CPU; every method of a run shares them)."""
    from fcd_torch import FCD

    return FCD(device=device, n_jobs=1).precalc(list(reference))


def settings(method: str, margins: Sequence[float], alphabet: Sequence[str], n: int) -> dict[str, Any]:
    """The settings that change the numbers, to store beside them."""
    return {"bonds": method, "margins_pm": list(margins), "alphabet": list(alphabet),
            "hydrogens": "explicit" if "H" in alphabet else "implicit", "fingerprint": FINGERPRINT, "n": n,
            "validity": "the whole molecule sanitises in RDKit; SMILES of the largest fragment (EDM protocol)"}
