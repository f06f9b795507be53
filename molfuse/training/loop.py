"""``train``: run lightning on a :class:`~.module.DiffusionModule`, resumably, and ship the EMA weights.

``train(net, data, schedule, config, out_dir)`` runs ``config.steps`` optimiser steps of
:func:`molfuse.losses.denoising_loss`, keeps an EMA copy of the weights and writes them with
:func:`~.checkpoints.save_checkpoint`. Every random draw of step k (the batch, t, eps, the
classifier-free dropout) derives from ``(seed, k)``, so a run resumed from
``out_dir/last.ckpt`` ends with the same weights as an uninterrupted one.

With ``config.devices × config.num_nodes > 1`` the run is Lightning DDP: every process draws
the same global batch and its noise and trains on its slice (:meth:`DiffusionModule.shard_loss`);
at the end the processes compare digests of their weights, and only global rank 0 writes
``last.ckpt``, the logs and the shipped checkpoint (the card records the world size).
"""

from __future__ import annotations

import json
import pickle
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from ..base.io import jsonable
from ..base.provenance import config_diff
from ..base.seeds import derive_seed
from ..convert import prediction_of
from ..errors import WorkflowError
from ..nets import build
from ..schedules import Schedule
from ..spaces import space_from_config
from .checkpoints import check_modality_card, check_sizes, check_state, save_checkpoint
from .config import RESUMABLE, TrainConfig, recorded
from .data import StateDataset, as_state_dataset, check_states, data_source, split
from .module import DiffusionModule, LastCheckpoint, RankAgreement, StepBatches

__all__ = ["train", "final_losses", "resume_step"]


