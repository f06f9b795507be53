"""``molfuse evaluate``: samples molfuse did not draw, judged as a workflow judges its own.

A user's files (an SDF or SMILES file, a folder of PDB / mmCIF files, a PNG folder or a ``.npy``
of images) go to their modality's :class:`~molfuse.plugins.FileJudge` with the settings a
workflow's ``evaluation:`` block takes (reference set, targets, diversity, proxies), parsed by
the same schema. Several inputs are compared side by side, one ``metrics.csv`` row each. The
results folder is a run's::

    <out>/<name>/
      evaluation.yaml     the settings, every default filled in
      per_sample.csv      input, id, index, valid, reason (why an item is bad), the judge's columns
      metrics.csv         one row per input: input, path, n, n_valid, the modality's metrics
      provenance.json     molfuse version and commit, inputs with their sha256, settings, reference sets
      summary.md          the table, what each column means, the caveats, the pictures
      samples/, *.png     the judge's pictures

It is written into a temporary folder beside it and moved into place at the end, so an
interrupted evaluation leaves nothing half-written; an existing folder is refused unless
``overwrite``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from .. import plugins
from ..base.checks import fail
from ..base.io import read_yaml, sha256_bytes, sha256_file, write_json, write_text
from ..base.provenance import VERSION, git_state, now
from ..base.tables import markdown_table, ordered_columns

__all__ = ["evaluate_samples", "EvaluateResult", "parse_inputs"]

FIRST = ("input", "id", "index", "valid", "reason")


@dataclass
class EvaluateResult:
    """The results folder and its two tables."""

    folder: Path
    metrics: pd.DataFrame
    per_sample: pd.DataFrame
    modality: str


def parse_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``[label=]path`` items -> (label, path); the label defaults to the file or folder name
    without its suffix. Labels must be distinct (they name rows and pictures)."""
    out: list[tuple[str, Path]] = []
    for item in inputs:
        text = str(item)
        label, path = text.split("=", 1) if "=" in text and not Path(text).exists() else ("", text)
        path = Path(path)
        label = label or (path.name if path.is_dir() else path.name.split(".")[0]) or "input"
        if not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
            fail(f"input {text}", f"label {label!r} may hold only letters, digits, '-', '_' and '.'")
        out.append((label, path))
    if not out:
        fail("inputs", "give at least one file or folder of samples")
    labels = [lab for lab, _ in out]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        fail("inputs", f"two inputs are both named {', '.join(twice)}; name them apart with label=path")
    return out


def _modality(name: str | None, inputs: list[tuple[str, Path]]) -> plugins.Modality:
    """The modality asked for, or the one whose file judge accepts every input."""
    if name is not None:
        m = plugins.modality(name)
        if m.files is None:
            can = [x.name for x in plugins.modalities() if x.files is not None]
            fail("--modality", f"{name} does not judge sample files; these do: {', '.join(can)}")
        for label, path in inputs:
            if not m.files.accepts(path):
                fail(f"input {label}", f"{path} is not one of what {name} reads ({', '.join(m.files.kinds)})")
        return m
    judges = [m for m in plugins.modalities() if m.files is not None]
    fits = [m for m in judges if all(m.files.accepts(p) for _, p in inputs)]
    if len(fits) == 1:
        return fits[0]
    kinds = "; ".join(f"{m.name}: {', '.join(m.files.kinds)}" for m in judges)
    if not fits:
        fail("inputs", f"no modality reads all of {', '.join(str(p) for _, p in inputs)} ({kinds}); "
                       "give --modality to see which input it refuses")
    fail("inputs", f"{', '.join(m.name for m in fits)} all read these inputs; choose one with --modality")
    raise AssertionError  # fail() raised


def _settings(m: plugins.Modality, evaluation: Mapping | str | Path | None) -> dict:
    """The evaluation settings: a mapping, or a YAML file holding either the ``evaluation:``
    block itself or a workflow with one; parsed by the modality's schema."""
    raw: Any = {} if evaluation is None else evaluation
    where = "evaluation"
    if isinstance(evaluation, (str, Path)):
        raw = read_yaml(evaluation)
        where = f"{evaluation}: evaluation"
        if isinstance(raw, Mapping) and "evaluation" in raw and ("methods" in raw or len(raw) == 1):
            raw = raw["evaluation"] or {}
    parse = m.evaluator.parse if m.evaluator is not None and m.evaluator.parse is not None else None
    return parse(raw, where) if parse is not None else dict(raw or {})


