"""Molecules in and out through RDKit: SDF (3-D) and SMILES. One bad item is one row with a reason.

Readers return ``(mols, table)``: the RDKit molecules (None where unreadable) and a DataFrame
with one row per record (``index, valid, reason, smiles, n_heavy``); a missing, unreadable or
empty file (no records, or only comments) is one row whose reason names the file. A SMILES or
SDF record of more than :data:`~.limits.MAX_INPUT_ATOMS` atoms (counted on the text) is a row
with that reason and never reaches RDKit. Writers write atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ...base.io import atomic_write, write_text
from .limits import sdf_atoms, smiles_atoms, too_many

__all__ = ["read_sdf", "read_smiles", "parse_smiles", "write_sdf", "write_smiles"]


def _row(i: int, mol: Any, reason: str) -> dict:
    from rdkit import Chem

    ok = mol is not None
    return {"index": i, "valid": ok, "reason": "" if ok else reason,
            "smiles": Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False), isomericSmiles=False) if ok else "",
            "n_heavy": mol.GetNumHeavyAtoms() if ok else 0}


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return f"{path}: no such file"
    if path.is_dir():
        return f"{path}: is a folder"
    if path.stat().st_size == 0:
        return f"{path}: empty file"
    return None


def _records(text: str) -> list[str]:
    """The SDF records of a file's text: blocks ended by a ``$$$$`` line (each parsed on its own,
    so one malformed record cannot swallow the next)."""
    blocks, current = [], []
    for line in text.splitlines(keepends=True):
        if line.strip() == "$$$$":
            blocks.append("".join(current))
            current = []
        else:
            current.append(line)
    if "".join(current).strip():
        blocks.append("".join(current))
    return blocks


def read_sdf(path: str | Path, remove_hs: bool = False) -> tuple[list, pd.DataFrame]:
    """Every record of an SDF file (3-D coordinates kept); a record RDKit cannot parse or
    sanitise is a row with RDKit's reason."""
    from rdkit import Chem, RDLogger

    path = Path(path)
    problem = _file_problem(path)
    if problem:
        return [None], pd.DataFrame([{"index": 0, "valid": False, "reason": problem, "smiles": "", "n_heavy": 0}])
    mols, rows = [], []
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, block in enumerate(_records(path.read_text(errors="replace"))):
            reason = too_many(sdf_atoms(block) or 0, "SDF record")
            if reason:
                mols.append(None)
                rows.append(_row(i, None, reason))
                continue
            mol, reason = Chem.MolFromMolBlock(block, sanitize=False, removeHs=remove_hs), "unparsable record"
            if mol is not None and mol.GetNumAtoms() == 0:
                mol, reason = None, "empty record"
            if mol is not None:
                try:
                    Chem.SanitizeMol(mol)
                except Exception as e:  # noqa: BLE001 - RDKit raises many kinds
                    mol, reason = None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}"
            mols.append(mol)
            rows.append(_row(i, mol, reason))
    finally:
        RDLogger.EnableLog("rdApp.*")
    if not rows:
        return [None], pd.DataFrame([{"index": 0, "valid": False, "reason": f"{path}: no SDF records",
                                      "smiles": "", "n_heavy": 0}])
    return mols, pd.DataFrame(rows)


def read_smiles(path: str | Path) -> tuple[list, pd.DataFrame]:
    """SMILES from a file (one per line, first whitespace-separated field; ``#`` comments and
    blank lines skipped); an unparsable one is a row with the reason, a file without any SMILES
    one row saying so."""
    path = Path(path)
    problem = _file_problem(path)
    lines = [] if problem else [ln.split()[0] for ln in path.read_text(errors="replace").splitlines()
                                if ln.strip() and not ln.lstrip().startswith("#")]
    if not problem and not lines:
        problem = f"{path}: no SMILES lines (only comments and blank lines)"
    if problem:
        return [None], pd.DataFrame([{"index": 0, "valid": False, "reason": problem, "smiles": "", "n_heavy": 0}])
    return parse_smiles(lines)


def parse_smiles(strings: Sequence[str]) -> tuple[list, pd.DataFrame]:
    """RDKit molecules from SMILES strings; an unparsable one, or one of more than
    :data:`~.limits.MAX_INPUT_ATOMS` atoms (counted on the text, before RDKit), is None and a
    row with the reason."""
    from rdkit import Chem, RDLogger

    mols, rows = [], []
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(strings):
            if smi == "*":  # what write_smiles writes for an invalid molecule
                mols.append(None)
                rows.append(_row(i, None, "invalid molecule (written as *)"))
                continue
            big = too_many(smiles_atoms(smi), "SMILES") if isinstance(smi, str) else ""
            mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) and smi and not big else None
            mols.append(mol)
            rows.append(_row(i, mol, big or f"unparsable SMILES {str(smi)[:80]!r}"))
    finally:
        RDLogger.EnableLog("rdApp.*")
    return mols, pd.DataFrame(rows, columns=["index", "valid", "reason", "smiles", "n_heavy"])


def write_sdf(path: str | Path, mols: Sequence[Any], names: Sequence[str] | None = None,
              properties: pd.DataFrame | None = None) -> Path:
    """An SDF with one record per molecule (None becomes an empty record named with its index,
    so record numbers match sample ids); ``properties`` columns become SD fields."""
    from rdkit import Chem

    def write(fh: Any) -> None:
        writer = Chem.SDWriter(fh)
        for i, mol in enumerate(mols):
            m = Chem.Mol(mol) if mol is not None else Chem.Mol()
            m.SetProp("_Name", names[i] if names is not None else str(i))
            if properties is not None:
                for col, val in properties.iloc[i].items():
                    m.SetProp(str(col), str(val))
            writer.write(m)
        writer.close()

    return atomic_write(Path(path), write, text=True)


def write_smiles(path: str | Path, smiles: Sequence[str], names: Sequence[str] | None = None) -> Path:
    """``<smiles> <name>`` per line (an empty SMILES for an invalid molecule is written as ``*``)."""
    lines = [f"{s or '*'} {names[i] if names is not None else i}" for i, s in enumerate(smiles)]
    return write_text(Path(path), "\n".join(lines) + "\n")
