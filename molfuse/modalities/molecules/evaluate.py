"""The molecule evaluator (registered by :mod:`molfuse.modalities.molecules`) and its writers.

Per molecule: ``valid``, ``reason``, ``smiles`` (largest fragment), ``n_atoms``,
``fragments`` (and ``atom_stability``, ``mol_stable`` with explicit hydrogens) and the RDKit
properties of ``evaluation.properties``. Per method: validity, uniqueness, valid-and-unique,
novelty against the training SMILES, connectivity, stability, internal diversity, per target
property its mean, MAE and hit rate and the joint hit rate, FCD when asked. Writers:
``samples/<method>.sdf`` (3-D), ``.smi`` and ``.png`` (a grid of valid molecules); across
methods ``properties.png`` (each property's distribution against the reference molecules).

Properties, their means and hit rates are those of the molecule the user receives: the
largest fragment, whose SMILES is the ``smiles`` column and the ``.smi`` line (read back
from that SMILES, so recomputing them from the ``.smi`` file gives the same numbers). A
fragmented sample's loose atoms (an O, an N) add nothing; ``connected`` counts how many are.
The reference molecules behind novelty, FCD and ``properties.png`` (full QM9 or the shipped
subset) are named in ``provenance.json`` (``evaluation``) and in ``summary.md``; a fallback of
``reference_source: auto`` to the subset is said in bold.

Members on a molecule-graph space (``bond_orders`` in the card's normalisation) are judged by the
bonds they drew: :func:`~.graph_data.judge_states` reads each free pair's bond order by argmax and
builds the molecule from those bonds (the SDF holds them), never from distances; no valence guard.
Their rows add ``geometry_agrees`` / ``connectivity_agrees`` (does the EDM distance rule, with
``evaluation.margins``, recover the bond orders / the bonded pairs from the sample's coordinates),
averaged over valid molecules in ``metrics.csv``; ``evaluation.bonds: rdkit`` is refused for them.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...base.checks import fail
from ...base.io import atomic_write
from ...plugins import EvalContext, Evaluated, Evaluator, MethodRun
from .data import decode, resolve_source
from .graph_data import carries_bonds, graph_settings, judge_states
from .io import write_sdf, write_smiles
from .metrics import FINGERPRINT, fcd, internal_diversity, molecule_table, settings, summary
from .properties import compute_properties
from .schema import parse_evaluation

__all__ = ["EVALUATOR", "write_sdf_samples", "write_smiles_samples", "write_grid", "reference", "reference_set", "built",
           "received", "judge_table", "grid_png", "properties_png", "reference_caveat", "references", "source_info", "NOTES",
           "BASE_NOTES"]

FIGURE_REFERENCE = 2000  # properties.png draws the first this many reference test molecules
PROPERTIES_OF = "the largest fragment (the smiles column, the .smi line), read back from its SMILES"


@lru_cache(maxsize=4)
def reference(source: str, part: str) -> tuple[str, ...]:
    """Canonical SMILES (no stereo) of a split of the reference molecules."""
    from .data import qm9_source
    from .validation import canonical

    return tuple(canonical(s) for s in qm9_source(source)[part].smiles)


def _built(run: MethodRun, normalisation: Mapping[str, Any], settings_: Mapping[str, Any] | None = None):
    """The run's molecules (per-molecule table, RDKit molecules), built once per run and bond
    settings: the writers and the evaluator share them through ``run.cache``. Molecule-graph
    states (``bond_orders`` in the normalisation) are judged by the bonds they carry; point
    clouds by bonds inferred from distances (``evaluation.bonds``)."""
    s = settings_ or run.cache.get("settings") or parse_evaluation({})
    graph = carries_bonds(normalisation)
    key = ("graphs" if graph else "molecules", tuple(normalisation["alphabet"]), "state" if graph else s["bonds"],
           tuple(s["margins"]), bool(graph and s["valence_guard"]))
    if key not in run.cache:
        if graph:
            run.cache[key] = judge_states(run.x, run.mask, normalisation, key[3], valence_guard=key[4])
        else:
            types, pos = decode(run.x, run.mask, normalisation)
            run.cache[key] = molecule_table(types, pos, key[1], s["bonds"], key[3])
    return run.cache[key]


def built(run: MethodRun, normalisation: Mapping[str, Any], settings_: Mapping[str, Any] | None = None):
    """The run's ``(per-molecule table, RDKit molecules)`` as the evaluator and writers see them
    (built once per run and bond settings, shared through ``run.cache``; settings: ``settings_``,
    else ``run.cache["settings"]``, else the defaults)."""
    return _built(run, normalisation, settings_)


def received(smiles: Sequence[str], valid: Sequence[bool]) -> list:
    """RDKit molecules of what the user receives: each valid sample's largest fragment, read
    back from its SMILES (None where invalid)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        return [Chem.MolFromSmiles(s) if v and s else None for s, v in zip(smiles, valid)]
    finally:
        RDLogger.EnableLog("rdApp.*")