def train(net: nn.Module, dataset: Any, schedule: Schedule, config: TrainConfig, out_dir: str | Path,
          card_extra: Mapping[str, Any] | None = None, checkpoint_dir: str | Path | None = None,
          progress: bool = True, objective: nn.Module | None = None) -> Path | None:
    """Train ``net`` on ``dataset`` and ship its EMA weights; resume from ``out_dir/last.ckpt``.

    ``out_dir`` receives ``last.ckpt`` (lightning's resumable state: weights, EMA, optimiser,
    loop counters; loaded back with ``weights_only=True``, never shipped) and
    ``logs/version_<i>/metrics.csv`` (one CSV log per session). Rerunning with a larger
    ``config.steps`` continues from the saved step; any other change of the run (data,
    architecture, hyper-parameters) is refused.

    Args:
        net: network built by ``molfuse.nets.build(name, config)``.
        dataset: a :class:`~.data.StateDataset`, a :class:`~molfuse.plugins.TrainingData` or
            ``TensorDataset(x0[, labels])``; states in model space, in the dtype of the net.
        schedule: the noising convention.
        config: :class:`~.config.TrainConfig`.
        out_dir: folder of the resumable state and logs.
        card_extra: card entries: ``modality`` (required), ``architecture`` ({name, config},
            unless the net has an ``architecture`` attribute), ``space``, ``data``,
            ``normalisation``, ``conditioning`` (its ``kind``), ``name``, ...
        checkpoint_dir: where the shipped checkpoint goes (default ``out_dir/checkpoint``).
        progress: show lightning's progress bar and model summary.
        objective: another loss than denoising (e.g. :class:`molfuse.fusion.Distillation`); the
            data's ``cond`` then goes to it as is (style indices of a distillation), and the
            card's ``objective`` entry (from ``card_extra``) joins the resume fingerprint.

    Returns:
        The checkpoint folder (``model.safetensors`` + ``card.json``); None on the processes of a
        multi-process run other than global rank 0.

    Raises:
        DataError: states with NaN / inf or absurdly large values for ``schedule``, or of another
            shape than ``card_extra["shape"]`` (:func:`~.data.check_states`), before any training.
        ConventionError: masks that do not fit the states, or a card ``node_counts`` that does not
            fit the shape.
        CheckpointError: the card's modality refuses the card (e.g. molecules: more atoms than
            the normalisation's ``max_atoms``).
        WorkflowError: the processes of a multi-process run end with different weights.
    """
    out_dir = Path(out_dir)
    if config.world_size > 1 and objective is not None:
        raise WorkflowError("train.devices / num_nodes: training on several processes supports the denoising "
                            "objective only; train a distillation on one process")
    card = dict(card_extra or {})
    arch = card.pop("architecture", None) or getattr(net, "architecture", None)
    if not isinstance(arch, Mapping) or "name" not in arch:
        raise ValueError("train needs the architecture as card_extra={'architecture': {'name': ..., 'config': ...}}")
    if not card.get("modality"):
        raise ValueError("train needs card_extra['modality']: the modality that owns the checkpoint")
    arch = {"name": arch["name"], "config": dict(arch.get("config") or {})}
    check_state(build(arch["name"], arch["config"]), net.state_dict(), f"the net given to train ({arch['name']})")
    data = as_state_dataset(dataset)
    _check_dtype(net, data)
    card.setdefault("space", {"kind": "euclidean"})
    space = space_from_config(card["space"])
    space.check(data.x.shape, data.mask)
    check_states(data.x, data.mask, schedule, data_source(card.get("data")), card.get("shape"))
    card.setdefault("shape", list(data.x.shape[1:]))
    check_sizes(card, space)  # the card's node_counts and its modality's entries: refused now, not when shipping
    check_modality_card({"normalisation": {}, "conditioning": {"kind": "none"}, **card, "architecture": arch}, "card")
    data, null = _conditioning(net, data, config) if objective is None else (data, None)
    kind = "none"
    if objective is not None:
        kind = (card.get("conditioning") or {}).get("kind", "none")
    elif data.cond is not None:
        default = "properties" if data.cond.is_floating_point() else "class_label"
        kind = (card.get("conditioning") or {}).get("kind") or default
    card["conditioning"] = {"kind": kind, "null_cond": _card_value(null), "cond_drop_prob": config.cond_drop_prob}
    train_set, val_set = split(data, config.val_fraction, config.seed)
    fingerprint = json.loads(json.dumps(jsonable({
        "architecture": arch, "schedule": schedule.config(), "prediction": prediction_of(net), "space": card["space"],
        "data": card.get("data"), "normalisation": card.get("normalisation"), "n_train": len(train_set),
        "conditioning": card["conditioning"], "init_from": card.get("init_from"),
        "train": {k: v for k, v in recorded(config).items() if k not in RESUMABLE},
        **({"objective": card.get("objective")} if objective is not None else {})})))
    last = out_dir / "last.ckpt"
    start = resume_step(last, fingerprint, config.steps)
    L.seed_everything(derive_seed(config.seed, "global", start) % 2**32, verbose=False)  # e.g. dropout layers
    module = DiffusionModule(net, schedule, config.lr, config.ema_decay, config.cond_drop_prob, null, config.t_min,
                             config.seed, config.log_every, space, t_power=config.t_power, objective=objective,
                             cooldown=config.cooldown)
    loader = DataLoader(train_set, sampler=StepBatches(len(train_set), config.batch_size, config.seed, start),
                        batch_size=None, num_workers=config.num_workers)
    val_loader = DataLoader(val_set, batch_size=config.batch_size) if val_set is not None else None
    agreement = RankAgreement()
    trainer = _trainer(config, out_dir, [LastCheckpoint(last, config.checkpoint_every, fingerprint), agreement],
                       val_loader is not None, progress)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 with torch 2.13
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads or threads)
        try:
            trainer.fit(module, loader, val_loader, ckpt_path=last if start else None, weights_only=True)
        finally:
            torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    if trainer.interrupted or trainer.global_step < config.steps:  # Ctrl-C: lightning returns instead of raising
        raise WorkflowError(f"training stopped at step {trainer.global_step} of {config.steps}"
                            f"{' (interrupted)' if trainer.interrupted else ''}; nothing was shipped. {last} "
                            "holds the last saved step: rerun the same command to resume")
    if not trainer.is_global_zero:  # the other processes of a DDP run: rank 0 writes everything
        return None
    if agreement.identical is False:
        raise WorkflowError(f"the {trainer.world_size} training processes ended with different weights "
                            f"(digests {agreement.digests}); nothing was shipped")
    done = trainer.global_step - start
    folder = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoint"
    session = {"resumed_from_step": start, "steps": done, "wall_time_s": wall, "steps_per_s": done / wall if done else None,
               **({"world_size": trainer.world_size, "ranks_identical": agreement.identical}
                  if trainer.world_size > 1 else {})}
    if not done:  # a finished run rerun: nothing trained, so the shipped card keeps the session that trained it
        session = _earlier_session(folder, arch, trainer.global_step, recorded(config)) or session
    card.update(architecture=arch, prediction=prediction_of(net), schedule=schedule.config(), seed=config.seed,
                steps=trainer.global_step, training=recorded(config),
                final_losses=final_losses(module, train_set, val_set, config,
                                           max_samples=4096 if objective is None else 1024),
                session=session)
    shipped = module.ema if config.ship_weights == "ema" else module.net.eval()
    return save_checkpoint(folder, shipped, card, storage=config.save_dtype)


