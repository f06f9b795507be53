"""The backbone evaluator (registered by :mod:`molfuse.modalities.proteins`) and its sample writers.

Per backbone (``per_sample.csv``): the Cα geometry of :func:`.geometry.backbone_row` (``valid``,
``reason``, residues, bond statistics, breaks, clashes, Rg and its ratio to ``2.2 N^0.38`` Å,
angle share, P-SEA helix / strand / coil fractions, the mean virtual dihedral of helical
stretches), ``rg_vs_data`` (Rg over the median Rg of the real reference fragments of that
length), ``right_handed`` (1 when the helical stretches' mean virtual dihedral is positive,
NaN without a helix), ``sse_hit`` with ``evaluation.target_sse``, and the files written.

Per method (``metrics.csv``): validity; mean SSE fractions; ``right_handed_share`` (of the
backbones with a helix) and ``helix_dihedral`` (circular mean, ≈ +50° right-handed);
Wasserstein-1 (degrees) and Jensen–Shannon (bits) distances of the Cα angle and virtual
dihedral histograms to the reference fragments of the same lengths (weighted like the
samples' lengths); mean Rg ratios, bond share, clashes, breaks; with several lengths the same
per length. Registered metric hooks (:mod:`.hooks`: designability proxy, TM-score diversity)
add their columns. :func:`score_backbones` is the pure function behind it, shared with the
``backbone_reference`` report.

Writers: ``samples/<method>/<id>.pdb`` and ``samples/<method>/<id>.cif``, one Cα-only file per
backbone (one model each, so backbones of different lengths sit side by side; a viewer opens
any of them), none for a sample the sampler failed on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...base.checks import fail
from ...base.io import sha256_file
from ...base.provenance import REPO_ROOT
from ...base.seeds import derive_seed
from ...plugins import EvalContext, Evaluated, Evaluator, MethodRun
from .data import SHIPPED, decode
from .geometry import (
    ANGLE_BINS,
    DIHEDRAL_BINS,
    geometry_table,
    histogram_w1,
    histograms,
    js_divergence,
    summary,
)
from .geometry import traces as as_traces
from .hooks import HookContext, active, metric_hooks
from .references import (
    reference_fragments,
    reference_histogram,
    reference_stats,
    reference_traces,
)
from .schema import parse_evaluation
from .io import write_mmcif, write_pdb

__all__ = ["build_evaluator", "score_backbones", "reference_histogram", "reference_traces", "reference_fragments",
           "reference_stats", "reference_file", "decoded_traces", "hook_columns", "write_pdb_samples",
           "write_cif_samples", "METRIC_COLUMNS", "SAMPLE_COLUMNS", "HEADLINE", "REFERENCE_COLUMNS"]

METRIC_COLUMNS = ("validity", "helix", "strand", "coil", "sse_hit", "right_handed_share", "helix_dihedral",
                  "with_helix", "angle_w1", "dihedral_w1", "angle_js", "dihedral_js", "rg_ratio", "rg_vs_data",
                  "bond_share", "n_clashes", "n_breaks", "mean_length")
SAMPLE_COLUMNS = ("n_res", "pdb_file", "bond_mean", "bond_max_dev", "bond_share", "n_breaks", "n_clashes", "rg",
                  "rg_ratio", "rg_vs_data", "angle_mean", "angle_share", "dihedral_mean", "helix", "strand", "coil",
                  "helix_dihedral", "right_handed", "sse_hit")
HEADLINE = ("validity", "helix", "strand", "sse_hit", "right_handed_share", "dihedral_w1", "angle_w1", "rg_vs_data")
REFERENCE_COLUMNS = ("angle_w1", "dihedral_w1", "angle_js", "dihedral_js", "rg_vs_data")  # need the real fragments
_SUMMARY = ("validity", "helix", "strand", "coil", "helix_dihedral", "rg_ratio", "bond_share", "n_clashes", "n_breaks")


def _distances(trace_list: Sequence[np.ndarray], table: pd.DataFrame, reference: Mapping[str, Any]) -> dict:
    measured = table["bond_mean"].notna().to_numpy()
    counts = table.loc[measured, "n_res"].astype(int).value_counts().to_dict()
    out = {k: math.nan for k in ("angle_w1", "dihedral_w1", "angle_js", "dihedral_js")}
    if not counts:
        return out
    hs = histograms([t for t, m in zip(trace_list, measured) if m])
    for which, bins, circular in (("angle", ANGLE_BINS, False), ("dihedral", DIHEDRAL_BINS, True)):
        ref = reference_histogram(reference, counts, which)
        if ref is None or not np.isfinite(hs[which]).all():
            continue
        out[f"{which}_w1"] = histogram_w1(hs[which], ref, bins[1] - bins[0], circular=circular)
        out[f"{which}_js"] = js_divergence(hs[which], ref)
    return out


def _in_ranges(table: pd.DataFrame, ranges: Mapping[str, Sequence[float]]) -> np.ndarray:
    hit = table["valid"].astype(bool).to_numpy().copy()
    for key, (lo, hi) in ranges.items():
        v = table[key].to_numpy(dtype=float)
        hit &= np.nan_to_num(v, nan=-1.0) >= lo
        hit &= np.nan_to_num(v, nan=2.0) <= hi
    return hit


def _per_length(table: pd.DataFrame) -> dict:
    out = {}
    for L, part in table.groupby("n_res"):
        measured = part[part["bond_mean"].notna()]
        out.update({f"n_L{L}": len(part), f"validity_L{L}": float(part["valid"].astype(bool).mean())})
        for col in ("helix", "strand", "rg_vs_data"):
            out[f"{col}_L{L}"] = float(measured[col].mean()) if len(measured) else math.nan
    return out


def hook_columns(cols: pd.DataFrame, key: str, table: pd.DataFrame) -> pd.DataFrame:
    """A hook's per-backbone table ready to join the geometry's: the columns the geometry already has
    (``index``, ``n_res``, ``valid``) dropped, its ``reason`` renamed ``<key>_reason``.

    Raises:
        ValueError: a row count other than the backbones', or another clashing column name.
    """
    if len(cols) != len(table):
        raise ValueError(f"metric hook {key!r} returned {len(cols)} rows for {len(table)} backbones")
    cols = cols.drop(columns=[c for c in ("index", "n_res", "valid") if c in cols]).rename(
        columns={"reason": f"{key}_reason"}).reset_index(drop=True)
    clash = [c for c in cols if c in table]
    if clash:
        raise ValueError(f"metric hook {key!r} returns columns the evaluator already has: {', '.join(clash)}")
    return cols


def score_backbones(trace_list: Sequence[np.ndarray], settings: Mapping[str, Any] | None = None, name: str = "",
                    seed: int = 0, folder: Path | None = None, threads: int | None = None
                    ) -> tuple[pd.DataFrame, dict]:
    """Every per-backbone column and the summary row of one method's backbones.

    Args:
        trace_list: (L_i, 3) Å Cα traces (a failed sample: NaN coordinates).
        settings: parsed ``evaluation:`` settings (:func:`.schema.parse_evaluation`; None: defaults).
        name, seed, folder, threads: what the metric hooks see (:class:`.hooks.HookContext`).

    Returns:
        ``(table, row)``: one row per backbone (``index, n_res, valid, reason`` and the metric
        columns) and the method's summary (``metrics.csv`` columns).
    """
    s = dict(settings) if settings is not None else parse_evaluation({})
    table = geometry_table(list(trace_list), thresholds=s["thresholds"])
    med = {L: reference_stats(s["reference"], L)["rg"] for L in table["n_res"].unique() if L >= 4}
    table["rg_vs_data"] = table["rg"] / table["n_res"].map(med).astype(float)
    hd = table["helix_dihedral"].to_numpy(dtype=float)
    table["right_handed"] = np.where(np.isfinite(hd), (hd > 0).astype(float), np.nan)
    summ = summary(table)
    row = {k: summ[k] for k in _SUMMARY}
    if s["target_sse"]:
        table["sse_hit"] = _in_ranges(table, s["target_sse"])
        row["sse_hit"] = float(table["sse_hit"].mean()) if len(table) else math.nan
    helical = np.isfinite(hd)
    row.update(right_handed_share=float((hd[helical] > 0).mean()) if helical.any() else math.nan,
               with_helix=float(helical.mean()) if len(hd) else math.nan,
               rg_vs_data=float(np.nanmean(table["rg_vs_data"])) if table["rg_vs_data"].notna().any() else math.nan,
               mean_length=float(table["n_res"].mean()) if len(table) else math.nan)
    row.update(_distances(trace_list, table, s["reference"]))
    if s["by_length"] and table["n_res"].nunique() > 1:
        row.update(_per_length(table))
    valid = table["valid"].astype(bool).to_numpy()
    for hook, value in active(s):
        ctx = HookContext(name, s, derive_seed(seed, name, hook.key), folder, threads)
        cols, extra = hook.compute(list(trace_list), valid, value, ctx)
        if cols is not None:
            table = pd.concat([table, hook_columns(cols, hook.key, table)], axis=1)
        row.update({k: v for k, v in extra.items() if k not in row and k != "n"})  # the geometry's keep theirs
    return table, row


def decoded_traces(run: MethodRun, normalisation: Mapping[str, Any]) -> list[np.ndarray]:
    """The run's backbones as (L_i, 3) Å traces (real residues only), decoded once per run."""
    if "proteins_traces" not in run.cache:
        x = np.asarray(run.x, dtype=np.float64)
        mask = np.ones(x.shape[:2], dtype=bool) if run.mask is None else np.asarray(run.mask, dtype=bool)
        ca, mask = decode(x, mask, normalisation)
        run.cache["proteins_traces"] = as_traces(ca, mask)
    return run.cache["proteins_traces"]


