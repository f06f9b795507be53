"""Training: one thin LightningModule calling the pure loss, EMA weights, a resumable ``train``.

``train(net, dataset, schedule, config, out_dir)`` runs ``config.steps`` optimiser steps of
:func:`molfuse.losses.denoising_loss` with lightning, keeps an EMA copy of the weights, and
ships the EMA weights with :func:`molfuse.checkpoints.save_checkpoint`. Every random draw of
step k (the batch, t, eps, the classifier-free dropout) derives from ``(seed, k)``, so a run
resumed from ``out_dir/last.ckpt`` continues exactly where an uninterrupted run would be.

Training data kinds for workflows are an open registry in :mod:`molfuse.datasets`;
training from a YAML workflow (``molfuse train``) lives in :mod:`molfuse.train_workflow`.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset

try:
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import CSVLogger
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("molfuse.training needs lightning: pip install 'molfuse[train]'") from e

from .campaign.checks import _choice, _fail, _fields, _float, _int
from .campaign.files import _jsonable
from .campaign.registry import derive_seed
from .checkpoints import _check_state, save_checkpoint
from .convert import prediction_of
from .datasets import DatasetKind, register_dataset_kind  # noqa: F401  (re-exported)
from .errors import WorkflowError
from .losses import denoising_loss, drop_condition
from .nets import build
from .schedules import Schedule

__all__ = ["TrainConfig", "DiffusionModule", "StepBatches", "train", "final_losses", "DatasetKind",
           "register_dataset_kind", "train_from_workflow"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (the ``train:`` section of a training workflow).

    Attributes:
        steps: total optimiser steps (a resumed run continues up to this number).
        batch_size: samples per step; data are reshuffled each pass ("epoch").
        lr: Adam learning rate (constant).
        ema_decay: ``d`` of the bias-corrected EMA of the weights (see
            :meth:`DiffusionModule.update_ema`); the EMA weights are the ones shipped.
        cond_drop_prob: classifier-free dropout of labels to the net's null class.
        seed: every draw of step k derives from (seed, k).
        num_workers: DataLoader workers (0 suits in-memory tensors).
        log_every: steps between rows of the CSV log (mean training loss since the last row).
        checkpoint_every: steps between resumable ``last.ckpt`` saves (and validations).
        device: ``cpu``, ``cuda`` or ``auto``.
        t_min: times are drawn from ``U[t_min, 1]``.
        grad_clip: gradient-norm clipping (None: off).
        val_fraction: fraction of the data held out for an EMA validation loss.
        threads: torch CPU threads while training (None: torch's default). Small nets on
            a few cores run fastest with 1.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.0
    seed: int = 0
    num_workers: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    device: str = "cpu"
    t_min: float = 1e-3
    grad_clip: float | None = 1.0
    val_fraction: float = 0.0
    threads: int | None = None

    def __post_init__(self) -> None:
        _checked(asdict(self), "TrainConfig")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, path: str = "train", **override: Any) -> "TrainConfig":
        """Parse a mapping (numeric strings accepted); errors name ``path.<field>``."""
        spec = {f.name: f.default for f in fields(cls) if f.name not in override}
        return cls(**_checked({**_fields(d or {}, path, spec), **override}, path))


def _checked(v: dict, path: str) -> dict:
    """``v`` with numbers coerced and ranges checked (WorkflowError naming ``path.field``)."""
    at = lambda k: f"{path}.{k}"  # noqa: E731
    out = {k: _int(v[k], at(k), 1) for k in ("steps", "batch_size", "log_every", "checkpoint_every")}
    out.update(seed=_int(v["seed"], at("seed"), 0), num_workers=_int(v["num_workers"], at("num_workers"), 0),
               lr=_float(v["lr"], at("lr"), 0.0, open_lo=True), ema_decay=_float(v["ema_decay"], at("ema_decay"), 0.0, 1.0),
               cond_drop_prob=_float(v["cond_drop_prob"], at("cond_drop_prob"), 0.0, 1.0),
               t_min=_float(v["t_min"], at("t_min"), 0.0, 0.5), val_fraction=_float(v["val_fraction"], at("val_fraction"), 0.0, 0.5),
               device=_choice(v["device"], at("device"), ("cpu", "cuda", "auto")),
               grad_clip=None if v["grad_clip"] is None else _float(v["grad_clip"], at("grad_clip"), 0.0, open_lo=True),
               threads=None if v["threads"] is None else _int(v["threads"], at("threads"), 1))
    if out["ema_decay"] == 1.0:
        _fail(at("ema_decay"), "must be < 1 (an EMA with decay 1 never moves)")
    return out


class DiffusionModule(L.LightningModule):
    """The training step is :func:`denoising_loss` on a batch; an EMA copy follows the weights.

    Args:
        net: the network being trained (``prediction`` attribute; ``net(x, t[, cond=])``).
        schedule: the noising convention (MATH §1).
        lr: Adam learning rate.
        ema_decay: ``d`` of the bias-corrected EMA (:meth:`update_ema`), in [0, 1).
        cond_drop_prob: probability of replacing a label by ``null_cond`` (classifier-free).
        null_cond: the "no condition" value (e.g. the net's null class index).
        t_min: lower end of the training time window.
        seed: root of the per-step random draws.
        log_every: steps between rows of the logger (mean loss over those steps).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, lr: float = 1e-3, ema_decay: float = 0.999,
                 cond_drop_prob: float = 0.0, null_cond: Any = None, t_min: float = 1e-3, seed: int = 0,
                 log_every: int = 50):
        super().__init__()
        if cond_drop_prob > 0 and null_cond is None:
            raise ValueError("cond_drop_prob > 0 needs null_cond (the net's 'no condition' value)")
        self.net, self.schedule = net, schedule
        self.ema = copy.deepcopy(net).requires_grad_(False)  # used in eval mode only (validation, shipping)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # saved with the resumable state
        self.lr, self.ema_decay, self.cond_drop_prob, self.null_cond = lr, ema_decay, cond_drop_prob, null_cond
        self.t_min, self.seed, self.log_every = t_min, seed, log_every
        self._window: list[Tensor] = []  # training losses since the last log row
        self._val: list[Tensor] = []

    def generator(self, *parts: Any) -> torch.Generator:
        """A generator on this module's device seeded from ``(seed, *parts)``."""
        return torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, *parts))

    def batch_loss(self, net: nn.Module, batch: Any, g: torch.Generator, dropout: bool) -> Tensor:
        """(batch,) :func:`denoising_loss` of ``net`` on ``(x0,)`` or ``(x0, cond)``."""
        x0, cond = batch[0], (batch[1] if len(batch) > 1 else None)
        if cond is not None and dropout and self.cond_drop_prob > 0:
            cond = drop_condition(cond, self.cond_drop_prob, self.null_cond, g)
        return denoising_loss(net, x0, self.schedule, cond=cond, generator=g, t_min=self.t_min)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.batch_loss(self.net, batch, self.generator("train", self.global_step), dropout=True).mean()
        self.log("loss", loss, prog_bar=True, logger=False)
        self._window.append(loss.detach())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss = self.batch_loss(self.ema, batch, self.generator("val", batch_idx), dropout=False)
        self._val.append(loss.detach())

    def on_validation_epoch_end(self) -> None:
        if self._val:  # the EMA loss on the validation set, same draws every time
            mean = torch.cat(self._val).mean()
            self.log("val_loss_ema", mean, prog_bar=True, logger=False)
            if self.logger is not None:
                self.logger.log_metrics({"val_loss_ema": mean.item()}, step=self.global_step)
            self._val.clear()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema <- d_k ema + (1 - d_k) weights`` at the k-th update, ``d_k = d (1 - d^(k-1)) / (1 - d^k)``.

        This is the bias-corrected EMA (as Adam corrects its moments): after k updates
        ``ema = sum_j (1 - d) d^(k-j) weights_j / (1 - d^k)``, weights summing to 1 and none
        on the initial weights; ``d_k -> d`` for ``k >> 1 / (1 - d)``. Buffers are copied.
        """
        self.ema_updates += 1
        k, d = int(self.ema_updates), self.ema_decay
        dk = d * (1.0 - d ** (k - 1)) / (1.0 - d**k)
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1.0 - dk)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % self.log_every == 0 and self._window and self.logger is not None:
            mean = torch.stack(self._window).mean().item()
            self.logger.log_metrics({"train_loss": mean}, step=self.global_step)
            self._window.clear()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


class StepBatches(Sampler):
    """Index batches for steps ``start, start + 1, ...``; batch k depends only on (seed, k).

    A pass ("epoch") over the data is ``r = ceil(batch_size / n)`` seeded permutations
    concatenated and cut into ``floor(r n / batch_size)`` batches (drop-last).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0):
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.reps = -(-batch_size // n)
        self.per_epoch = self.reps * n // batch_size

    def __iter__(self) -> Iterator[Tensor]:
        k, epoch, perm = self.start, -1, None
        while True:
            e, i = divmod(k, self.per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(derive_seed(self.seed, "data", e))
                perm, epoch = torch.cat([torch.randperm(self.n, generator=g) for _ in range(self.reps)]), e
            yield perm[i * self.batch_size:(i + 1) * self.batch_size]
            k += 1


class _LastCheckpoint(Callback):
    """Saves lightning's resumable state to ``path`` atomically every ``every`` steps and at
    the last step, tagged with the run's fingerprint (what must match to resume)."""

    def __init__(self, path: Path, every: int, fingerprint: dict):
        self.path, self.every, self.fingerprint = path, every, fingerprint

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step >= trainer.max_steps:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)  # the full state: optimiser and loops too
            os.replace(tmp, self.path)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["molfuse"] = {"fingerprint": self.fingerprint}


def train(net: nn.Module, dataset: TensorDataset, schedule: Schedule, config: TrainConfig, out_dir: str | Path,
          card_extra: Mapping[str, Any] | None = None, checkpoint_dir: str | Path | None = None,
          progress: bool = True) -> Path:
    """Train ``net`` on ``dataset`` and ship its EMA weights; resume from ``out_dir/last.ckpt``.

    ``out_dir`` receives ``last.ckpt`` (lightning's resumable state: weights, EMA, optimiser,
    loop counters; written by this function and loaded back with ``weights_only=True``, so it is
    trusted only because we wrote it, never ship it) and ``logs/version_<i>/metrics.csv`` (one
    CSV log per session). Rerunning with a larger ``config.steps`` continues from the saved
    step; any other change of the run (data, architecture, hyper-parameters) is refused.

    Args:
        net: network built by ``molfuse.nets.build(name, config)``.
        dataset: ``TensorDataset(x0)`` or ``TensorDataset(x0, labels)``; x0 (n, ...) in model
            space, in the dtype of the net's parameters.
        schedule: the noising convention.
        config: :class:`TrainConfig`.
        out_dir: folder of the resumable state and logs.
        card_extra: card entries: ``architecture`` ({name, config}, required unless the net has
            an ``architecture`` attribute), ``data``, ``normalisation``, ``name``, ...
        checkpoint_dir: where the shipped checkpoint goes (default ``out_dir/checkpoint``).
        progress: show lightning's progress bar and model summary.

    Returns:
        The checkpoint folder (``model.safetensors`` + ``card.json``).
    """
    out_dir = Path(out_dir)
    card = dict(card_extra or {})
    arch = card.pop("architecture", None) or getattr(net, "architecture", None)
    if not isinstance(arch, Mapping) or "name" not in arch:
        raise ValueError("train needs the architecture as card_extra={'architecture': {'name': ..., 'config': ...}}")
    arch = {"name": arch["name"], "config": dict(arch.get("config") or {})}
    _check_state(build(arch["name"], arch["config"]), net.state_dict(), f"the net given to train ({arch['name']})")
    _check_data(net, dataset)
    dataset, null = _conditioning(net, dataset, config)
    card["conditioning"] = {"labels": len(dataset.tensors) == 2, "null_cond": null, "cond_drop_prob": config.cond_drop_prob}
    train_set, val_set = _split(dataset, config.val_fraction, config.seed)
    fingerprint = json.loads(json.dumps(_jsonable({
        "architecture": arch, "schedule": schedule.config(), "prediction": prediction_of(net),
        "data": card.get("data"), "normalisation": card.get("normalisation"), "n_train": len(train_set),
        "conditioning": card["conditioning"], "init_from": card.get("init_from"),
        "train": {k: v for k, v in asdict(config).items() if k not in _RESUMABLE}})))
    last = out_dir / "last.ckpt"
    start = _resume_step(last, fingerprint, config.steps)
    L.seed_everything(derive_seed(config.seed, "global", start) % 2**32, verbose=False)  # e.g. dropout layers
    module = DiffusionModule(net, schedule, config.lr, config.ema_decay, config.cond_drop_prob, null, config.t_min,
                             config.seed, config.log_every)
    loader = DataLoader(train_set, sampler=StepBatches(len(train_set), config.batch_size, config.seed, start),
                        batch_size=None, num_workers=config.num_workers)
    val_loader = DataLoader(val_set, batch_size=config.batch_size) if val_set is not None else None
    trainer = _trainer(config, out_dir, _LastCheckpoint(last, config.checkpoint_every, fingerprint),
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
    done = trainer.global_step - start
    card.update(architecture=arch, prediction=prediction_of(net), schedule=schedule.config(), seed=config.seed,
                steps=trainer.global_step, training=asdict(config),
                final_losses=final_losses(module, train_set, val_set, config),
                session={"resumed_from_step": start, "steps": done, "wall_time_s": wall,
                         "steps_per_s": done / wall if done else None})
    return save_checkpoint(Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoint", module.ema, card)


def _trainer(config: TrainConfig, out_dir: Path, saver: Callback, validate: bool, progress: bool) -> L.Trainer:
    """One device, ``config.steps`` steps, CSV logs under ``out_dir/logs``, our own resumable saves."""
    return L.Trainer(
        accelerator=_accelerator(config.device), devices=1, max_steps=config.steps, max_epochs=-1,
        logger=CSVLogger(str(out_dir), name="logs"), callbacks=[saver], enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=progress, log_every_n_steps=config.log_every,
        gradient_clip_val=config.grad_clip, num_sanity_val_steps=0, val_check_interval=config.checkpoint_every,
        check_val_every_n_epoch=None, limit_val_batches=None if validate else 0, use_distributed_sampler=False,
        default_root_dir=str(out_dir))


# Settings a resumed run may change; everything else must match the saved run.
_RESUMABLE = ("steps", "num_workers", "log_every", "checkpoint_every", "device", "threads")


def _resume_step(last: Path, fingerprint: dict, steps: int) -> int:
    """The step saved in ``last`` (0 when absent) after checking it is this run."""
    if not last.is_file():
        return 0
    # Our own file (see train); weights_only keeps even it from running code on load.
    saved = torch.load(last, map_location="cpu", weights_only=True)
    old = saved.get("molfuse", {}).get("fingerprint")
    if old != fingerprint:
        from .campaign.run import _diff

        diffs = _diff(old or {}, fingerprint)
        raise WorkflowError(f"{last} holds another training run ({'; '.join(diffs[:6])}); resume only changes "
                            f"{', '.join(_RESUMABLE)}. Use another output folder or delete it to start over.")
    step = int(saved["global_step"])
    if step > steps:
        raise WorkflowError(f"{last} is already at step {step} > steps = {steps}; raise steps or use another folder")
    return step


def _check_data(net: nn.Module, dataset: TensorDataset) -> None:
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) not in (1, 2) or len(dataset) == 0:
        raise ValueError("dataset must be a non-empty TensorDataset(x0) or TensorDataset(x0, labels)")
    x0 = dataset.tensors[0]
    dtype = next(net.parameters()).dtype
    if x0.dtype != dtype:
        raise ValueError(f"data are {x0.dtype} but the net's parameters are {dtype}; convert the data")


def _conditioning(net: nn.Module, dataset: TensorDataset, config: TrainConfig) -> tuple[TensorDataset, Any]:
    """The data the net trains on and its null condition.

    The null condition is ``net.null_cond``, else ``net.num_classes`` (molfuse nets keep one
    extra class row, index ``num_classes``, for "no label"). Labels are used only by a
    class-conditional net (one with a null condition); an unconditional net ignores them.
    """
    null = getattr(net, "null_cond", None)
    if null is None and getattr(net, "num_classes", None):
        null = int(net.num_classes)
    labelled = len(dataset.tensors) == 2
    if config.cond_drop_prob > 0 and (not labelled or null is None):
        why = "the data have no labels" if not labelled else "the net is not class-conditional (no null class)"
        raise WorkflowError(f"train.cond_drop_prob: classifier-free dropout ({config.cond_drop_prob}) needs labelled "
                            f"data and a class-conditional net, but {why}; set it to 0 or add classes")
    return (TensorDataset(dataset.tensors[0]) if labelled and null is None else dataset), null


def _split(dataset: TensorDataset, fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset | None]:
    """A seeded train / validation split (validation None when ``fraction`` is 0)."""
    n_val = round(fraction * len(dataset))
    if n_val == 0:
        return dataset, None
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(derive_seed(seed, "split")))
    return (TensorDataset(*(t[perm[n_val:]] for t in dataset.tensors)),
            TensorDataset(*(t[perm[:n_val]] for t in dataset.tensors)))


def _accelerator(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise WorkflowError("train.device: cuda requested but torch.cuda.is_available() is False; use cpu or auto")
    return {"cpu": "cpu", "cuda": "gpu"}.get(device, "gpu" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def final_losses(module: DiffusionModule, train_set: TensorDataset, val_set: TensorDataset | None,
                 config: TrainConfig, max_samples: int = 4096) -> dict:
    """Mean :func:`denoising_loss` (per coordinate; no condition dropout) of the EMA and raw
    weights on up to ``max_samples`` training (and validation) samples, fixed draws."""
    dev = torch.device("cuda" if _accelerator(config.device) == "gpu" else "cpu")
    module.to(dev).eval()
    out = {}
    for split, data in (("train", train_set), ("val", val_set)):
        if data is None:
            continue
        data = Subset(data, range(min(len(data), max_samples)))
        for which, net in (("ema", module.ema), ("raw", module.net)):
            total, g = 0.0, module.generator("final", split)
            for batch in DataLoader(data, batch_size=config.batch_size):
                total += module.batch_loss(net, [b.to(dev) for b in batch], g, dropout=False).sum().item()
            out[f"{which}_{split}_loss"] = total / len(data)
    module.cpu()
    return out


def train_from_workflow(source: str | Path | Mapping, **kwargs: Any):
    """Run a training workflow (YAML path or dict): see :func:`molfuse.train_workflow.train_from_workflow`."""
    from .train_workflow import train_from_workflow as run

    return run(source, **kwargs)