def _earlier_session(folder: Path, arch: Mapping, steps: int, training: Mapping) -> dict | None:
    """The ``session`` of the card already in ``folder`` if it is this run at this step, else None."""
    try:
        old = json.loads((folder / "card.json").read_text())
    except (OSError, ValueError):
        return None
    same = lambda t: {k: v for k, v in (t or {}).items() if k not in RESUMABLE}  # noqa: E731
    if (not isinstance(old, dict) or old.get("steps") != steps or old.get("architecture") != json.loads(json.dumps(arch))
            or same(old.get("training")) != same(json.loads(json.dumps(jsonable(training))))):
        return None
    return old.get("session") if isinstance(old.get("session"), dict) else None


def _trainer(config: TrainConfig, out_dir: Path, callbacks: list[Callback], validate: bool,
             progress: bool) -> L.Trainer:
    """``config.devices`` × ``num_nodes`` processes (DDP when more than one), ``config.steps`` steps,
    CSV logs under ``out_dir/logs``, our own resumable saves."""
    many = config.world_size > 1
    return L.Trainer(
        accelerator=_accelerator(config.device), devices=config.devices, num_nodes=config.num_nodes,
        strategy="ddp" if many else "auto", max_steps=config.steps, max_epochs=-1,
        logger=CSVLogger(str(out_dir), name="logs"), callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=progress, log_every_n_steps=config.log_every,
        gradient_clip_val=config.grad_clip, num_sanity_val_steps=0, val_check_interval=config.checkpoint_every,
        check_val_every_n_epoch=None, limit_val_batches=None if validate else 0, use_distributed_sampler=False,
        default_root_dir=str(out_dir))