def _settings(run: MethodRun) -> dict:
    return run.cache.get("settings") or parse_evaluation({})


def _write(folder: Path, run: MethodRun, normalisation: Mapping[str, Any], fmt: str) -> list[str]:
    if fmt not in _settings(run)["formats"]:
        return []
    writer = write_pdb if fmt == "pdb" else write_mmcif
    written = run.cache.setdefault(f"proteins_{fmt}", {})
    for i, (ca, sid, seed) in enumerate(zip(decoded_traces(run, normalisation), run.table["id"], run.table["seed"])):
        rel = f"samples/{run.name}/{sid}.{fmt}"
        try:
            writer(Path(folder) / rel, ca, remark=f"{sid} method {run.name} seed {int(seed)}")
        except ValueError:  # a failed or diverged sample has no file; its row says why
            continue
        written[i] = rel
    return sorted(written.values())


def write_pdb_samples(folder: Path, run: MethodRun, normalisation: Mapping[str, Any]) -> list[str]:
    """``samples/<method>/<id>.pdb``: one Cα-only PDB per backbone (``REMARK 1 CA-only model generated by molfuse``)."""
    return _write(folder, run, normalisation, "pdb")


def write_cif_samples(folder: Path, run: MethodRun, normalisation: Mapping[str, Any]) -> list[str]:
    """``samples/<method>/<id>.cif``: one Cα-only mmCIF per backbone (one model; ``_struct.title`` says Cα-only)."""
    return _write(folder, run, normalisation, "cif")