def _evaluate(ctx: EvalContext, run: MethodRun) -> Evaluated:
    s = ctx.settings
    norm = ctx.models[run.members[0]].normalisation
    own, _ = _built(run, norm, s)
    table = run.table.copy()
    ok = table["valid"].to_numpy() & own["valid"].to_numpy()
    table["reason"] = np.where(table["valid"], own["reason"], table["reason"])
    table["valid"] = ok
    table, row = judge_table(pd.concat([table, own.drop(columns=["valid", "reason"])], axis=1), s)
    if "valid_guarded" in table:  # the valence guard, beside the unguarded numbers (a valid sample needs none)
        guarded = run.table["valid"].to_numpy(bool) & table["valid_guarded"].to_numpy(bool)
        row["validity_guarded"] = float(guarded.mean())
        row["connected_guarded"] = float((guarded & (table["fragments_guarded"].to_numpy() == 1)).mean())
        row["guarded_share"] = float((table["bonds_lowered"].to_numpy() > 0).mean())
    return Evaluated(table, row, [f"samples/{run.name}.png"])


def judge_table(table: pd.DataFrame, s: Mapping[str, Any]) -> tuple[pd.DataFrame, dict]:
    """One set of molecules judged: ``table`` has a row per molecule with ``valid``, ``reason``,
    ``smiles`` (largest fragment) and ``fragments`` (and, for molecule-graph samples,
    ``geometry_agrees`` / ``connectivity_agrees``); returns it with the property columns of
    ``s["properties"]`` added, and the ``metrics.csv`` row (validity, uniqueness, novelty,
    connectivity, diversity, geometry agreement, per target mean / MAE / hit rate, the joint
    hit rate, FCD) under the evaluation settings ``s``. Workflows and ``molfuse evaluate`` share it."""
    ok = table["valid"].to_numpy(bool)
    props = compute_properties(received(table["smiles"], ok), s["properties"])
    table = pd.concat([table.reset_index(drop=True), props.reset_index(drop=True)], axis=1)
    summ = summary(table, reference(s["reference_source"], "train") if s["novelty"] else None)
    row = {**summ, "diversity": internal_diversity(table.loc[ok, "smiles"])}
    if "geometry_agrees" in table:  # molecule-graph states: do their coordinates carry their bonds?
        for col in ("geometry_agrees", "connectivity_agrees"):
            row[col] = float(table.loc[ok, col].astype(float).mean()) if ok.any() else math.nan
    hits = []
    for name, t in s["targets"].items():
        v = table[name].to_numpy(float)
        hit = np.abs(v - t["value"]) <= t["tolerance"]
        hits.append(hit)
        row.update({f"{name}_mean": float(np.nanmean(v)) if np.isfinite(v).any() else math.nan,
                    f"{name}_mae": float(np.nanmean(np.abs(v - t["value"]))) if np.isfinite(v).any() else math.nan,
                    f"{name}_hit": float(hit.mean())})
    if len(hits) > 1:
        joint = np.logical_and.reduce(hits)
        row["joint_hit"] = float(joint.mean())
        row["joint_hits_distinct"] = int(table.loc[joint & ok, "smiles"].nunique())  # distinct molecules hitting all
    if s["fcd"]:
        row["fcd"] = fcd(table.loc[ok, "smiles"].tolist(), list(reference(s["reference_source"], "test")))
    return table, row


