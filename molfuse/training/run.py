"""``molfuse train``: a training workflow -> data, net, ``train`` -> checkpoint and results folder.

The results folder ``<output>/<name>/`` holds config.yaml, provenance.json, metrics.csv (one
row: final losses, speed), training_log.csv (the merged CSV logs: one row per logged step),
loss_curve.png, summary.md, the resumable ``last.ckpt`` and ``logs/``; the shipped
checkpoint (model.safetensors + card.json) goes to ``checkpoint_dir``. Rerunning the same
workflow resumes it; raising ``train.steps`` trains further. The schema is in
:mod:`molfuse.training.workflow`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import pandas as pd
import torch
import yaml

from .. import plugins
from ..base.io import FolderLock, atomic_write, jsonable, sha256_file, write_json, write_text
from ..base.provenance import VERSION, git_state, machine, now
from ..errors import CheckpointError, DataError, WorkflowError
from ..base.tables import markdown_table
from ..nets import build
from ..plugins import TrainingData
from ..schedules import schedule_from_config
from ..spaces import node_counts_by_condition
from .checkpoints import CARD_FILE, WEIGHTS_FILE, load_model, read_card
from .config import recorded
from .data import build_data, check_states, data_source
from .loop import train
from .workflow import TrainWorkflow, expand_sweep, load_train_workflow

__all__ = ["TrainResult", "train_from_workflow", "train_sweep", "LICENCE"]

LICENCE = "weights: MIT (as molfuse); training data: see data.source_description"


@dataclass
class TrainResult:
    """What a training run leaves: its folder, the checkpoint folder, the card, metrics."""

    folder: Path
    checkpoint: Path
    card: dict
    metrics: pd.DataFrame


def process_rank(config: Any) -> int:
    """Global rank of this process in a multi-process run (0 for one process), from the
    launcher's environment (``RANK``, ``SLURM_PROCID`` or ``NODE_RANK × devices + LOCAL_RANK``)."""
    if config.world_size == 1:
        return 0
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return int(env.get("NODE_RANK", "0") or 0) * config.devices + int(env.get("LOCAL_RANK", "0") or 0)


