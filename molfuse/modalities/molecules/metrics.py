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

from .bonds import MoleculeResult, stability, to_molecule
from .elements import MARGINS, check_margins
from .limits import smiles_atoms, too_many

__all__ = ["molecule_table", "summary", "internal_diversity", "fcd", "settings", "FINGERPRINT"]

FINGERPRINT = {"kind": "Morgan", "radius": 2, "bits": 2048}


def molecule_table(types: np.ndarray, positions: np.ndarray, alphabet: Sequence[str], method: str = "edm",
                   margins: Sequence[float] = MARGINS) -> tuple[pd.DataFrame, list]:
    """Per-molecule rows and RDKit molecules (None if invalid) of padded atoms.

    Args:
        types: (n, N) indices into ``alphabet`` (-1 = padding); a row holding anything else
            (-2, 0.7, NaN, an index past the alphabet) is an invalid row with that reason.
        positions: (n, N, 3) Å.
        alphabet: e.g. ``("C", "N", "O", "F")`` (implicit H) or ``("H", "C", "N", "O", "F")``.
        method: ``"edm"`` (distance rule) or ``"rdkit"`` (DetermineBonds, explicit H only).

    Raises:
        ValueError: ``types`` / ``positions`` of the wrong shape, margins out of range.
    """
    from rdkit import RDLogger

    types, positions = _atom_arrays(types, positions)
    margins = check_margins(margins)
    explicit = "H" in alphabet
    rows, mols = [], []
    RDLogger.DisableLog("rdApp.*")  # each failure is a row's reason, not a line on stderr
    try:
        for i in range(len(types)):
            real = np.flatnonzero(types[i] >= 0)
            problem = _types_problem(types[i], alphabet)
            symbols = [] if problem else [alphabet[int(k)] for k in types[i][real]]
            res = MoleculeResult(None, "", problem, 0, None) if problem else \
                to_molecule(symbols, positions[i][real], method, margins)
            row = {"valid": res.reason == "", "reason": res.reason, "smiles": res.smiles, "n_atoms": len(real),
                   "fragments": res.fragments}
            if explicit and res.orders is not None:
                n_ok, ok = stability(res.orders, symbols)
                row.update(atom_stability=n_ok / max(len(symbols), 1), mol_stable=ok)
            elif explicit:
                row.update(atom_stability=math.nan, mol_stable=False)
            rows.append(row)
            mols.append(res.mol)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return pd.DataFrame(rows), mols


def _atom_arrays(types: Any, positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """(types (n, N) float, positions (n, N, 3) float), or a ValueError naming the argument."""
    try:
        t = np.asarray(types, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"types: expected an (n, N) array of atom-type indices; got {type(types).__name__}") from None
    if t.ndim != 2:
        raise ValueError(f"types: expected an (n, N) array of atom-type indices (-1 = padding); got shape {t.shape}")
    try:
        p = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"positions: expected an (n, N, 3) array of numbers in Å; got {type(positions).__name__}") \
            from None
    if p.shape != (*t.shape, 3):
        raise ValueError(f"positions: expected shape (n, N, 3) = {(*t.shape, 3)} to match types {t.shape}; "
                         f"got {p.shape}")
    return t, p


def _types_problem(row: np.ndarray, alphabet: Sequence[str]) -> str:
    """Why a row of atom types is not -1 padding and indices into ``alphabet`` ("" if it is)."""
    ok = np.isfinite(row) & (row == np.round(row)) & (row >= -1) & (row < len(alphabet))
    if ok.all():
        return ""
    j = int(np.flatnonzero(~ok)[0])
    return (f"atom type {row[j]:g} at position {j} is not -1 (padding) or an index 0..{len(alphabet) - 1} into "
            f"{tuple(alphabet)}")


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


def _sized(smiles: Iterable[str], name: str = "smiles") -> list[str]:
    """The SMILES as a list, or a ValueError naming the first above :data:`~.limits.MAX_INPUT_ATOMS`
    (checked on the text, before RDKit sees it)."""
    out = list(smiles)
    for i, s in enumerate(out):
        problem = too_many(smiles_atoms(s), "SMILES") if isinstance(s, str) else ""
        if problem:
            raise ValueError(f"{name}[{i}]: {problem}")
    return out


def internal_diversity(smiles: Iterable[str]) -> float:
    """1 − mean pairwise Tanimoto similarity over distinct molecules (NaN below 2); a SMILES RDKit
    cannot parse is left out.

    Raises:
        ValueError: a SMILES of more than :data:`~.limits.MAX_INPUT_ATOMS` atoms.
    """
    from rdkit import DataStructs

    fps = _fingerprints(sorted(set(s for s in _sized(smiles) if s)))
    if len(fps) < 2:
        return math.nan
    sims = [s for i in range(1, len(fps)) for s in DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])]
    return float(1.0 - np.mean(sims))


def fcd(smiles: Sequence[str], reference: Sequence[str], device: str = "cpu") -> float:
    """Fréchet ChemNet distance (``fcd_torch``, optional) between valid generated and reference
    SMILES; NaN when fcd_torch is not installed or either set has fewer than 2 molecules (the
    workflow field ``evaluation.fcd`` is refused without fcd_torch, so a run never gets this NaN).

    Raises:
        ValueError: a SMILES of more than :data:`~.limits.MAX_INPUT_ATOMS` atoms in either set.
    """
    smiles, reference = _sized(smiles), _sized(reference, "reference")
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