def resume_step(last: Path, fingerprint: dict, steps: int) -> int:
    """The step saved in ``last`` (0 when absent) after checking it is this run.

    Raises:
        WorkflowError: ``last`` belongs to another run, is ahead of ``steps``, or holds pickled
            objects a weights-only load refuses (molfuse never unpickles code).
    """
    if not last.is_file():
        return 0
    try:  # our own file (see train); weights_only keeps even it from running code on load
        saved = torch.load(last, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise WorkflowError(f"{last} cannot be resumed: a weights-only load refuses it ({why}). molfuse never unpickles "
                            "code: it was not written by `molfuse train`, or it is damaged. Delete it to start over "
                            "from step 0, or use another output folder.") from None
    old = saved.get("molfuse", {}).get("fingerprint") if isinstance(saved, dict) else None
    step = int(saved["global_step"]) if isinstance(saved, dict) and "global_step" in saved else 0
    if old != fingerprint and old == _without_cooldown(fingerprint, step):
        old = fingerprint  # a constant-rate run resumed into a cooldown that starts at or after its step: same past
    if old != fingerprint:
        diffs = config_diff(old or {}, fingerprint)
        raise WorkflowError(f"{last} holds another training run ({'; '.join(diffs[:6])}); resume only changes "
                            f"{', '.join(RESUMABLE)}. Use another output folder or delete it to start over.")
    if step > steps:
        raise WorkflowError(f"{last} is already at step {step} > steps = {steps}; raise steps or use another folder")
    return step


def _without_cooldown(fingerprint: dict, step: int) -> dict | None:
    """The fingerprint of the same run at a constant rate, if its cooldown starts at or after ``step``."""
    train = dict(fingerprint.get("train") or {})
    start = train.get("cooldown_start")
    if start is None or start < step:
        return None
    for k in ("cooldown_start", "cooldown_steps", "cooldown_final"):
        train.pop(k, None)
    return {**fingerprint, "train": train}


def _card_value(v: Any) -> Any:
    """A null condition as JSON can hold it: NaN (the "no property" value) becomes the string "nan"."""
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, (list, tuple)):
        return [_card_value(x) for x in v]
    return v


def _check_dtype(net: nn.Module, data: StateDataset) -> None:
    dtype = next(net.parameters()).dtype
    if data.x.dtype != dtype:
        raise ValueError(f"data are {data.x.dtype} but the net's parameters are {dtype}; convert the data")


def _conditioning(net: nn.Module, data: StateDataset, config: TrainConfig) -> tuple[StateDataset, Any]:
    """The data the net trains on and its null condition.

    The null condition is ``net.null_cond``, else ``net.num_classes`` (molfuse nets keep one
    extra class row, index ``num_classes``, for "no label"). Conditions are used only by a
    conditional net (one with a null condition); an unconditional net ignores them.
    """
    null = getattr(net, "null_cond", None)
    if null is None and getattr(net, "num_classes", None):
        null = int(net.num_classes)
    has = data.cond is not None
    if config.cond_drop_prob > 0 and (not has or null is None):
        why = "the data have no conditions" if not has else "the net is not conditional (no null condition)"
        raise WorkflowError(f"train.cond_drop_prob: classifier-free dropout ({config.cond_drop_prob}) needs conditioned "
                            f"data and a conditional net, but {why}; set it to 0 or add conditions")
    return (data.without_cond() if has and null is None else data), null


def _accelerator(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise WorkflowError("train.device: cuda requested but torch.cuda.is_available() is False; use cpu or auto")
    return {"cpu": "cpu", "cuda": "gpu"}.get(device, "gpu" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def final_losses(module: DiffusionModule, train_set: StateDataset, val_set: StateDataset | None,
                 config: TrainConfig, max_samples: int = 4096) -> dict:
    """Mean :func:`denoising_loss` (per degree of freedom; no condition dropout), or the objective's
    loss, of the EMA and raw weights on up to ``max_samples`` training (and validation) samples,
    fixed draws (a distillation evaluates every teacher too, so it uses fewer)."""
    dev = torch.device("cuda" if _accelerator(config.device) == "gpu" else "cpu")
    module.to(dev).eval()
    out = {}
    for name, data in (("train", train_set), ("val", val_set)):
        if data is None:
            continue
        data = Subset(data, range(min(len(data), max_samples)))
        for which, net in (("ema", module.ema), ("raw", module.net)):
            total, g = 0.0, module.generator("final", name)
            for batch in DataLoader(data, batch_size=config.batch_size):
                batch = {k: v.to(dev) for k, v in batch.items()}
                total += module.batch_loss(net, batch, g, dropout=False).sum().item()
            out[f"{which}_{name}_loss"] = total / len(data)
    module.cpu()
    return out
