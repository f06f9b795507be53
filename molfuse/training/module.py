"""The training step as lightning runs it: one thin LightningModule calling the pure loss.

:class:`DiffusionModule` computes :func:`molfuse.losses.denoising_loss` on a batch and keeps an
EMA copy of the weights; :class:`StepBatches` makes batch k depend on (seed, k) only, and
:class:`LastCheckpoint` saves lightning's resumable state, so a resumed run continues exactly
where an uninterrupted one would be. The loop that drives them is :func:`molfuse.training.train`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

try:
    import lightning as L
    from lightning.pytorch.callbacks import Callback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("training needs lightning: pip install 'molfuse[train]'") from e

from ..base.seeds import derive_seed
from ..errors import WorkflowError
from ..losses import denoising_loss, drop_condition, training_draws
from ..schedules import Schedule
from ..spaces import Space, resolve_space

__all__ = ["DiffusionModule", "StepBatches", "LastCheckpoint", "RankAgreement"]


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
        t_power: times ``t_min + (1 - t_min) u^p`` (see :func:`molfuse.losses.denoising_loss`).
        seed: root of the per-step random draws.
        log_every: steps between rows of the logger (mean loss over those steps).
        space: the state space of the data (MATH §6; default the net's, else Euclidean).
        objective: another loss instead of denoising, e.g. :class:`molfuse.fusion.Distillation`:
            a module ``objective(net, batch, generator, training) -> (per-sample loss, extra terms)``;
            its own parameters (a discriminator) are trained by the same optimiser and saved with
            the resumable state; the EMA follows ``net`` only.
        cooldown: ``(start, steps, final)``: the rate stays ``lr`` until step ``start``, then
            falls along a half cosine to ``final * lr`` over ``steps`` steps and stays there
            (a warmup-free "stable-decay" schedule). It is a function of the step only, so a
            constant-rate run can be resumed into a cooldown from any step ≤ ``start``.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, lr: float = 1e-3, ema_decay: float = 0.999,
                 cond_drop_prob: float = 0.0, null_cond: Any = None, t_min: float = 1e-3, seed: int = 0,
                 log_every: int = 50, space: Space | None = None, t_power: float = 1.0,
                 objective: nn.Module | None = None, cooldown: tuple[int, int, float] | None = None):
        super().__init__()
        if cond_drop_prob > 0 and null_cond is None:
            raise ValueError("cond_drop_prob > 0 needs null_cond (the net's 'no condition' value)")
        self.net, self.schedule = net, schedule
        self.ema = copy.deepcopy(net).requires_grad_(False)  # used in eval mode only (validation, shipping)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # saved with the resumable state
        self.lr, self.ema_decay, self.cond_drop_prob, self.null_cond = lr, ema_decay, cond_drop_prob, null_cond
        self.t_min, self.t_power, self.seed, self.log_every = t_min, t_power, seed, log_every
        self.space = resolve_space([net], space)
        self.objective, self.cooldown = objective, cooldown
        self._extras: dict[str, Tensor] = {}
        self._window: list[Tensor] = []  # training losses since the last log row
        self._extra_window: dict[str, list[Tensor]] = {}  # the objective's extra terms, likewise
        self._val: list[Tensor] = []

    def generator(self, *parts: Any) -> torch.Generator:
        """A generator on this module's device seeded from ``(seed, *parts)``."""
        return torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, *parts))

    def batch_loss(self, net: nn.Module, batch: Mapping[str, Tensor], g: torch.Generator, dropout: bool) -> Tensor:
        """(batch,) :func:`denoising_loss` (or the objective's loss) of ``net`` on a batch ``{x, mask?, cond?}``.
        The objective's extra terms of the last training call are kept in ``self._extras``."""
        if self.objective is not None:
            loss, self._extras = self.objective(net, batch, g, training=dropout)
            return loss
        cond = batch.get("cond")
        if cond is not None and dropout and self.cond_drop_prob > 0:
            cond = drop_condition(cond, self.cond_drop_prob, self.null_cond, g)
        return denoising_loss(net, batch["x"], self.schedule, cond=cond, generator=g, t_min=self.t_min, t_power=self.t_power,
                              mask=batch.get("mask"), space=self.space)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        g = self.generator("train", self.global_step)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            loss = self.batch_loss(self.net, batch, g, dropout=True).mean()
            logged = loss.detach()
        else:
            loss = self.shard_loss(batch, g, self.global_rank, world).mean()
            # the global batch's mean loss (the mean of equal slices' means), as one process logs it
            logged = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        self.log("loss", logged, prog_bar=True, logger=False)
        self._window.append(logged)
        for k, v in self._extras.items():
            self._extra_window.setdefault(k, []).append(v.detach())
        return loss + sum(self._extras.values()) if self._extras else loss

    def shard_loss(self, batch: Mapping[str, Tensor], g: torch.Generator, rank: int, world: int) -> Tensor:
        """This process's slice of the global batch's per-sample denoising loss.

        Every process holds the whole global batch and makes every draw of it (label dropout,
        times, noise) in the single-process order, then keeps rows ``[rank b, (rank + 1) b)``,
        ``b = batch / world``: the losses are the single-process ones, split.
        """
        if self.objective is not None:
            raise WorkflowError("training on several processes supports the denoising objective only; "
                                "train a distillation with devices: 1")
        x, mask, cond = batch["x"], batch.get("mask"), batch.get("cond")
        if x.shape[0] % world:
            raise WorkflowError(f"a batch of {x.shape[0]} does not split into {world} equal slices")
        if cond is not None and self.cond_drop_prob > 0:
            cond = drop_condition(cond, self.cond_drop_prob, self.null_cond, g)
        t, eps = training_draws(x, self.space, g, self.t_min, self.t_power, mask)
        b = x.shape[0] // world
        rows = slice(rank * b, (rank + 1) * b)
        part = lambda v: None if v is None else v[rows]  # noqa: E731
        return denoising_loss(self.net, x[rows], self.schedule, cond=part(cond), t=t[rows], eps=eps[rows],
                              mask=part(mask), space=self.space)

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

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): ``lr``, or the cooldown's."""
        if self.cooldown is None or step < self.cooldown[0]:
            return self.lr
        start, steps, final = self.cooldown
        frac = min(1.0, (step - start) / steps)
        return self.lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * frac)))

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(self.global_step)
        super().optimizer_step(epoch, batch_idx, optimizer, *args, **kwargs)
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
            extras = {f"train_{k}": torch.stack(v).mean().item() for k, v in self._extra_window.items() if v}
            self.logger.log_metrics({"train_loss": mean, **extras}, step=self.global_step)
            self._window.clear()
            self._extra_window.clear()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        extra = list(self.objective.parameters()) if self.objective is not None else []
        return torch.optim.Adam(list(self.net.parameters()) + extra, lr=self.lr)


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


