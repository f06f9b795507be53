"""The molecules modality's report ``reference``: real held-out molecules scored by the same
evaluator settings, so every method's row has the data's row beside it (and the EDM paper's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...base.checks import as_choice, as_int
from ...base.io import atomic_write
from ...base.tables import markdown_table
from ...plugins import Report
from .data import qm9_source, resolve_source
from .elements import HEAVY, MARGINS, WITH_H
from .evaluate import reference, reference_set
from .metrics import fcd, internal_diversity, molecule_table, summary
from .schema import check_reference_source

__all__ = ["REFERENCE", "EDM_ROWS", "reference_metrics", "fcd_floor"]

# Hoogeboom et al. 2022 (EDM), QM9 with explicit hydrogens, 10,000 samples
EDM_ROWS = pd.DataFrame([
    {"method": "EDM paper: data", "atom_stability": 0.990, "mol_stability": 0.952, "validity": 0.977,
     "valid_and_unique": 0.977},
    {"method": "EDM paper: EDM", "atom_stability": 0.987, "mol_stability": 0.820, "validity": 0.919,
     "valid_and_unique": 0.907}])


def _check(o: dict, path: str) -> dict:
    o["n"] = as_int(o["n"], f"{path}.n", 1)
    o["hydrogens"] = as_choice(o["hydrogens"], f"{path}.hydrogens", ("implicit", "explicit"))
    o["source"] = as_choice(o["source"], f"{path}.source", ("auto", "qm9", "small"))
    check_reference_source(o["source"], f"{path}.source")
    return o


def reference_metrics(n: int = 1000, hydrogens: str = "implicit", source: str = "auto", seed: int = 0) -> dict:
    """Validity, uniqueness, novelty (vs the training split), stability and diversity of ``n``
    real test molecules from their 3-D coordinates, with the evaluator's default bond rule."""
    test = qm9_source(source)["test"]
    idx = np.sort(np.random.default_rng(seed).choice(len(test), min(n, len(test)), replace=False))
    data = test.take(idx)
    types, pos = (data.heavy()[:2]) if hydrogens == "implicit" else (data.types, data.positions)
    table, _ = molecule_table(types, pos, HEAVY if hydrogens == "implicit" else WITH_H, "edm", MARGINS)
    row = summary(table, reference(source, "train"))
    row["diversity"] = internal_diversity(table.loc[table["valid"], "smiles"])
    name = "QM9" if resolve_source(source) == "qm9" else "qm9_small"
    return {"method": f"real {name} test ({len(data)}, {hydrogens} H)", "n": len(data), **row}


def fcd_floor(n: int, source: str, seed: int = 0) -> float:
    """FCD of ``n`` real training molecules to the test split (what a perfect generator would
    score at that sample size; NaN without fcd_torch)."""
    train = reference(source, "train")
    idx = np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False)
    return fcd([train[i] for i in idx], list(reference(source, "test")))


def _write(folder: Path, name: str, metrics: pd.DataFrame, o: dict) -> tuple[str, list[str]]:
    real = reference_metrics(o["n"], o["hydrogens"], o["source"])
    cols = ["validity", "uniqueness", "valid_and_unique", "novelty", "connected", "atom_stability", "mol_stability",
            "diversity", "fcd"]
    if "fcd" in metrics:  # the floor: as many real training molecules against the same test split
        real["fcd"] = fcd_floor(o["n"], o["source"])
    rows = pd.concat([metrics[["method", *[c for c in cols if c in metrics]]], pd.DataFrame([real]),
                      EDM_ROWS], ignore_index=True)
    rows = rows[["method", *[c for c in cols if c in rows]]]
    atomic_write(Path(folder) / "reference.csv", lambda fh: rows.to_csv(fh, index=False, float_format="%.6g"),
                 text=True)
    text = ["## Against real molecules", "", markdown_table(rows), "",
            _source_line(o["source"], int(real["n"])), "",
            "The real row scores held-out QM9 test molecules from their 3-D coordinates with the same bond rule. "
            "The EDM rows are the paper's (explicit hydrogens, 10,000 samples): with implicit hydrogens RDKit "
            "fills open valences, so validity is more lenient and stability is not defined."
            + (" FCD (to the test split, valid molecules only): the real row's is the floor, as many real "
               "training molecules against the same test split." if "fcd" in metrics else ""), ""]
    return "\n".join(text), []


def _source_line(source: str, n: int) -> str:
    """Which molecules the real row is (and its novelty is measured against); bold for a fallback."""
    line = (f"Real row (`source: {source}`): {n:,} molecules drawn from the {reference_set(source, 'test')}, "
            f"novelty against the {reference_set(source, 'train')}.")
    return f"**{line} The full QM9 set is not installed (pip install 'molfuse[qm9]').**" \
        if source == "auto" and resolve_source(source) == "small" else line


REFERENCE = Report(_write, {"n": 1000, "hydrogens": "implicit", "source": "auto"}, _check)
