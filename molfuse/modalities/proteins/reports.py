"""The proteins modality's report ``backbone_reference``: real held-out fragments and random walks
scored by the same evaluator settings, so every method's row has the data's row (the floor of
each distance) and a chain with no protein geometry (the ceiling) beside it.

::

    reports:
      - {kind: backbone_reference, n: 64, split: test, lengths: [64], where: null, random_walks: true, seed: 0}

``n`` fragments per length are drawn (seeded) from ``split`` (whole proteins held out from
training), optionally only those inside ``where`` SSE ranges (a target population); random
walks have 3.8 Å steps in uniformly random directions (a freely jointed chain), ``n`` of each
length. The evaluator settings are the run's (read from its ``config.yaml``), so reference
split, thresholds, target ranges and metric hooks are the same as the methods'. Writes ``reference.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ...base.checks import as_bool, as_choice, as_int, fail
from ...base.io import atomic_write
from ...base.tables import markdown_table
from ...plugins import Report
from .data import lengths_of
from .evaluate import METRIC_COLUMNS, score_backbones
from .hooks import metric_hooks
from .references import reference_fragments
from .schema import SPLITS, parse_evaluation, parse_ranges

__all__ = ["REFERENCE", "random_walks", "reference_rows"]

OPTIONS = {"n": 64, "split": "test", "lengths": [64], "where": None, "random_walks": True, "seed": 0}


def random_walks(n: int, length: int, seed: int = 0, step: float = 3.8) -> list[np.ndarray]:
    """``n`` freely jointed chains of ``length`` Cα (Å): steps of ``step`` Å in uniform random directions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = rng.normal(size=(length - 1, 3))
        u *= step / np.linalg.norm(u, axis=1, keepdims=True)
        out.append(np.concatenate([np.zeros((1, 3)), np.cumsum(u, axis=0)]))
    return out


def _check(o: dict, path: str) -> dict:
    o["n"] = as_int(o["n"], f"{path}.n", 1)
    o["split"] = as_choice(o["split"], f"{path}.split", SPLITS)
    try:
        o["lengths"] = lengths_of(o["lengths"])
    except ValueError as e:
        fail(f"{path}.lengths", str(e))
    if o["lengths"] is None:
        fail(f"{path}.lengths", "expected the residue counts to score, e.g. [64, 128]")
    o["where"] = None if o["where"] is None else parse_ranges(o["where"], f"{path}.where")
    o["random_walks"] = as_bool(o["random_walks"], f"{path}.random_walks")
    o["seed"] = as_int(o["seed"], f"{path}.seed", 0)
    return o


def _run_settings(folder: Path) -> tuple[dict, int | None]:
    """The run's parsed ``evaluation`` settings and ``sampler.threads`` (its config.yaml; defaults without one)."""
    path = Path(folder) / "config.yaml"
    raw = (yaml.safe_load(path.read_text()) if path.is_file() else {}) or {}
    return parse_evaluation(raw.get("evaluation") or {}), (raw.get("sampler") or {}).get("threads")


def reference_rows(settings: dict, n: int = 64, split: str = "test", lengths: tuple[int, ...] = (64,),
                   walks: bool = True, seed: int = 0, where: dict | None = None, threads: int | None = None
                   ) -> list[dict]:
    """Summary rows (``metrics.csv`` columns) of ``n`` real ``split`` fragments per length (inside the
    ``where`` SSE ranges if given) and, with ``walks``, as many random walks of each length, scored
    by :func:`.evaluate.score_backbones` with ``settings`` (metric hooks included, on ``threads``)."""
    rng = np.random.default_rng(seed)
    real, by_length = [], {}
    for L in lengths:
        frags = reference_fragments({"split": split, "population": "all", "where": where}, L)
        idx = np.sort(rng.choice(len(frags), min(n, len(frags)), replace=False)) if len(frags) else []
        by_length[L] = [frags.traces()[i] for i in idx]
        real += by_length[L]
    label = "/".join(map(str, lengths)) + (f", {where}" if where else "")
    rows = []
    if real:
        _, row = score_backbones(real, settings, f"real_{split}", seed, threads=threads)
        rows.append({"method": f"real {split} fragments ({len(real)}, L = {label})", "n": len(real), **row})
    if len(lengths) > 1:  # each length alone too: a member drawn at one length is compared with its own row
        for L, traces in by_length.items():
            if traces:
                _, row = score_backbones(traces, settings, f"real_{split}_L{L}", seed, threads=threads)
                rows.append({"method": f"real {split} fragments ({len(traces)}, L = {L}"
                                       + (f", {where}" if where else "") + ")", "n": len(traces), **row})
    if walks:
        rw = [w for L in lengths for w in random_walks(n, L, seed + L)]
        _, row = score_backbones(rw, settings, "random_walk", seed, threads=threads)
        rows.append({"method": f"random walks, 3.8 Å steps ({len(rw)}, L = {label})", "n": len(rw), **row})
    return rows


def _write(folder: Path, name: str, metrics: pd.DataFrame, o: dict) -> tuple[str, list[str]]:
    settings, threads = _run_settings(folder)
    rows = pd.DataFrame(reference_rows(settings, o["n"], o["split"], tuple(o["lengths"]), o["random_walks"], o["seed"],
                                       o["where"], threads))
    cols = [c for c in (*METRIC_COLUMNS, *(c for h in metric_hooks() for c in h.metric_columns))
            if c in metrics or c in rows]
    table = pd.concat([metrics[["method", "n", *[c for c in cols if c in metrics]]], rows], ignore_index=True)
    table = table[["method", "n", *cols]]
    atomic_write(Path(folder) / "reference.csv", lambda fh: table.to_csv(fh, index=False, float_format="%.6g"),
                 text=True)
    text = ["## Against real fragments and random walks", "", markdown_table(table), "",
            f"The real row scores up to {o['n']} held-out `{o['split']}` fragments per length (whole proteins never "
            f"seen in training) with this run's evaluator settings: its histogram distances to the "
            f"`{settings['reference']['split']}` fragments are the floor a perfect generator would reach at that "
            "sample size. The random walks (freely jointed, 3.8 Å steps) keep the bond length and nothing else: "
            "what no protein geometry scores.", ""]
    return "\n".join(text), []


REFERENCE = Report(_write, dict(OPTIONS), _check)