def train_from_workflow(source: str | Path | Mapping, output: str | Path | None = None, device: str | None = None,
                        progress: bool = True, verbose: bool = True, rebuild: str | None = None,
                        devices: int | None = None, num_nodes: int | None = None) -> TrainResult | None:
    """Validate a training workflow, train (or resume), and write its results folder.

    Args:
        source: a training workflow YAML file or the same content as a dict.
        output, device: override ``output`` and ``train.device``.
        progress: lightning's progress bar; verbose: print what is written where.
        rebuild: the command that rebuilds this checkpoint, for its card (default
            ``molfuse train <source>`` when ``source`` is a file).
        devices, num_nodes: override ``train.devices`` / ``train.num_nodes`` (Lightning DDP
            when their product exceeds 1; launch as Lightning does: the command is re-run
            for the other local processes, or one process per task under SLURM).

    Returns:
        The run's folders, card and metrics; None on the processes other than global rank 0.
    """
    say = print if verbose else (lambda *a, **k: None)
    started, t0 = now(), time.perf_counter()
    if rebuild is None and not isinstance(source, Mapping):
        rebuild = f"molfuse train {source}"
    wf = load_train_workflow(source, output=output, device=device, devices=devices, num_nodes=num_nodes)
    schedule = schedule_from_config(wf.schedule)
    data = build_data(wf.data)
    try:  # NaN / inf, absurd sizes: refused before any folder is written
        check_states(data.x, data.mask, schedule, f"data ({data_source(data.description)})")
    except DataError as e:
        raise WorkflowError(str(e)) from None
    modality = plugins.data_kind_modality(wf.data["kind"])
    L.seed_everything(wf.seed, verbose=False)
    try:
        net = build(wf.architecture["name"], wf.architecture["config"])
    except (ValueError, TypeError) as e:
        raise WorkflowError(f"architecture.config: {wf.architecture['name']} rejects {wf.architecture['config']}: {e}") from None
    init = _init_from(wf, net, schedule, data, modality) if wf.init_from else None
    card_extra = lambda extra: {  # noqa: E731
        "name": wf.name, "description": wf.description, "modality": modality, "architecture": wf.architecture,
        "space": data.space, "shape": list(data.x.shape[1:]),
        **({"node_counts": data.node_counts} if data.node_counts else {}), **_conditional_sizes(data),
        "data": data.description, "normalisation": data.normalisation, "conditioning": {"kind": data.condition},
        "init_from": init, "licence": LICENCE, "rebuild": rebuild, **extra}
    if process_rank(wf.train):  # another process of a multi-process run: it trains its slice, rank 0 writes
        objective, dataset, extra = _objective(wf, net, schedule, data, modality, lambda *a, **k: None)
        train(net, dataset, schedule, wf.train, wf.folder, checkpoint_dir=wf.checkpoint_dir, progress=False,
              objective=objective, card_extra=card_extra(extra))
        return None
    with FolderLock(wf.folder, "training"):
        fresh = not (wf.folder / "last.ckpt").exists()
        if fresh:
            _write_config(wf)
        objective, dataset, extra = _objective(wf, net, schedule, data, modality, say)
        world = wf.train.world_size
        say(f"molfuse: training {wf.name} ({wf.architecture['name']}, {sum(p.numel() for p in net.parameters())} "
            f"parameters, {_count(dataset)} samples, modality {modality}) -> {wf.folder}{'' if fresh else ' (resuming)'}"
            + (f"; {world} processes (DDP), {wf.train.batch_size // world} of each global batch of "
               f"{wf.train.batch_size} per process" if world > 1 else ""))
        ckpt = train(net, dataset, schedule, wf.train, wf.folder, checkpoint_dir=wf.checkpoint_dir, progress=progress,
                     objective=objective, card_extra=card_extra(extra))
        _write_config(wf)
        card, _ = read_card(ckpt)
        log = _training_log(wf.folder)
        metrics = _metrics(wf, card, net, _count(dataset))
        atomic_write(wf.folder / "metrics.csv", lambda fh: metrics.to_csv(fh, index=False, float_format="%.6g"), text=True)
        atomic_write(wf.folder / "training_log.csv", lambda fh: log.to_csv(fh, index=False, float_format="%.6g"),
                     text=True)
        picture = _loss_curve(wf.folder, log)
        write_json(wf.folder / "provenance.json", _provenance(wf, card, ckpt, started, time.perf_counter() - t0))
        write_text(wf.folder / "summary.md", _summary(wf, card, metrics, picture))
    say(f"molfuse: checkpoint {ckpt} ({WEIGHTS_FILE} + {CARD_FILE}); results {wf.folder} (summary.md, metrics.csv)")
    return TrainResult(wf.folder, Path(ckpt), card, metrics)


def _objective(wf: TrainWorkflow, net: torch.nn.Module, schedule: Any, data: TrainingData, modality: str,
               say: Any) -> tuple[Any, Any, dict]:
    """``(objective, training data, card entries)``: denoising on ``data`` unless the workflow
    names another ``objective`` (e.g. ``distill``), whose kind builds all three."""
    if not wf.objective:
        return None, data, {}
    kind = plugins.objective(wf.objective["kind"])
    spec = {k: v for k, v in wf.objective.items() if k != "kind"}
    threads = torch.get_num_threads()
    torch.set_num_threads(wf.train.threads or threads)  # its set-up may sample (teacher_samples): as training
    try:
        return kind.build(spec, net=net, schedule=schedule, data=data, modality=modality, seed=wf.seed,
                          folder=wf.folder, say=say, config=wf.train)
    finally:
        torch.set_num_threads(threads)


