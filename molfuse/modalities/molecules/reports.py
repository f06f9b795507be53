"""The molecules modality's report ``reference``: real held-out molecules scored by the same
evaluator settings, so every method's row has the data's row beside it (and the EDM paper's).
Point-cloud members get the real molecules' 3-D atoms judged with the distance rule; molecule-graph
members get the real molecules' bond-graph states (data kind ``qm9_graphs``) judged by the bonds in
the state, as their samples are; a run with both kinds gets both rows."""

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
from .graph_data import carries_bonds, encode, judge_states, normalisation_for
from .metrics import fcd, internal_diversity, molecule_table, summary
from .qm9_graphs import bond_graphs
from .schema import check_reference_source

__all__ = ["REFERENCE", "EDM_ROWS", "reference_metrics", "reference_graph_metrics", "fcd_floor"]

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


def reference_graph_metrics(n: int = 1000, source: str = "auto", seed: int = 0, margins=MARGINS) -> dict:
    """As :func:`reference_metrics` for molecule-graph members: ``n`` real test molecules drawn
    alike, those with a bond graph (:func:`~.qm9_graphs.bond_graphs`; the others are counted in
    ``n_without_graph``) encoded as graph states and judged by the bonds in the state, with
    ``geometry_agrees`` / ``connectivity_agrees`` (does the distance rule recover them)."""
    test = qm9_source(source)["test"]
    idx = np.sort(np.random.default_rng(seed).choice(len(test), min(n, len(test)), replace=False))
    graphs = bond_graphs(test.take(idx))
    norm = normalisation_for()
    x, mask = encode(graphs.types, graphs.positions, graphs.orders, len(norm["alphabet"]))
    table, _ = judge_states(x.numpy(), mask.numpy(), norm, margins)
    ok = table["valid"].to_numpy(bool)
    row = summary(table, reference(source, "train"))
    row["diversity"] = internal_diversity(table.loc[ok, "smiles"])
    for col in ("geometry_agrees", "connectivity_agrees"):
        row[col] = float(table.loc[ok, col].astype(float).mean()) if ok.any() else float("nan")
    name = "QM9" if resolve_source(source) == "qm9" else "qm9_small"
    return {"method": f"real {name} test bond graphs ({len(graphs)}, implicit H)", "n": len(graphs),
            "n_without_graph": len(idx) - len(graphs), **row}


def fcd_floor(n: int, source: str, seed: int = 0) -> float:
    """FCD of ``n`` real training molecules to the test split (what a perfect generator would
    score at that sample size; NaN without fcd_torch)."""
    train = reference(source, "train")
    idx = np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False)
    return fcd([train[i] for i in idx], list(reference(source, "test")))


def _kinds(ctx) -> set[str]:
    """The kinds of member in the run: ``"point_cloud"`` and / or ``"molecule_graph"`` (point clouds without a context)."""
    if ctx is None:
        return {"point_cloud"}
    norms = [getattr(m, "normalisation", None) or {} for m in ctx.models.values()]
    return {"molecule_graph" if carries_bonds(nm) else "point_cloud" for nm in norms} or {"point_cloud"}


def _real_rows(o: dict, kinds: set[str], margins) -> list[dict]:
    """The real rows for the kinds of member in the run (point clouds first)."""
    rows = [reference_metrics(o["n"], o["hydrogens"], o["source"])] if "point_cloud" in kinds else []
    if "molecule_graph" in kinds:
        rows.append(reference_graph_metrics(o["n"], o["source"], margins=margins))
    return rows


def _write(folder: Path, name: str, metrics: pd.DataFrame, o: dict, ctx=None, runs=None,
           modality=None) -> tuple[str, list[str]]:
    kinds = _kinds(ctx)
    margins = ctx.settings.get("margins", MARGINS) if ctx is not None else MARGINS
    reals = _real_rows(o, kinds, margins)
    cols = ["validity", "uniqueness", "valid_and_unique", "novelty", "connected", "geometry_agrees",
            "connectivity_agrees", "atom_stability", "mol_stability", "diversity", "fcd"]
    if "fcd" in metrics:  # the floor: as many real training molecules against the same test split
        floor = fcd_floor(o["n"], o["source"])
        for real in reals:
            real["fcd"] = floor
    rows = pd.concat([metrics[["method", *[c for c in cols if c in metrics]]], pd.DataFrame(reals),
                      EDM_ROWS], ignore_index=True)
    rows = rows[["method", *[c for c in cols if c in rows]]]
    atomic_write(Path(folder) / "reference.csv", lambda fh: rows.to_csv(fh, index=False, float_format="%.6g"),
                 text=True)
    text = ["## Against real molecules", "", markdown_table(rows), "",
            *[_source_line(o["source"], int(r["n"]), r) for r in reals], "",
            *([_GRAPH_LINE, ""] if "molecule_graph" in kinds else []),
            ("The real row scores held-out QM9 test molecules from their 3-D coordinates with the same bond rule. "
             if "point_cloud" in kinds else "") +
            "The EDM rows are the paper's (explicit hydrogens, 10,000 samples): with implicit hydrogens RDKit "
            "fills open valences, so validity is more lenient and stability is not defined."
            + (" FCD (to the test split, valid molecules only): the real row's is the floor, as many real "
               "training molecules against the same test split." if "fcd" in metrics else ""), ""]
    return "\n".join(text), []


_GRAPH_LINE = ("The real bond-graph row encodes the same held-out molecules as molecule-graph states (heavy-atom "
               "Kekulé bonds, data kind qm9_graphs) and judges them by the bonds in the state, as the molecule-graph "
               "members' samples are; a drawn molecule without a bond graph RDKit determines is left out and counted.")


def _source_line(source: str, n: int, row: dict | None = None) -> str:
    """Which molecules the real row is (and its novelty is measured against); bold for a fallback."""
    graph = row is not None and "n_without_graph" in row
    what = (f"Real bond-graph row (`source: {source}`): {n:,} molecules with a bond graph "
            f"({int(row['n_without_graph'])} without) among those" if graph else
            f"Real row (`source: {source}`): {n:,} molecules")
    line = f"{what} drawn from the {reference_set(source, 'test')}, novelty against the {reference_set(source, 'train')}."
    return f"**{line} The full QM9 set is not installed (pip install 'molfuse[qm9]').**" \
        if source == "auto" and resolve_source(source) == "small" else line


REFERENCE = Report(_write, {"n": 1000, "hydrogens": "implicit", "source": "auto"}, _check, samples=True)
