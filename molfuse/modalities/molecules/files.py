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

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ...base.checks import fail
from ...plugins import Evaluated, FileJudge
from .evaluate import (BASE_NOTES, grid_png, judge_table, properties_png, received, reference_caveat, references,
                       source_info)
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
    if s["bonds"] != DEFAULTS["bonds"] or list(s["margins"]) != list(DEFAULTS["margins"]):
        fail("evaluation.bonds", "bonds and margins set how molfuse reads bonds from its own 3-D samples; a file's "
                                 "bonds are its own (SDF bond block or SMILES)")


def _rows(mols: list, read: pd.DataFrame) -> pd.DataFrame:
    """Per molecule: valid, reason, smiles (largest fragment, canonical, no stereo), n_atoms (heavy), fragments."""
    from rdkit import Chem

    rows = []
    for mol, (_, r) in zip(mols, read.iterrows()):
        if mol is None:
            rows.append({"index": int(r["index"]), "valid": False, "reason": r["reason"], "smiles": "", "n_atoms": 0,
                         "fragments": 0})
            continue
        heavy = Chem.RemoveHs(mol, sanitize=False)
        frags = Chem.GetMolFrags(heavy, asMols=True, sanitizeFrags=False)
        largest = max(frags, key=lambda m: m.GetNumAtoms())
        rows.append({"index": int(r["index"]), "valid": True, "reason": "",
                     "smiles": Chem.MolToSmiles(largest, isomericSmiles=False), "n_atoms": heavy.GetNumAtoms(),
                     "fragments": len(frags)})
    return pd.DataFrame(rows, columns=["index", "valid", "reason", "smiles", "n_atoms", "fragments"])


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
    table, row = judge_table(_rows(mols, read), settings)
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
            "sanitises it; SMILES, properties and hits are those of its largest fragment."]


FILES = FileJudge(
    kinds=tuple(f"*{s}" for s in (*SDF, *SMILES)), accepts=_accepts, judge=judge_file, figure=_figure,
    provenance=_provenance, caveats=_caveats, notes=BASE_NOTES + ".",
    metric_columns=("validity", "uniqueness", "valid_and_unique", "novelty", "connected", "diversity", "joint_hit",
                    "joint_hits_distinct", "fcd"),
    sample_columns=("smiles", "n_atoms", "fragments"))