def _fingerprint(path: Path) -> dict:
    """An input's identity for provenance: a file's size and sha256; a folder's file count and the
    sha256 of its sorted (name, sha256) listing."""
    if path.is_file():
        return {"path": str(path), "kind": "file", "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = "\n".join(f"{p.relative_to(path)}\t{sha256_file(p)}" for p in files)
        return {"path": str(path), "kind": "folder", "files": len(files), "sha256": sha256_bytes(listing.encode())}
    return {"path": str(path), "kind": "missing"}


def evaluate_samples(inputs: Sequence[str | Path], modality: str | None = None,
                     evaluation: Mapping | str | Path | None = None, out: str | Path = "results/evaluate",
                     name: str | None = None, overwrite: bool = False,
                     say: Callable[[str], None] | None = None) -> EvaluateResult:
    """Judge each input with its modality's evaluator and write one results folder.

    Args:
        inputs: ``[label=]path`` items (files or folders); several are compared side by side.
        modality: e.g. ``"molecules"``; default: the one modality that reads every input.
        evaluation: the ``evaluation:`` settings (a mapping or a YAML file), as in a workflow.
        out, name: the folder is ``<out>/<name>`` (name: a timestamp by default).
        overwrite: replace an existing folder of that name (else it is refused).

    Raises:
        WorkflowError: an unknown modality, an input no modality reads, bad settings, an existing
            folder. A bad item inside an input is a row with its reason, not an error.
    """
    say = say or (lambda s: None)
    items = parse_inputs(inputs)
    m = _modality(modality, items)
    settings = _settings(m, evaluation)
    name = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(out) / name
    if folder.exists() and not overwrite:
        fail("--name", f"{folder} exists; choose another --name, or --overwrite to replace it")
    tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = _judge_all(m, items, settings, tmp, say)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EvaluateResult(folder, result[0], result[1], m.name)


def _judge_all(m: plugins.Modality, items: list[tuple[str, Path]], settings: dict, folder: Path,
               say: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    judge, started, t0 = m.files, now(), time.perf_counter()
    rows, tables, pictures = [], {}, []
    for label, path in items:
        t = time.perf_counter()
        ev = judge.judge(path, settings, folder, label)
        table = ev.table.reset_index(drop=True)
        table.insert(0, "input", label)
        table.insert(1, "id", [f"{label}-{i:06d}" for i in range(len(table))])
        if "index" not in table:
            table.insert(2, "index", range(len(table)))
        tables[label] = table
        pictures += ev.pictures
        valid = table["valid"].astype(bool)
        rows.append({"input": label, "path": str(path), "n": len(table), "n_valid": int(valid.sum()), **ev.row,
                     "wall_time_s": time.perf_counter() - t})
        say(f"{label}: {len(table)} items, {int(valid.sum())} valid ({time.perf_counter() - t:.1f} s)")
    figures = judge.figure(settings, folder, tables) if judge.figure is not None else []
    metrics = ordered_columns(pd.DataFrame(rows), ["input", "path", "n", "n_valid", *judge.metric_columns])
    per_sample = ordered_columns(pd.concat(list(tables.values()), ignore_index=True),
                                 [*FIRST, *judge.sample_columns])
    per_sample.to_csv(folder / "per_sample.csv", index=False)
    metrics.to_csv(folder / "metrics.csv", index=False)
    import yaml

    write_text(folder / "evaluation.yaml", yaml.safe_dump({"modality": m.name, "evaluation": settings},
                                                          sort_keys=False, allow_unicode=True))
    prov = {"molfuse": VERSION, "git": git_state(), "started": started, "finished": now(),
            "wall_time_s": time.perf_counter() - t0, "modality": m.name, "command": "molfuse evaluate",
            "inputs": {label: _fingerprint(path) for label, path in items}, "settings": settings,
            "evaluation": judge.provenance(settings) if judge.provenance is not None else {}}
    write_json(folder / "provenance.json", prov)
    caveats = judge.caveats(settings) if judge.caveats is not None else []
    write_text(folder / "summary.md", _summary(m.name, items, metrics, judge.notes, caveats, figures + pictures))
    return metrics, per_sample


def _summary(modality: str, items: list[tuple[str, Path]], metrics: pd.DataFrame, notes: str,
             caveats: list[str], pictures: list[str]) -> str:
    shown = metrics[[c for c in metrics if c not in ("path", "wall_time_s") and metrics[c].notna().any()]]
    lines = [f"# molfuse evaluate ({modality})", "",
             f"- {len(items)} input(s), judged by the {modality} evaluator on {now()} (molfuse {VERSION}); settings "
             "in `evaluation.yaml`, input hashes and reference sets in `provenance.json`.", ""]
    lines += [f"- `{label}`: `{path}`" for label, path in items]
    lines += ["", "## Metrics", "", markdown_table(shown), ""]
    if notes:
        lines += [notes, ""]
    bad = int((metrics["n"] - metrics["n_valid"]).sum())
    if bad:
        lines += [f"- {bad} item(s) are invalid; the `reason` column of `per_sample.csv` says why for each.", ""]
    lines += [f"- {c}" for c in caveats]
    if pictures:
        lines += ["", "## Pictures", ""] + [f"![{p}]({p})" for p in dict.fromkeys(pictures)]
    return "\n".join(lines).rstrip() + "\n"
