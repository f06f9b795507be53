"""Molecules molfuse did not draw, judged like its own (``molfuse evaluate``).

An SDF file (``.sdf``, ``.sd``; 2-D or 3-D, explicit hydrogens or not) or a SMILES file
(``.smi``, ``.smiles``, ``.txt``: one per line, first field) from any generator goes through the
same :func:`~.evaluate.judge_table` as a workflow's samples, with the same ``evaluation:``
settings: validity, uniqueness, novelty against the reference training split, one-fragment
share, diversity, property means / hit rates, FCD. The bonds are the file's own (the SDF bond
block, the SMILES); a record RDKit cannot parse or sanitise is a row with RDKit's reason, an
unreadable file one row naming it. As for samples, properties and SMILES are those of each
molecule's largest fragment.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...base.checks import fail
from ...plugins import Evaluated, FileJudge
from .evaluate import (BASE_NOTES, grid_png, judge_table, properties_png, received, reference_caveat, references,
                       source_info)
from .graphs import geometry_agrees
from .metrics import FINGERPRINT
from .properties import compute_properties
from .schema import DEFAULTS

__all__ = ["FILES", "judge_file", "SDF", "SMILES"]

SDF, SMILES = (".sdf", ".sd"), (".smi", ".smiles", ".txt")


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "sdf" if suffix in SDF else "smiles" if suffix in SMILES else None


def _accepts(path: Path) -> bool:
    return not Path(path).is_dir() and _kind(Path(path)) is not None


def _check(s: Mapping[str, Any]) -> None:
    """Settings that only mean something for molfuse's own samples are refused, naming the field."""
    if s["valence_guard"]:
        fail("evaluation.valence_guard", "applies to molecule-graph samples drawn by molfuse; a file's bonds are "
                                         "judged as they are")
    if s["bonds"] != DEFAULTS["bonds"]:
        fail("evaluation.bonds", "sets how molfuse reads bonds from its own 3-D samples; a file's bonds are its own "
                                 "(SDF bond block or SMILES)")


def _rows(mols: list, read: pd.DataFrame, margins: Sequence[float]) -> pd.DataFrame:
    """Per molecule: valid, reason, smiles (largest fragment, canonical, no stereo), n_atoms (heavy),
    fragments; for a 3-D record, ``geometry_agrees`` / ``connectivity_agrees`` (does the EDM
    distance rule with ``margins`` recover its Kekulé bond orders / bonded pairs from its own
    coordinates; NaN for 2-D records and elements the rule does not know)."""
    from rdkit import Chem

    rows = []
    for mol, (_, r) in zip(mols, read.iterrows()):
        if mol is None:
            rows.append({"index": int(r["index"]), "valid": False, "reason": r["reason"], "smiles": "", "n_atoms": 0,
                         "fragments": 0, "geometry_agrees": math.nan, "connectivity_agrees": math.nan})
            continue
        heavy = Chem.RemoveHs(mol, sanitize=False)
        frags = Chem.GetMolFrags(heavy, asMols=True, sanitizeFrags=False)
        largest = max(frags, key=lambda m: m.GetNumAtoms())
        geometry, connectivity = _geometry(mol, margins)
        rows.append({"index": int(r["index"]), "valid": True, "reason": "",
                     "smiles": Chem.MolToSmiles(largest, isomericSmiles=False), "n_atoms": heavy.GetNumAtoms(),
                     "fragments": len(frags), "geometry_agrees": geometry, "connectivity_agrees": connectivity})
    return pd.DataFrame(rows, columns=["index", "valid", "reason", "smiles", "n_atoms", "fragments", "geometry_agrees",
                                       "connectivity_agrees"])


def _geometry(mol: Any, margins: Sequence[float]) -> tuple[float, float]:
    """(geometry, connectivity agreement) of a molecule with 3-D coordinates, as floats; NaN when it
    has none, or holds an element or a bond order the EDM rule does not know."""
    from rdkit import Chem

    if not mol.GetNumConformers() or not mol.GetConformer().Is3D():
        return math.nan, math.nan
    kek = Chem.Mol(mol)
    try:
        Chem.Kekulize(kek, clearAromaticFlags=True)
        orders = np.zeros((kek.GetNumAtoms(),) * 2)
        for b in kek.GetBonds():
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            orders[i, j] = orders[j, i] = b.GetBondTypeAsDouble()
        symbols = [a.GetSymbol() for a in kek.GetAtoms()]
        agree = geometry_agrees(symbols, kek.GetConformer().GetPositions(), orders, margins)
    except (ValueError, KeyError, Chem.rdchem.KekulizeException):
        return math.nan, math.nan
    return float(agree[0]), float(agree[1])


def judge_file(path: str | Path, settings: Mapping[str, Any], folder: Path, name: str) -> Evaluated:
    """One SDF or SMILES file judged under ``settings`` (the molecule evaluator's, parsed);
    draws ``samples/<name>.png`` (up to 24 valid molecules) under ``folder``."""
    from .io import read_sdf, read_smiles

    _check(settings)
    path = Path(path)
    kind = _kind(path)
    if kind is None:
        fail(f"input {name}", f"{path}: not an SDF ({', '.join(SDF)}) or SMILES ({', '.join(SMILES)}) file")
    mols, read = read_sdf(path) if kind == "sdf" else read_smiles(path)
    table, row = judge_table(_rows(mols, read, settings["margins"]), settings)
    pictures = [grid_png(folder, f"samples/{name}.png", table.loc[table["valid"], "smiles"].head(24))]
    return Evaluated(table, row, pictures)


def _figure(settings: Mapping[str, Any], folder: Path, tables: Mapping[str, pd.DataFrame]) -> list[str]:
    props = {name: compute_properties(received(t["smiles"], t["valid"]), settings["properties"])
             for name, t in tables.items()}
    return properties_png(folder, settings, props)


def _provenance(settings: Mapping[str, Any]) -> dict:
    return {"settings": {"bonds": "the file's own (SDF bond block or SMILES), sanitised by RDKit",
                         "fingerprint": FINGERPRINT, "properties_of": "the largest fragment of each molecule"},
            "reference_source": source_info(settings), **references(settings)}


def _caveats(settings: Mapping[str, Any]) -> list[str]:
    return [reference_caveat(settings),
            "Bonds are the file's own (the SDF bond block or the SMILES): a molecule is valid when RDKit parses and "
            "sanitises it; SMILES, properties and hits are those of its largest fragment. `geometry_agrees` / "
            f"`connectivity_agrees` (3-D SDF records only): share of valid molecules whose Kekulé bond orders / bonded "
            f"pairs the EDM distance rule (margins {list(settings['margins'])} pm) recovers from their coordinates."]


FILES = FileJudge(
    kinds=tuple(f"*{s}" for s in (*SDF, *SMILES)), accepts=_accepts, judge=judge_file, figure=_figure,
    provenance=_provenance, caveats=_caveats, notes=BASE_NOTES + ".",
    metric_columns=("validity", "uniqueness", "valid_and_unique", "novelty", "connected", "geometry_agrees",
                    "connectivity_agrees", "diversity", "joint_hit",
                    "joint_hits_distinct", "fcd"),
    sample_columns=("smiles", "n_atoms", "fragments", "geometry_agrees", "connectivity_agrees"))