def write_sdf_samples(folder: Path, run: MethodRun, normalisation: Mapping[str, Any]) -> list[str]:
    """``samples/<method>.sdf``: one 3-D record per sample (an empty record for an invalid one)."""
    table, mols = _built(run, normalisation)
    names = [f"{run.name}-{i:06d}" for i in range(len(mols))]
    write_sdf(Path(folder) / "samples" / f"{run.name}.sdf", mols, names, table[["valid", "reason", "smiles"]])
    return [f"samples/{run.name}.sdf"]


def write_smiles_samples(folder: Path, run: MethodRun, normalisation: Mapping[str, Any]) -> list[str]:
    """``samples/<method>.smi``: SMILES of the largest fragment (``*`` for an invalid sample)."""
    table, _ = _built(run, normalisation)
    write_smiles(Path(folder) / "samples" / f"{run.name}.smi", table["smiles"].tolist(),
                 [f"{run.name}-{i:06d}" for i in range(len(table))])
    return [f"samples/{run.name}.smi"]


def write_grid(folder: Path, run: MethodRun, normalisation: Mapping[str, Any], n: int = 24) -> list[str]:
    """``samples/<method>.png``: up to ``n`` valid molecules drawn in 2-D (RDKit)."""
    table, _ = _built(run, normalisation)
    return [grid_png(Path(folder), f"samples/{run.name}.png", table.loc[table["valid"], "smiles"].head(n))]


def grid_png(folder: Path, rel: str, smiles: Sequence[str]) -> str:
    """``folder / rel``: the molecules of ``smiles`` drawn in 2-D on a grid of 6 per row; returns ``rel``."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    shown = [Chem.MolFromSmiles(s) for s in smiles]
    shown = [m for m in shown if m is not None] or [Chem.MolFromSmiles("")]
    img = Draw.MolsToGridImage(shown, molsPerRow=6, subImgSize=(160, 130),
                               legends=[f"{i}" for i in range(len(shown))])
    atomic_write(Path(folder) / rel, lambda fh: img.save(fh, format="PNG"))
    return rel


def _figure(ctx: EvalContext, runs: dict[str, MethodRun]) -> list[str]:
    """properties.png: each property's distribution per method against the reference test molecules."""
    tables = {}
    for name, run in runs.items():
        table, _ = _built(run, ctx.models[run.members[0]].normalisation, ctx.settings)
        tables[name] = compute_properties(received(table["smiles"], table["valid"]), ctx.settings["properties"])
    return properties_png(ctx.folder, ctx.settings, tables)


