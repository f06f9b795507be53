"""Backbones molfuse did not draw, judged like its own (``molfuse evaluate``).

A folder of structure files (PDB, mmCIF, BinaryCIF, GRO, optionally gzip / bzip2; searched
recursively) or one such file: every amino-acid chain is one backbone (its Cα trace, first
model), judged by :func:`~.evaluate.score_backbones` with the same ``evaluation:`` settings as a
workflow's samples (geometry, P-SEA composition, histogram distances to real fragments of the
same length, the registered hooks: TM-score diversity, the designability proxy). A file that
gives no backbone (unreadable, empty, no amino acid, unknown Cα coordinates) is a row with the
reason and counts as invalid; histogram distances and ``rg_vs_data`` exist only for lengths the
real reference fragments have (64 and 128 residues in the shipped set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ...base.checks import fail
from ...plugins import Evaluated, Evaluator, FileJudge
from .evaluate import score_backbones
from .io import FORMATS, read_structures, structure_format

__all__ = ["build_files", "judge_structures", "structure_files"]

COMPRESSED = (".gz", ".bz2")


def structure_files(path: Path) -> list[Path]:
    """The structure files of a folder (recursively, sorted), or the file itself."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and structure_format(p) is not None)
    return [path]


def _accepts(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return bool(structure_files(path))
    return structure_format(path) is not None


def judge_structures(path: str | Path, settings: Mapping[str, Any], folder: Path, name: str) -> Evaluated:
    """Every chain of the structure files at ``path`` judged under ``settings`` (the backbone
    evaluator's, parsed); one row per chain, plus one per file that gives none."""
    files = structure_files(Path(path))
    if not files:
        fail(f"input {name}", f"{path}: no structure file ({', '.join(FORMATS)}, optionally {', '.join(COMPRESSED)})")
    chains, read = read_structures(files)
    traces = [np.asarray(c.ca, dtype=np.float64) for c in chains]
    scored, row = score_backbones(traces, settings, name, 0, folder, 1) if traces else (pd.DataFrame(), {})
    judged = iter(scored.drop(columns=["index"], errors="ignore").to_dict("records"))
    rows = []
    for r in read.rename(columns={"n_residues": "residues_read"}).to_dict("records"):  # read's valid rows = chains
        rows.append({**{k: v for k, v in r.items() if k not in ("valid", "reason")}, **next(judged)} if r["valid"]
                    else r)
    table = pd.DataFrame(rows)
    row = dict(row)
    row["validity"] = float(table["valid"].astype(bool).mean()) if len(table) else float("nan")
    row["unreadable"] = int((~read["valid"].astype(bool)).sum())
    return Evaluated(table, row, [])


def _figure(settings: Mapping[str, Any], folder: Path, tables: Mapping[str, pd.DataFrame]) -> list[str]:
    from .pictures import draw_composition

    have = {k: t[t["valid"].astype(bool)] for k, t in tables.items() if "helix" in t}
    return draw_composition(folder, have, settings) if have else []


def _provenance(settings: Mapping[str, Any]) -> dict:
    from .evaluate import REFERENCE_COLUMNS, reference_file

    file, digest = reference_file()
    return {"reference": {"file": file, "sha256": digest, **settings["reference"], "used_by": list(REFERENCE_COLUMNS)},
            "backbones": "every amino-acid chain of every structure file (first model), its Cα trace"}


def _caveats(settings: Mapping[str, Any]) -> list[str]:
    th = settings["thresholds"]
    return [f"Each chain is judged on its Cα trace alone. `validity` is geometric: no Cα–Cα bond above {th['break']} "
            f"Å, at least 90 % of bonds within {th['bond']} ± {th['bond_tol']} Å, no pair |i − j| ≥ "
            f"{int(th['clash_separation'])} closer than {th['clash']} Å, at least 90 % of Cα angles in "
            f"[{th['angle_lo']}, {th['angle_hi']}]°; a file that gives no backbone counts as invalid (`unreadable`).",
            "Histogram distances and `rg_vs_data` are against real fragments of the same length; lengths the "
            "reference set lacks (it has 64 and 128 residues) have none."]


def build_files(evaluator: Evaluator) -> FileJudge:
    """The file judge, with the evaluator's columns (they include the registered metric hooks')."""
    return FileJudge(
        kinds=("a folder of structure files", *(f"*{s}" for s in FORMATS)), accepts=_accepts,
        judge=judge_structures, figure=_figure, provenance=_provenance, caveats=_caveats, notes=evaluator.notes,
        metric_columns=("validity", "unreadable", *evaluator.metric_columns),
        sample_columns=("file", "chain", "residues_read", *evaluator.sample_columns))