def _count(data: Any) -> int:
    """Training states of a TrainingData (``x``) or a dataset (a distillation's teacher samples)."""
    return len(data.x) if isinstance(data, TrainingData) else len(data)


def _conditional_sizes(data: TrainingData) -> dict:
    """``node_counts_by_condition`` for the card: size histograms per whole-number property value
    (a prompted sampler draws n from p(n | c), MATH §6); empty for other data."""
    if data.mask is None or data.cond is None or data.condition != "properties":
        return {}
    by_cond = node_counts_by_condition(data.mask, data.cond)
    return {"node_counts_by_condition": by_cond} if by_cond else {}


def train_sweep(source: str | Path | Mapping, output: str | Path | None = None, device: str | None = None,
                progress: bool = True, verbose: bool = True, devices: int | None = None,
                num_nodes: int | None = None) -> list[TrainResult | None]:
    """:func:`train_from_workflow` for each run of a swept workflow (see :func:`expand_sweep`),
    in order; each run resumes on its own. A workflow without ``sweep`` is one run."""
    runs = expand_sweep(source)
    for wf in runs:  # validate every run before training any
        load_train_workflow(wf, output=output, device=device, devices=devices, num_nodes=num_nodes)
    out = []
    for i, wf in enumerate(runs):
        if verbose and len(runs) > 1:
            print(f"molfuse: sweep run {i + 1}/{len(runs)}: {wf['name']}")
        rebuild = None if isinstance(source, Mapping) else f"molfuse train {source}"
        out.append(train_from_workflow(wf, output=output, device=device, progress=progress, verbose=verbose,
                                       rebuild=rebuild, devices=devices, num_nodes=num_nodes))
    return out


def _init_from(wf: TrainWorkflow, net: torch.nn.Module, schedule: Any, data: TrainingData, modality: str) -> dict:
    """Copy the weights of the checkpoint ``wf.init_from`` into ``net`` (fine-tuning) after
    checking it was trained in the same convention and on states of the data's shape; returns
    its card entry."""
    try:
        src = load_model(wf.init_from)
    except CheckpointError as e:
        raise WorkflowError(f"init_from: {e}") from None
    card, norm = src.card, data.normalisation
    resized = None
    try:  # e.g. 12-node clouds on a model of 9 nodes
        check_states(data.x, data.mask, schedule, f"data ({data_source(data.description)})", card["shape"])
    except DataError as e:
        # a net whose weights do not depend on the node count (relative positions only) may
        # continue on longer states; any other net is refused here, naming both shapes
        if not _resizable(src, net, card["shape"], list(data.x.shape[1:])):
            raise WorkflowError(f"init_from: {wf.init_from}: {e}") from None
        resized = list(card["shape"])
    fresh = wf.init_fresh
    arch = ({"name": card["architecture"]["name"]}, {"name": wf.architecture["name"]}) if fresh else (
        {"name": card["architecture"]["name"], "config": card["architecture"]["config"]},
        json.loads(json.dumps(wf.architecture)))
    mismatch = [what for what, a, b in (
        ("modality", card["modality"], modality),
        ("architecture", *arch),
        ("schedule", card["schedule"], schedule.config()),
        ("normalisation", {k: card["normalisation"].get(k) for k in norm}, dict(norm))) if a != b]
    if mismatch:
        raise WorkflowError(f"init_from: {wf.init_from} differs from this workflow in {', '.join(mismatch)}; "
                            "fine-tuning needs the same modality, architecture, schedule and normalisation")
    if fresh:
        _load_all_but(net, src.state_dict(), fresh, wf.init_from)
    else:
        net.load_state_dict(src.state_dict(), strict=True)
    return {"path": wf.init_from, "name": card.get("name"), "sha256": card["weights"]["sha256"],
            "steps": card.get("steps"), **({"shape": resized} if resized else {}),
            **({"fresh": list(fresh), "architecture": card["architecture"]} if fresh else {})}