def _evaluate(ctx: EvalContext, run: MethodRun) -> Evaluated:
    norm = ctx.models[run.members[0]].normalisation
    traces = decoded_traces(run, norm)
    own, row = score_backbones(traces, ctx.settings, run.name, ctx.seed, ctx.folder, ctx.threads)
    run.cache["proteins_table"] = own
    table = run.table.copy()
    ok = table["valid"].to_numpy() & own["valid"].astype(bool).to_numpy()
    table["reason"] = np.where(table["valid"], own["reason"], table["reason"])
    table["valid"] = ok
    pdb = run.cache.get("proteins_pdb", {})
    table["pdb_file"] = [pdb.get(i, "") for i in range(len(table))]
    table = pd.concat([table, own.drop(columns=["index", "valid", "reason"])], axis=1)
    return Evaluated(table, row)


def _figure(ctx: EvalContext, runs: dict[str, MethodRun]) -> list[str]:
    from .pictures import draw_all

    tables = {name: run.cache["proteins_table"] for name, run in runs.items() if "proteins_table" in run.cache}
    traces = {name: run.cache["proteins_traces"] for name, run in runs.items() if "proteins_traces" in run.cache}
    out = draw_all(ctx.folder, tables, traces, ctx.settings)
    for hook, _ in active(ctx.settings):
        if hook.figure is not None:
            out += hook.figure(ctx.folder, tables)
    return out


