"""Training workflows: YAML -> net, data, schedule, :class:`TrainConfig` -> ``train`` -> results folder.

Schema (``?`` = optional, default after ``=``)::

    name: str                     # required, [A-Za-z0-9_.-]+; results go to <output>/<name>/
    description?: str = ""
    seed?: int = 0                # network init (lightning.seed_everything) and every training draw
    output?: str = results
    checkpoint_dir?: str = <output>/<name>/checkpoint   # e.g. models/images/<name>
    init_from?: str               # a checkpoint folder to fine-tune: same architecture, schedule and
                                  # normalisation (refused otherwise); its sha256 goes into the card
    sweep?: {key: [v1, v2, ...]}  # one run per combination (product); key = a top-level field or a
                                  # dotted path (data.n); "{key}" in any string is replaced by the
                                  # value (a string that is exactly "{key}" takes the value's type)
    schedule?: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    architecture:                 # required; molfuse.nets.build(name, config)
      name: str                   # a registered architecture, e.g. mlp
      config?: {...} = {}         # e.g. {dim: 2, hidden: 128, depth: 3, num_classes: 0}
    data:                         # required; kinds: molfuse.datasets.register_dataset_kind
      kind: gaussian_mixture_samples
      means: [[x, y], ...]; covs: [...]; weights?: [...]; n: int; seed?: 0; labels?: false
    train?:                       # TrainConfig fields except seed (the top-level seed is used)
      {steps: 2000, batch_size: 128, lr: 0.001, ema_decay: 0.999, cond_drop_prob: 0.0,
       num_workers: 0, log_every: 50, checkpoint_every: 500, device: cpu|cuda|auto,
       t_min: 0.001, grad_clip: 1.0, val_fraction: 0.0, threads: null}

The results folder ``<output>/<name>/`` holds config.yaml, provenance.json, metrics.csv (one
row: final losses, speed), training_log.csv (the merged CSV logs: one row per logged step),
loss_curve.png, summary.md, the resumable ``last.ckpt`` and ``logs/``; the shipped
checkpoint (model.safetensors + card.json) goes to ``checkpoint_dir``. Rerunning the same
workflow resumes it; raising ``train.steps`` trains further.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import pandas as pd
import torch
import yaml

from .campaign.checks import REQUIRED, _fail, _fields, _int, _name
from .campaign.files import _atomic, _jsonable, _write_text
from .campaign.report import _git_state, _machine, _now, _sha256
from .campaign.spec import _parse_schedule, _read, build_schedule
from .checkpoints import CARD_FILE, WEIGHTS_FILE, read_card
from .errors import WorkflowError
from .datasets import _DATASET_KINDS, check_data_spec
from .datasets import ensure_registered as _known
from .nets import architectures, build
from .training import TrainConfig, train

__all__ = ["TrainWorkflow", "TrainResult", "load_train_workflow", "train_from_workflow", "train_sweep", "expand_sweep"]


LICENCE = "weights: MIT (as molfuse); training data: see data.source_description"

_TOP = {"name": REQUIRED, "description": "", "seed": 0, "output": "results", "checkpoint_dir": None,
        "init_from": None, "schedule": None, "architecture": REQUIRED, "data": REQUIRED, "train": None}


def expand_sweep(source: str | Path | Mapping) -> list[dict]:
    """The training workflows a (possibly swept) workflow stands for, as raw dicts.

    ``sweep: {data.n: [16, 64], seed: [0, 1]}`` gives four workflows (the product, in the
    order written); each gets the values at those paths and ``"{data.n}"`` / ``"{seed}"``
    replaced in every string (names, checkpoint folders). Without ``sweep``: ``[workflow]``.
    """
    raw = dict(_read(source))
    sweep = raw.pop("sweep", None)
    if sweep is None:
        return [raw]
    if not isinstance(sweep, Mapping) or not sweep:
        _fail("sweep", f"expected a non-empty mapping key -> list of values, got {sweep!r}")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            _fail(f"sweep.{key}", f"expected a non-empty list of values, got {values!r}")
        if str(key).split(".")[0] not in _TOP or str(key).split(".")[0] == "sweep":
            _fail(f"sweep.{key}", f"not a workflow field; top-level fields: {', '.join(k for k in _TOP if k != 'sweep')}")
    out = []
    for combo in itertools.product(*sweep.values()):
        values = dict(zip(map(str, sweep), combo))
        wf = _substitute(copy.deepcopy(raw), values)
        for key, v in values.items():
            *parents, leaf = key.split(".")
            node = wf
            for i, part in enumerate(parents):
                if not isinstance(node.get(part), dict):
                    _fail(f"sweep.{key}", f"{'.'.join(parents[:i + 1])} is not a mapping in the workflow")
                node = node[part]
            node[leaf] = v
        out.append(wf)
    names = [str(w.get("name")) for w in out]
    if len(set(names)) < len(names):
        _fail("name", f"a sweep needs a name that differs per run, e.g. 'run_n{{data.n}}'; got {names[0]!r} twice")
    return out


def _substitute(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        for key, v in values.items():
            if node == "{" + key + "}":
                return v
            node = node.replace("{" + key + "}", str(v))
    return node


@dataclass(frozen=True)
class TrainWorkflow:
    """A validated training workflow; :meth:`to_config` is the resolved ``config.yaml``."""

    name: str
    description: str
    seed: int
    output: str
    checkpoint_dir: str
    init_from: str | None
    schedule: dict
    architecture: dict
    data: dict
    train: TrainConfig

    @property
    def folder(self) -> Path:
        return Path(self.output) / self.name

    def to_config(self) -> dict:
        train = {k: v for k, v in asdict(self.train).items() if k != "seed"}
        return {"name": self.name, "description": self.description, "seed": self.seed, "output": self.output,
                "checkpoint_dir": self.checkpoint_dir, "init_from": self.init_from, "schedule": dict(self.schedule),
                "architecture": self.architecture, "data": self.data, "train": train}


@dataclass
class TrainResult:
    """What a training run leaves: its folder, the checkpoint folder, the card, metrics."""

    folder: Path
    checkpoint: Path
    card: dict
    metrics: pd.DataFrame


def load_train_workflow(source: str | Path | Mapping, output: str | Path | None = None,
                        device: str | None = None) -> TrainWorkflow:
    """Parse and validate a training workflow (YAML path or dict); ``output`` / ``device``
    override the file. Raises WorkflowError naming the first offending field."""
    raw = _read(source)
    if isinstance(raw, Mapping) and raw.get("sweep") is not None:
        _fail("sweep", "a swept workflow stands for several runs: use train_sweep (molfuse train does)")
    top = _fields(raw, "", _TOP)
    if output is not None:
        top["output"] = str(output)
    name = _name(top["name"], "name")
    arch = _fields(top["architecture"], "architecture", {"name": REQUIRED, "config": {}})
    if not _known(architectures, arch["name"]):
        _fail("architecture.name", f"unknown architecture {arch['name']!r}; registered: {', '.join(architectures())}")
    if not isinstance(arch["config"], Mapping):
        _fail("architecture.config", f"expected a mapping, got {arch['config']!r}")
    data = check_data_spec(top["data"], "data")
    train = top["train"] or {}
    if isinstance(train, Mapping) and "seed" in train:
        _fail("train.seed", "set the seed at the top level (seed: ...); it seeds the net and the training")
    if isinstance(train, Mapping) and device is not None:
        train = {**train, "device": device}
    out = str(top["output"])
    return TrainWorkflow(
        name=name, description=str(top["description"] or ""), seed=_int(top["seed"], "seed", 0),
        output=out, checkpoint_dir=str(top["checkpoint_dir"] or Path(out) / name / "checkpoint"),
        init_from=None if top["init_from"] is None else str(top["init_from"]),
        schedule=_parse_schedule(top["schedule"] or {}), architecture={"name": arch["name"], "config": dict(arch["config"])},
        data=data, train=TrainConfig.from_dict(train, "train", seed=top["seed"]))




def train_from_workflow(source: str | Path | Mapping, output: str | Path | None = None, device: str | None = None,
                        progress: bool = True, verbose: bool = True, rebuild: str | None = None) -> TrainResult:
    """Validate a training workflow, train (or resume), and write its results folder.

    Args:
        source: a training workflow YAML file or the same content as a dict.
        output, device: override ``output`` and ``train.device``.
        progress: lightning's progress bar; verbose: print what is written where.
        rebuild: the command that rebuilds this checkpoint, for its card (default
            ``molfuse train <source>`` when ``source`` is a file).
    """
    say = print if verbose else (lambda *a, **k: None)
    started, t0 = _now(), time.perf_counter()
    if rebuild is None and not isinstance(source, Mapping):
        rebuild = f"molfuse train {source}"
    wf = load_train_workflow(source, output=output, device=device)
    schedule = build_schedule(wf.schedule)
    kind = wf.data["kind"]
    try:
        dataset, description, norm = _DATASET_KINDS[kind].builder({k: v for k, v in wf.data.items() if k != "kind"})
    except (ValueError, TypeError) as e:
        raise e if isinstance(e, WorkflowError) else WorkflowError(f"data ({kind}): {e}") from None
    L.seed_everything(wf.seed, verbose=False)
    try:
        net = build(wf.architecture["name"], wf.architecture["config"])
    except (ValueError, TypeError) as e:
        raise WorkflowError(f"architecture.config: {wf.architecture['name']} rejects {wf.architecture['config']}: {e}") from None
    init = _init_from(wf, net, schedule, norm) if wf.init_from else None
    fresh = not (wf.folder / "last.ckpt").exists()
    if fresh:
        _write_config(wf)
    say(f"molfuse: training {wf.name} ({wf.architecture['name']}, {sum(p.numel() for p in net.parameters())} "
        f"parameters, {len(dataset)} samples) -> {wf.folder}{'' if fresh else ' (resuming)'}")
    ckpt = train(net, dataset, schedule, wf.train, wf.folder, checkpoint_dir=wf.checkpoint_dir, progress=progress,
                 card_extra={"name": wf.name, "description": wf.description, "architecture": wf.architecture,
                             "data": description, "normalisation": norm, "init_from": init,
                             "licence": LICENCE, "rebuild": rebuild})
    _write_config(wf)
    card, _ = read_card(ckpt)
    log = _training_log(wf.folder)
    metrics = _metrics(wf, card, net, len(dataset))
    _atomic(wf.folder / "metrics.csv", lambda fh: metrics.to_csv(fh, index=False, float_format="%.6g"), text=True)
    _atomic(wf.folder / "training_log.csv", lambda fh: log.to_csv(fh, index=False, float_format="%.6g"), text=True)
    picture = _loss_curve(wf.folder, log)
    prov = _provenance(wf, card, ckpt, started, time.perf_counter() - t0)
    _write_text(wf.folder / "provenance.json", json.dumps(_jsonable(prov), indent=2) + "\n")
    _write_text(wf.folder / "summary.md", _summary(wf, card, metrics, picture))
    say(f"molfuse: checkpoint {ckpt} ({WEIGHTS_FILE} + {CARD_FILE}); results {wf.folder} (summary.md, metrics.csv)")
    return TrainResult(wf.folder, Path(ckpt), card, metrics)


def train_sweep(source: str | Path | Mapping, output: str | Path | None = None, device: str | None = None,
                progress: bool = True, verbose: bool = True) -> list[TrainResult]:
    """:func:`train_from_workflow` for each run of a swept workflow (see :func:`expand_sweep`),
    in order; each run resumes on its own. A workflow without ``sweep`` is one run."""
    runs = expand_sweep(source)
    for wf in runs:  # validate every run before training any
        load_train_workflow(wf, output=output, device=device)
    out = []
    for i, wf in enumerate(runs):
        if verbose and len(runs) > 1:
            print(f"molfuse: sweep run {i + 1}/{len(runs)}: {wf['name']}")
        rebuild = None if isinstance(source, Mapping) else f"molfuse train {source}"
        out.append(train_from_workflow(wf, output=output, device=device, progress=progress, verbose=verbose,
                                       rebuild=rebuild))
    return out


def _init_from(wf: TrainWorkflow, net: torch.nn.Module, schedule: Any, norm: Mapping[str, Any]) -> dict:
    """Copy the weights of the checkpoint ``wf.init_from`` into ``net`` (fine-tuning) after
    checking it was trained in the same convention; returns its card entry."""
    from .checkpoints import CheckpointError, load_model

    try:
        src = load_model(wf.init_from)
    except CheckpointError as e:
        raise WorkflowError(f"init_from: {e}") from None
    card = src.card
    mismatch = [what for what, a, b in (
        ("architecture", {"name": card["architecture"]["name"], "config": card["architecture"]["config"]},
         json.loads(json.dumps(wf.architecture))),
        ("schedule", card["schedule"], schedule.config()),
        ("normalisation", {k: card["normalisation"].get(k) for k in norm}, dict(norm))) if a != b]
    if mismatch:
        raise WorkflowError(f"init_from: {wf.init_from} differs from this workflow in {', '.join(mismatch)}; "
                            "fine-tuning needs the same architecture, schedule and normalisation")
    net.load_state_dict(src.state_dict(), strict=True)
    return {"path": wf.init_from, "name": card.get("name"), "sha256": card["weights"]["sha256"],
            "steps": card.get("steps")}


def _write_config(wf: TrainWorkflow) -> None:
    _write_text(wf.folder / "config.yaml", yaml.safe_dump(_jsonable(wf.to_config()), sort_keys=False, allow_unicode=True))


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
    cols = ["step"] + [c for c in ("train_loss", "val_loss_ema") if c in log] + ["session"]
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
    ax.set(xlabel="step", ylabel="denoising loss (per coordinate)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic(folder / "loss_curve.png", lambda fh: fig.savefig(fh, format="png", dpi=100))
    return "loss_curve.png"


def _provenance(wf: TrainWorkflow, card: dict, ckpt: Path, started: str, wall: float) -> dict:
    from . import __version__

    files = [{"path": str(ckpt / f), "sha256": _sha256(ckpt / f)} for f in (WEIGHTS_FILE, CARD_FILE)]
    return {"molfuse_version": __version__, "git": _git_state(), "workflow": wf.name, "folder": str(wf.folder.resolve()),
            "started": started, "finished": _now(), "wall_time_s": wall, "seeds": {
                "workflow": wf.seed, "rule": "net init: lightning.seed_everything(seed); step k draws (batch, t, eps, "
                "label dropout) from derive_seed(seed, 'data', epoch) / derive_seed(seed, 'train', k)"},
            "session": card.get("session"), "checkpoint": str(ckpt), "checkpoints": files, "schedule": wf.schedule,
            "architecture": wf.architecture, "data": card.get("data"), "normalisation": card.get("normalisation"),
            "train": asdict(wf.train), "final_losses": card.get("final_losses"),
            "machine": _machine(torch.device("cuda" if wf.train.device != "cpu" and torch.cuda.is_available() else "cpu"))}


def _summary(wf: TrainWorkflow, card: dict, metrics: pd.DataFrame, picture: str | None) -> str:
    from .evaluation.vectors import markdown_table

    t, s = wf.train, card.get("session", {})
    lines = [f"# {wf.name} — training", ""] + ([wf.description.strip(), ""] if wf.description else [])
    lines += [f"- `{wf.architecture['name']}` {json.dumps(wf.architecture['config'])}, prediction "
              f"`{card['prediction']}`, schedule {json.dumps(wf.schedule)}.",
              f"- Data: `{wf.data['kind']}`; normalisation x_model = {card['normalisation']['scale']} x_data + "
              f"{card['normalisation']['shift']}.",
              f"- {card['steps']} Adam steps (lr {t.lr}, batch {t.batch_size}), EMA decay {t.ema_decay}, "
              f"label dropout {t.cond_drop_prob}, t ~ U[{t.t_min}, 1], seed {wf.seed}; this session "
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