def properties_png(folder: Path, s: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """``folder/properties.png``: each property of ``s["properties"]`` per set (``tables``: name ->
    property columns of its valid molecules, NaN elsewhere) against the reference test molecules."""
    from matplotlib.figure import Figure

    from .io import parse_smiles

    ref_mols, _ = parse_smiles(list(reference(s["reference_source"], "test"))[:FIGURE_REFERENCE])
    ref = compute_properties(ref_mols, s["properties"])
    fig = Figure(figsize=(3.6 * len(s["properties"]), 3.2))
    axes = fig.subplots(1, len(s["properties"]), squeeze=False)[0]
    for ax, prop in zip(axes, s["properties"]):
        data = ref[prop].dropna()
        bins = np.histogram_bin_edges(data, bins=20)
        ax.hist(data, bins=bins, density=True, color="0.8", label="real test")
        for name, t in tables.items():
            if t[prop].notna().any():  # a method without valid molecules has no histogram to draw
                ax.hist(t[prop].dropna(), bins=bins, density=True, histtype="step", lw=1.2, label=name)
        if prop in s["targets"]:
            ax.axvline(s["targets"][prop]["value"], color="k", ls="--", lw=1)
        ax.set_title(prop)
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(Path(folder) / "properties.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
    return ["properties.png"]


def reference_set(source: str, part: str, first: int | None = None) -> str:
    """The name of the reference molecules ``source`` gives for ``part`` here, with their count,
    e.g. ``"qm9_small subset of the train split (3,000 molecules)"``."""
    n = len(reference(source, part))
    kind = "QM9 full" if resolve_source(source) == "qm9" else "qm9_small subset of the"
    count = f"first {first:,} of {n:,} molecules" if first is not None and first < n else f"{n:,} molecules"
    return f"{kind} {part} split ({count})"


def references(s: Mapping[str, Any]) -> dict[str, str]:
    """Metric -> the reference molecules it was measured against (only those the settings use)."""
    out = {"novelty_reference": reference_set(s["reference_source"], "train")} if s["novelty"] else {}
    if s["fcd"]:
        out["fcd_reference"] = reference_set(s["reference_source"], "test")
    out["properties_png_reference"] = reference_set(s["reference_source"], "test", FIGURE_REFERENCE)
    return out


def source_info(s: Mapping[str, Any]) -> dict[str, Any]:
    """The reference source asked for, the one used here, and whether ``auto`` fell back to the subset."""
    used = resolve_source(s["reference_source"])
    out = {"requested": s["reference_source"], "used": used,
           "fallback": s["reference_source"] == "auto" and used == "small"}
    if out["fallback"]:
        out["why"] = "the full QM9 set is not installed (pip install 'molfuse[qm9]')"
    return out


def _norms(ctx: EvalContext) -> dict[str, Mapping[str, Any]]:
    """``"point_cloud"`` / ``"molecule_graph"`` -> the first member normalisation of that kind in the run."""
    out: dict[str, Mapping[str, Any]] = {}
    for model in ctx.models.values():
        norm = getattr(model, "normalisation", None) or {}
        if "alphabet" in norm:
            out.setdefault("molecule_graph" if carries_bonds(norm) else "point_cloud", norm)
    return out


def _infos(ctx: EvalContext) -> dict[str, dict[str, Any]]:
    """Kind of member -> the settings that change its numbers (bond rule or bonds from the state, margins...)."""
    s, out = ctx.settings, {}
    for kind, norm in _norms(ctx).items():
        out[kind] = (graph_settings(s["margins"], norm, ctx.n_samples, s["valence_guard"]) if kind == "molecule_graph" else
                     settings(s["bonds"], s["margins"], norm["alphabet"], ctx.n_samples))
        out[kind].update(fingerprint=FINGERPRINT, properties_of=PROPERTIES_OF)
    return out


def _provenance(ctx: EvalContext) -> dict:
    """``provenance.json`` ``evaluation``: the settings that change the numbers (``settings``; with
    point-cloud and molecule-graph members in one run, the graphs' under ``graph_settings``), which
    reference source was asked for and used, and each reference-dependent metric's reference molecules."""
    s, infos = ctx.settings, _infos(ctx)
    out = {"settings": infos.get("point_cloud") or infos.get("molecule_graph")}
    if len(infos) > 1:
        out["graph_settings"] = infos["molecule_graph"]
    return {**out, "reference_source": source_info(s), **references(s)}


_LABELS = {"novelty_reference": "novelty", "fcd_reference": "FCD", "properties_png_reference": "properties.png"}


def reference_caveat(s: Mapping[str, Any]) -> str:
    """One line naming every reference; in bold, saying why, when ``auto`` fell back to the subset."""
    src, refs = source_info(s), references(s)
    named = "; ".join(f"{_LABELS[k]} against the {v}" for k, v in refs.items())
    if not src["fallback"]:
        return f"Reference molecules (`reference_source: {s['reference_source']}`): {named}."
    why = (" Novelty against a few thousand training molecules reads higher than against the full train split."
           if s["novelty"] else "")
    return (f"**`reference_source: auto` fell back to the shipped qm9_small subset because {src['why']}: {named}."
            f"{why} These numbers are not comparable with numbers measured on the full set.**")


def _caveats(ctx: EvalContext, metrics: pd.DataFrame) -> list[str]:
    out, infos = [reference_caveat(ctx.settings)], _infos(ctx)
    if "point_cloud" in infos:
        info = infos["point_cloud"]
        out.append(f"Molecules from 3-D atoms: bonds {info['bonds']} (margins {info['margins_pm']} pm), hydrogens "
                   f"{info['hydrogens']}; validity: {info['validity']}; diversity: 1 − mean Tanimoto, Morgan r=2, "
                   f"2048 bits.")
    if "molecule_graph" in infos:
        info = infos["molecule_graph"]
        out.append(f"Molecule-graph members are judged by the bonds they drew: {info['bonds']}, never inferred from "
                   f"distances; no valence guard (an atom above its valence makes the sample invalid); validity: "
                   f"{info['validity']}. `geometry_agrees`: share of valid molecules whose bond orders the EDM distance "
                   f"rule (margins {info['margins_pm']} pm) recovers from their own coordinates; "
                   f"`connectivity_agrees`: share whose bonded pairs it recovers.")
    if any(i["hydrogens"] == "implicit" for i in infos.values()):
        out.append("Hydrogens are implicit: RDKit fills open valences, so validity is more lenient than the EDM "
                   "protocol's (explicit H) and atom / molecule stability are not defined.")
    return out


def _check(ctx: EvalContext) -> None:
    """Before sampling: ``evaluation.bonds: rdkit`` infers bonds from distances, which molecule-graph
    members never need (their bonds are in the state)."""
    if ctx.settings["bonds"] == "rdkit" and "molecule_graph" in _norms(ctx):
        graphs = [n for n, m in ctx.models.items() if carries_bonds(getattr(m, "normalisation", None) or {})]
        fail("evaluation.bonds", f"rdkit infers bonds from distances (explicit hydrogens), but members {graphs} "
                                 f"carry their bonds in the state and are judged by them; use edm (the default)")


BASE_NOTES = ("`validity`: share of samples whose molecule sanitises in RDKit; `uniqueness`: distinct valid SMILES / "
              "valid; `novelty`: distinct valid SMILES absent from the training split / distinct valid; `connected`: "
              "share made of one fragment; `diversity`: 1 − mean pairwise Tanimoto of distinct valid molecules; "
              "`<prop>_hit`: share within the target's tolerance (invalid samples count as misses); "
              "`joint_hits_distinct`: distinct valid molecules within every target's tolerance; properties are "
              "those of the largest fragment, the molecule in the `smiles` column")
NOTES = (BASE_NOTES + " and the `.smi` file. Molecule-graph members: "
         "`geometry_agrees` / `connectivity_agrees`: share of valid molecules whose bond orders / bonded pairs the EDM "
         "distance rule recovers from their coordinates; with `valence_guard`, `validity_guarded` / `connected_guarded` "
         "judge each sample after its over-valent atoms' least certain bonds are lowered (`guarded_share`: share of "
         "samples the guard changed), beside the unguarded numbers.")

EVALUATOR = Evaluator(
    evaluate=_evaluate, parse=parse_evaluation, check=_check, notes=NOTES, caveats=_caveats, figure=_figure,
    provenance=_provenance,
    metric_columns=("validity", "uniqueness", "valid_and_unique", "novelty", "connected", "geometry_agrees",
                    "connectivity_agrees", "validity_guarded", "connected_guarded", "guarded_share", "atom_stability",
                    "mol_stability", "diversity", "joint_hit", "joint_hits_distinct", "fcd"),
    sample_columns=("smiles", "n_atoms", "fragments", "geometry_agrees", "connectivity_agrees", "bonds_lowered",
                    "valid_guarded", "fragments_guarded", "smiles_guarded", "atom_stability", "mol_stable"),
    headline=("validity", "uniqueness", "novelty", "connected", "geometry_agrees", "diversity", "atom_stability",
              "mol_stability", "joint_hit"))
