"""Training workflows as validated dataclasses: YAML -> :class:`TrainWorkflow` (and sweeps).

Schema (``?`` = optional, default after ``=``)::

    name: str                     # required, [A-Za-z0-9_.-]+; results go to <output>/<name>/
    description?: str = ""
    seed?: int = 0                # network init (lightning.seed_everything) and every training draw
    output?: str = results
    checkpoint_dir?: str = <output>/<name>/checkpoint   # e.g. models/images/<name>
    init_from?: str               # a checkpoint folder to fine-tune: same architecture, schedule and
                                  # normalisation (refused otherwise); its sha256 goes into the card
    init_fresh?: [str] = []       # with init_from: weights under these module names (e.g. prop_emb)
                                  # start from this workflow's initialisation, so the architecture's
                                  # config may differ there (a conditioning added to an
                                  # unconditional parent); every other weight is the parent's
    sweep?: {key: [v1, v2, ...]}  # one run per combination (product); key = a top-level field or a
                                  # dotted path (data.n); "{key}" in any string is replaced by the
                                  # value (a string that is exactly "{key}" takes the value's type)
    schedule?: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    architecture:                 # required; molfuse.nets.build(name, config)
      name: str                   # an architecture a modality registers, e.g. mlp, unet
      config?: {...} = {}         # e.g. {dim: 2, hidden: 128, depth: 3, num_classes: 0}
    data:                         # required; a data kind of a modality (molfuse.plugins), e.g.
      kind: gaussian_mixture_samples   # (vectors) or mnist_population (images); its own fields:
      means: [[x, y], ...]; covs: [...]; weights?: [...]; n: int; seed?: 0; labels?: false
    objective?:                   # another loss than denoising, e.g. the DMM distillation merge:
      kind: distill               # its fields: molfuse.campaign.distill (teachers, source, ...)
    train?:                       # TrainConfig fields except seed (the top-level seed is used)
      {steps: 2000, batch_size: 128, lr: 0.001, ema_decay: 0.999, cond_drop_prob: 0.0,
       num_workers: 0, log_every: 50, checkpoint_every: 500, device: cpu|cuda|auto,
       t_min: 0.001, t_power: 1.0, grad_clip: 1.0, val_fraction: 0.0, threads: null,
       cooldown_start: null, cooldown_steps: 1000, cooldown_final: 0.0,   # constant lr, or a
                                  # half-cosine fall from cooldown_start (resumable into it)
       save_dtype: float32,       # or float16 / bfloat16: shipped weights at half the size
       ship_weights: ema}         # or raw (after a cooldown)

The results folder ``<output>/<name>/`` holds config.yaml, provenance.json, metrics.csv (one
row: final losses, speed), training_log.csv (the merged CSV logs: one row per logged step),
loss_curve.png, summary.md, the resumable ``last.ckpt`` and ``logs/``; the shipped
checkpoint (model.safetensors + card.json) goes to ``checkpoint_dir``. Rerunning the same
workflow resumes it; raising ``train.steps`` trains further.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from .. import plugins
from ..base.checks import REQUIRED, as_int, as_name, fail, fields
from ..base.io import read_yaml
from ..nets.style import STYLE_ARCHITECTURE
from ..schedules import check_schedule_spec
from .config import TrainConfig, recorded
from .data import check_data_spec

__all__ = ["TrainWorkflow", "load_train_workflow", "expand_sweep", "TOP_FIELDS"]

TOP_FIELDS = {"name": REQUIRED, "description": "", "seed": 0, "output": "results", "checkpoint_dir": None,
        "init_from": None, "init_fresh": None, "schedule": None, "architecture": REQUIRED, "data": REQUIRED, "train": None,
        "objective": None}


def expand_sweep(source: str | Path | Mapping) -> list[dict]:
    """The training workflows a (possibly swept) workflow stands for, as raw dicts.

    ``sweep: {data.n: [16, 64], seed: [0, 1]}`` gives four workflows (the product, in the
    order written); each gets the values at those paths and ``"{data.n}"`` / ``"{seed}"``
    replaced in every string (names, checkpoint folders). Without ``sweep``: ``[workflow]``.
    """
    raw = read_yaml(source)
    if not isinstance(raw, Mapping):
        fail("", f"expected a mapping of fields, got {type(raw).__name__}")
    raw = dict(raw)
    sweep = raw.pop("sweep", None)
    if sweep is None:
        return [raw]
    if not isinstance(sweep, Mapping) or not sweep:
        fail("sweep", f"expected a non-empty mapping key -> list of values, got {sweep!r}")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            fail(f"sweep.{key}", f"expected a non-empty list of values, got {values!r}")
        if str(key).split(".")[0] not in TOP_FIELDS or str(key).split(".")[0] == "sweep":
            fail(f"sweep.{key}", f"not a workflow field; top-level fields: {', '.join(k for k in TOP_FIELDS if k != 'sweep')}")
    out = []
    for combo in itertools.product(*sweep.values()):
        values = dict(zip(map(str, sweep), combo))
        wf = _substitute(copy.deepcopy(raw), values)
        for key, v in values.items():
            *parents, leaf = key.split(".")
            node = wf
            for i, part in enumerate(parents):
                if not isinstance(node.get(part), dict):
                    fail(f"sweep.{key}", f"{'.'.join(parents[:i + 1])} is not a mapping in the workflow")
                node = node[part]
            node[leaf] = v
        out.append(wf)
    names = [str(w.get("name")) for w in out]
    if len(set(names)) < len(names):
        fail("name", f"a sweep needs a name that differs per run, e.g. 'run_n{{data.n}}'; got {names[0]!r} twice")
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
    objective: dict | None = None
    init_fresh: tuple = ()

    @property
    def folder(self) -> Path:
        return Path(self.output) / self.name

    def to_config(self) -> dict:
        train = {k: v for k, v in recorded(self.train).items() if k != "seed"}
        return {"name": self.name, "description": self.description, "seed": self.seed, "output": self.output,
                "checkpoint_dir": self.checkpoint_dir, "init_from": self.init_from,
                **({"init_fresh": list(self.init_fresh)} if self.init_fresh else {}), "schedule": dict(self.schedule),
                "architecture": self.architecture, "data": self.data, "train": train,
                **({"objective": self.objective} if self.objective else {})}


def load_train_workflow(source: str | Path | Mapping, output: str | Path | None = None,
                        device: str | None = None, devices: int | None = None,
                        num_nodes: int | None = None) -> TrainWorkflow:
    """Parse and validate a training workflow (YAML path or dict); ``output`` / ``device`` /
    ``devices`` / ``num_nodes`` override the file. Raises WorkflowError naming the first
    offending field."""
    raw = read_yaml(source)
    if isinstance(raw, Mapping) and raw.get("sweep") is not None:
        fail("sweep", "a swept workflow stands for several runs: use train_sweep (molfuse train does)")
    top = fields(raw, "", TOP_FIELDS)
    if output is not None:
        top["output"] = str(output)
    name = as_name(top["name"], "name")
    arch = fields(top["architecture"], "architecture", {"name": REQUIRED, "config": {}})
    if not isinstance(arch["name"], str):
        fail("architecture.name", f"expected an architecture name, got {arch['name']!r}")
    style = arch["name"] == STYLE_ARCHITECTURE  # a style student names its base architecture in config.base
    base = (arch["config"] or {}).get("base") if style and isinstance(arch["config"], Mapping) else None
    try:
        plugins.architecture(base.get("name") if isinstance(base, Mapping) else arch["name"])
    except plugins.MissingModalityError as e:
        fail("architecture.config.base.name" if style else "architecture.name", str(e))
    if not isinstance(arch["config"], Mapping):
        fail("architecture.config", f"expected a mapping, got {arch['config']!r}")
    data = check_data_spec(top["data"], "data")
    train = top["train"] or {}
    if isinstance(train, Mapping) and "seed" in train:
        fail("train.seed", "set the seed at the top level (seed: ...); it seeds the net and the training")
    if isinstance(train, Mapping):
        train = {**train, **{k: v for k, v in (("device", device), ("devices", devices), ("num_nodes", num_nodes))
                             if v is not None}}
    out = str(top["output"])
    return TrainWorkflow(
        name=name, description=str(top["description"] or ""), seed=as_int(top["seed"], "seed", 0),
        output=out, checkpoint_dir=str(top["checkpoint_dir"] or Path(out) / name / "checkpoint"),
        init_from=None if top["init_from"] is None else str(top["init_from"]),
        schedule=check_schedule_spec(top["schedule"]), architecture={"name": arch["name"], "config": dict(arch["config"])},
        data=data, train=TrainConfig.from_dict(train, "train", seed=top["seed"]),
        objective=_objective(top["objective"]), init_fresh=_init_fresh(top["init_fresh"], top["init_from"]))


def _init_fresh(spec: Any, init_from: Any) -> tuple:
    """``init_fresh`` as a tuple of module names (dotted, e.g. ``prop_emb``); needs ``init_from``."""
    if spec is None:
        return ()
    if not isinstance(spec, (list, tuple)) or not spec or not all(isinstance(v, str) and v for v in spec):
        fail("init_fresh", f"expected a list of module names (e.g. [prop_emb]), got {spec!r}")
    if init_from is None:
        fail("init_fresh", "names weights that do not come from the parent: it needs init_from")
    return tuple(v.rstrip(".") for v in spec)


def _objective(spec: Any) -> dict | None:
    """The ``objective`` section with its kind's defaults filled in (WorkflowError naming the field)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
        fail("objective.kind", f"expected a mapping with a kind (e.g. distill); got {spec!r}")
    try:
        kind = plugins.objective(spec["kind"])
    except plugins.UnknownNameError as e:
        fail("objective.kind", str(e))
    return fields(spec, "objective", {"kind": REQUIRED, **kind.fields})