def reference_file() -> tuple[str, str]:
    """The real fragments every reference column is measured against: their file (relative to the
    checkout) and its sha256 (a rebuilt file with other source versions gives other numbers)."""
    try:
        name = SHIPPED.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        name = str(SHIPPED)
    return name, sha256_file(SHIPPED)


def _caveats(ctx: EvalContext, metrics: pd.DataFrame) -> list[str]:
    s = ctx.settings
    th, ref = s["thresholds"], s["reference"]
    where = f", {ref['where']}" if ref["where"] else ""
    file, digest = reference_file()
    out = [f"Backbones are Cα traces only. `validity` is geometric: no Cα–Cα bond above {th['break']} Å, at least "
           f"90 % of bonds within {th['bond']} ± {th['bond_tol']} Å, no pair |i − j| ≥ {int(th['clash_separation'])} "
           f"closer than {th['clash']} Å, at least 90 % of Cα angles in [{th['angle_lo']}, {th['angle_hi']}]°. It "
           "says nothing about designability.",
           f"Histogram distances and `rg_vs_data` are against real {ref['split']} fragments ({ref['population']}"
           f"{where}) of the samples' lengths from `{file}` (sha256 {digest[:12]}); real held-out fragments have a "
           "non-zero distance too (the "
           "`backbone_reference` report shows that floor). Secondary structure is P-SEA on the Cα trace.",
           "`rg_ratio` is Rg over 2.2 N^0.38 Å (compact whole proteins ≈ 1.0; real fragments cut from larger "
           "proteins ≈ 1.4)."]
    if not active(s):
        keys = [h.key for h in metric_hooks()]
        out.append("No designability or diversity columns in this run" + (
            f": enable them with the evaluation keys {', '.join(keys)}." if keys else
            ": no metric hook is registered (molfuse.modalities.proteins.hooks)."))
    return out


NOTES = ("`validity`: share of backbones whose Cα trace passes the geometric checks (caveats); `helix` / `strand` "
         "/ `coil`: mean P-SEA fractions over measurable backbones; `right_handed_share`: share of backbones with a "
         "helical stretch whose mean Cα virtual dihedral is positive (right-handed α-helices ≈ +50°); `angle_w1` / "
         "`dihedral_w1`: Wasserstein-1 (degrees; circular for dihedrals) between the method's pooled Cα angle / "
         "virtual dihedral histograms and the real reference fragments' (`_js`: Jensen–Shannon, bits); "
         "`rg_vs_data`: Rg over the median real fragment's of the same length; `sse_hit`: valid and inside "
         "`evaluation.target_sse`.")


def _check(ctx: EvalContext) -> None:
    """Before sampling: every active hook's ``prepare`` (weights loaded once), its failure naming the key."""
    for hook, value in active(ctx.settings):
        if hook.prepare is not None:
            try:
                hook.prepare(value)
            except (ImportError, OSError, ValueError) as e:  # CheckpointError is a ValueError
                fail(f"evaluation.{hook.key}", str(e))


def _provenance(ctx: EvalContext) -> dict:
    """``provenance.json`` ``evaluation``: the reference fragments (file, sha256, selection, the columns
    measured against them), then each active hook's settings and what it records (versions, hashes)."""
    file, digest = reference_file()
    out: dict[str, Any] = {"reference": {"file": file, "sha256": digest, **ctx.settings["reference"],
                                         "used_by": list(REFERENCE_COLUMNS)}}
    out.update({hook.key: {"settings": value, **(hook.record(value) if hook.record is not None else {})}
                for hook, value in active(ctx.settings)})
    return out


def _hook_columns(attr: str) -> tuple[str, ...]:
    return tuple(c for h in metric_hooks() for c in getattr(h, attr))


def build_evaluator() -> Evaluator:
    """The evaluator, with the registered metric hooks' columns in its column orders."""
    notes = " ".join([NOTES, *(h.notes for h in metric_hooks() if h.notes)])
    return Evaluator(evaluate=_evaluate, parse=parse_evaluation, check=_check, provenance=_provenance, notes=notes,
                     caveats=_caveats, figure=_figure,
                     metric_columns=METRIC_COLUMNS + _hook_columns("metric_columns"),
                     sample_columns=SAMPLE_COLUMNS + _hook_columns("sample_columns"),
                     headline=HEADLINE + _hook_columns("headline"))