class RankAgreement(Callback):
    """At the end of training every process hashes its raw and EMA weights; ``identical`` is
    whether all processes agree (None in a one-process run), ``digests`` the first 8 bytes of each."""

    def __init__(self) -> None:
        self.identical: bool | None = None
        self.digests: list[str] = []

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.world_size == 1:
            return
        h = hashlib.sha256()
        for t in (*module.net.state_dict().values(), *module.ema.state_dict().values()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        mine = torch.tensor([int.from_bytes(h.digest()[:7], "big")], dtype=torch.int64, device=module.device)
        every = trainer.strategy.all_gather(mine).reshape(-1).tolist()
        self.digests = [f"{d:014x}" for d in every]
        self.identical = len(set(every)) == 1


class LastCheckpoint(Callback):
    """Saves lightning's resumable state to ``path`` atomically every ``every`` steps and at
    the last step, tagged with the run's fingerprint (what must match to resume)."""

    def __init__(self, path: Path, every: int, fingerprint: dict):
        self.path, self.every, self.fingerprint = path, every, fingerprint

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step >= trainer.max_steps:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)  # the full state: optimiser and loops too
            if trainer.is_global_zero:  # every process takes part in the save; rank 0 writes the file
                os.replace(tmp, self.path)

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["molfuse"] = {"fingerprint": self.fingerprint}