def _load_all_but(net: torch.nn.Module, theirs: Mapping[str, torch.Tensor], fresh: tuple, parent: str) -> None:
    """Copy every weight of ``theirs`` into ``net`` except those under the module names ``fresh``;
    every other weight must exist on both sides with the same shape (WorkflowError naming them)."""
    def kept(key: str) -> bool:
        return not any(key == f or key.startswith(f + ".") for f in fresh)

    ours = net.state_dict()
    missing = sorted(k for k in ours if kept(k) and k not in theirs)
    extra = sorted(k for k in theirs if kept(k) and k not in ours)
    shapes = sorted(k for k in ours if kept(k) and k in theirs and ours[k].shape != theirs[k].shape)
    if not any(not kept(k) for k in ours):
        raise WorkflowError(f"init_fresh: {', '.join(fresh)} names no weight of this workflow's net")
    if missing or extra or shapes:
        parts = [f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" for what, keys in (
            ("not in the parent", missing), ("only in the parent", extra), ("of another shape", shapes)) if keys]
        raise WorkflowError(f"init_from: {parent}: beyond init_fresh ({', '.join(fresh)}) the weights differ ("
                            + "; ".join(parts) + ")")
    net.load_state_dict({k: v for k, v in theirs.items() if kept(k)}, strict=False)


def _resizable(src: torch.nn.Module, net: torch.nn.Module, shape: list, new_shape: list) -> bool:
    """Whether ``src`` (a checkpoint of one-sample ``shape``) can continue on states of
    ``new_shape``: the same trailing (per-node) dimensions, more nodes, and every weight of the
    new ``net`` of the same name and shape as the checkpoint's."""
    if len(shape) != len(new_shape) or shape[1:] != new_shape[1:] or new_shape[0] < shape[0]:
        return False
    theirs, ours = src.state_dict(), net.state_dict()
    return theirs.keys() == ours.keys() and all(theirs[k].shape == ours[k].shape for k in ours)


def _write_config(wf: TrainWorkflow) -> None:
    write_text(wf.folder / "config.yaml", yaml.safe_dump(jsonable(wf.to_config()), sort_keys=False, allow_unicode=True))


def _training_log(folder: Path) -> pd.DataFrame:
    """The CSV logs of every session merged by step (a re-done step keeps its latest row)."""
    parts = []
    for i, path in enumerate(sorted((folder / "logs").glob("version_*/metrics.csv"),
                                    key=lambda p: int(p.parent.name.split("_")[-1]))):
        df = pd.read_csv(path)
        parts.append(df.assign(session=i))
    if not parts:
        return pd.DataFrame(columns=["step", "train_loss", "val_loss_ema", "session"])
    log = pd.concat(parts, ignore_index=True)
    extras = sorted(c for c in log if c.startswith("train_") and c != "train_loss")  # an objective's extra terms
    cols = ["step"] + [c for c in ("train_loss", "val_loss_ema") if c in log] + extras + ["session"]
    log = log[cols].groupby("step", as_index=False).last()  # a step re-done after a resume keeps its last row
    return log.sort_values("step").reset_index(drop=True)


def _metrics(wf: TrainWorkflow, card: dict, net: torch.nn.Module, n: int) -> pd.DataFrame:
    s = card.get("session", {})
    row = {"name": wf.name, "architecture": wf.architecture["name"], "parameters": sum(p.numel() for p in net.parameters()),
           "n_data": n, "steps": card["steps"], "batch_size": wf.train.batch_size, **card.get("final_losses", {}),
           "resumed_from_step": s.get("resumed_from_step"), "session_steps": s.get("steps"),
           "session_wall_time_s": s.get("wall_time_s"), "steps_per_s": s.get("steps_per_s")}
    return pd.DataFrame([row])


