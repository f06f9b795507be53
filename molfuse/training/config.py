"""The settings of one training run (the ``train:`` section of a training workflow)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields as dataclass_fields
from typing import Any, Mapping

from ..base.checks import as_choice, as_float, as_int, fail, fields

__all__ = ["TrainConfig", "RESUMABLE"]

# Settings a resumed run may change; everything else must match the saved run.
# The world size is one of them: every step's global batch and draws are the same for any number of processes.
RESUMABLE = ("steps", "num_workers", "log_every", "checkpoint_every", "device", "threads", "save_dtype", "ship_weights",
             "devices", "num_nodes")


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
        t_power: ``p``: times ``t_min + (1 - t_min) u^p``, ``u ~ U[0, 1]`` (1: uniform; 2 or 3 put
            more steps at small t, where a Cα chain's bond lengths are set).
        grad_clip: gradient-norm clipping (None: off).
        val_fraction: fraction of the data held out for an EMA validation loss.
        threads: torch CPU threads while training (None: torch's default). Small nets on
            a few cores run fastest with 1.
        cooldown_start: step at which the rate starts to fall (None: constant ``lr``); see
            :class:`~.module.DiffusionModule` ``cooldown``.
        cooldown_steps: length of the half-cosine fall.
        cooldown_final: the rate at its end, as a fraction of ``lr``.
        save_dtype: storage of the shipped weights, ``float32`` or ``float16`` / ``bfloat16``
            (half the size; cast back on load). Training itself is unchanged.
        ship_weights: ``ema`` (default) or ``raw``: which weights the checkpoint gets. After a
            cooldown the raw weights are already averaged by the falling rate, while an EMA of
            decay d still carries ~1/(1-d) steps from before it.
        devices: processes per node (Lightning DDP; gloo on CPU, NCCL on GPUs). Each step's
            ``batch_size`` is the *global* batch: every process draws it and the noise of all of
            it from (seed, k) and trains on its own ``batch_size / world`` slice, so the run
            follows the single-process one up to the order of floating-point sums.
        num_nodes: machines (world size = ``devices × num_nodes``).
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
    t_power: float = 1.0
    grad_clip: float | None = 1.0
    val_fraction: float = 0.0
    threads: int | None = None
    cooldown_start: int | None = None
    cooldown_steps: int = 1000
    cooldown_final: float = 0.0
    save_dtype: str = "float32"
    ship_weights: str = "ema"
    devices: int = 1
    num_nodes: int = 1

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def cooldown(self) -> tuple[int, int, float] | None:
        """``(start, steps, final)`` for :class:`~.module.DiffusionModule`, or None."""
        return None if self.cooldown_start is None else (self.cooldown_start, self.cooldown_steps, self.cooldown_final)

    def __post_init__(self) -> None:
        _checked(asdict(self), "TrainConfig")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, path: str = "train", **override: Any) -> "TrainConfig":
        """Parse a mapping (numeric strings accepted); errors name ``path.<field>``."""
        spec = {f.name: f.default for f in dataclass_fields(cls) if f.name not in override}
        return cls(**_checked({**fields(d or {}, path, spec), **override}, path))


def recorded(config: "TrainConfig") -> dict:
    """The config as cards and resume fingerprints record it: ``t_power`` only when not the default
    1 (uniform t) and the cooldown only when there is one, so checkpoints trained before the
    options existed keep their cards and resume."""
    d = asdict(config)
    if d.get("t_power") == 1.0:
        d.pop("t_power")
    if d.get("save_dtype") == "float32":
        d.pop("save_dtype")
    if d.get("ship_weights") == "ema":
        d.pop("ship_weights")
    if d.get("devices") == 1 and d.get("num_nodes") == 1:  # one process: cards as before the option
        d.pop("devices")
        d.pop("num_nodes")
    if d.get("cooldown_start") is None:  # constant rate: cards and fingerprints as before the option
        for k in ("cooldown_start", "cooldown_steps", "cooldown_final"):
            d.pop(k, None)
    return d


def _checked(v: dict, path: str) -> dict:
    """``v`` with numbers coerced and ranges checked (WorkflowError naming ``path.field``)."""
    at = lambda k: f"{path}.{k}"  # noqa: E731
    out = {k: as_int(v[k], at(k), 1) for k in ("steps", "batch_size", "log_every", "checkpoint_every")}
    out.update(seed=as_int(v["seed"], at("seed"), 0), num_workers=as_int(v["num_workers"], at("num_workers"), 0),
               lr=as_float(v["lr"], at("lr"), 0.0, open_lo=True), ema_decay=as_float(v["ema_decay"], at("ema_decay"), 0.0, 1.0),
               cond_drop_prob=as_float(v["cond_drop_prob"], at("cond_drop_prob"), 0.0, 1.0),
               t_min=as_float(v["t_min"], at("t_min"), 0.0, 0.5),
               t_power=as_float(v["t_power"], at("t_power"), 0.1, 10.0), val_fraction=as_float(v["val_fraction"], at("val_fraction"), 0.0, 0.5),
               device=as_choice(v["device"], at("device"), ("cpu", "cuda", "auto")),
               grad_clip=None if v["grad_clip"] is None else as_float(v["grad_clip"], at("grad_clip"), 0.0, open_lo=True),
               threads=None if v["threads"] is None else as_int(v["threads"], at("threads"), 1),
               cooldown_start=None if v["cooldown_start"] is None else as_int(v["cooldown_start"], at("cooldown_start"), 0),
               cooldown_steps=as_int(v["cooldown_steps"], at("cooldown_steps"), 1),
               cooldown_final=as_float(v["cooldown_final"], at("cooldown_final"), 0.0, 1.0),
               save_dtype=as_choice(v["save_dtype"], at("save_dtype"), ("float32", "float16", "bfloat16")),
               ship_weights=as_choice(v["ship_weights"], at("ship_weights"), ("ema", "raw")),
               devices=as_int(v["devices"], at("devices"), 1), num_nodes=as_int(v["num_nodes"], at("num_nodes"), 1))
    if out["ema_decay"] == 1.0:
        fail(at("ema_decay"), "must be < 1 (an EMA with decay 1 never moves)")
    world = out["devices"] * out["num_nodes"]
    if out["batch_size"] % world:
        fail(at("batch_size"), f"{out['batch_size']} does not split into {world} equal per-process slices "
             f"(devices × num_nodes = {world}); use a multiple of {world}")
    return out