def _loss_curve(folder: Path, log: pd.DataFrame) -> str | None:
    if log.empty or "train_loss" not in log:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    tr = log.dropna(subset=["train_loss"])
    ax.plot(tr["step"], tr["train_loss"], lw=1, label="train (mean since last row, raw weights, with dropout)")
    if "val_loss_ema" in log:
        va = log.dropna(subset=["val_loss_ema"])
        ax.plot(va["step"], va["val_loss_ema"], "o-", ms=3, label="validation (EMA weights)")
    ax.set(xlabel="step", ylabel="denoising loss (per degree of freedom)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(folder / "loss_curve.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
    return "loss_curve.png"


def _provenance(wf: TrainWorkflow, card: dict, ckpt: Path, started: str, wall: float) -> dict:
    files = [{"path": str(ckpt / f), "sha256": sha256_file(ckpt / f)} for f in (WEIGHTS_FILE, CARD_FILE)]
    return {"molfuse_version": VERSION, "git": git_state(), "workflow": wf.name, "folder": str(wf.folder.resolve()),
            "started": started, "finished": now(), "wall_time_s": wall, "seeds": {
                "workflow": wf.seed, "rule": "net init: lightning.seed_everything(seed); step k draws (batch, t, eps, "
                "label dropout) from derive_seed(seed, 'data', epoch) / derive_seed(seed, 'train', k)"},
            "session": card.get("session"), "checkpoint": str(ckpt), "checkpoints": files, "schedule": wf.schedule,
            "architecture": wf.architecture, "data": card.get("data"), "normalisation": card.get("normalisation"),
            "train": recorded(wf.train), "final_losses": card.get("final_losses"),
            "machine": machine(torch.device("cuda" if wf.train.device != "cpu" and torch.cuda.is_available() else "cpu"))}


def _summary(wf: TrainWorkflow, card: dict, metrics: pd.DataFrame, picture: str | None) -> str:
    t, s = wf.train, card.get("session", {})
    lines = [f"# {wf.name} — training", ""] + ([wf.description.strip(), ""] if wf.description else [])
    lines += [f"- `{wf.architecture['name']}` {json.dumps(wf.architecture['config'])}, prediction "
              f"`{card['prediction']}`, schedule {json.dumps(wf.schedule)}.",
              f"- Data: `{wf.data['kind']}` (modality `{card['modality']}`, space {json.dumps(card['space'])}, "
              f"sample shape {card['shape']}); normalisation {json.dumps(card['normalisation'])}.",
              f"- {card['steps']} Adam steps (lr {t.lr}, batch {t.batch_size}), EMA decay {t.ema_decay}, "
              f"label dropout {t.cond_drop_prob}, t = {t.t_min} + (1 - {t.t_min}) u^{t.t_power}, u ~ U[0, 1], seed {wf.seed}; this session "
              f"{s.get('steps')} steps from step {s.get('resumed_from_step')}"
              + (f" at {s['steps_per_s']:.1f} steps/s." if s.get("steps_per_s") else "."),
              f"- Checkpoint (EMA weights): `{wf.checkpoint_dir}` — load with `molfuse.checkpoints.load_model`.",
              "", "## Metrics", "", markdown_table(metrics), "",
              "Losses: mean over coordinates of ||σ_t s(x_t, t) + ε||² (= ε-MSE for an ε-network), t ~ U[t_min, 1], "
              "fixed draws, no label dropout; a network that predicts 0 scores 1. `training_log.csv` has the curve.", ""]
    if picture:
        lines += ["## Loss curve", "", f"![loss curve]({picture})", ""]
    caveats = ["`last.ckpt` is lightning's resumable state (pickle-based format, loaded with weights_only); "
               "ship and share only the checkpoint folder (safetensors + card)."]
    if card["steps"] * (1 - t.ema_decay) < 3:
        caveats.append(f"steps × (1 − ema_decay) = {card['steps'] * (1 - t.ema_decay):.2g} < 3: the (bias-corrected) "
                       "EMA averages over most of the run, early weights included; compare ema_ and raw_ losses.")
    return "\n".join(lines + ["## Caveats", ""] + [f"- {c}" for c in caveats]) + "\n"
