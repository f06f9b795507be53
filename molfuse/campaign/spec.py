"""The workflow as validated dataclasses (:func:`molfuse.campaign.parse.load_workflow` makes them)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..base.io import jsonable

__all__ = ["ModelSpec", "SamplerSpec", "MethodSpec", "Workflow", "comparable"]


def comparable(config: dict) -> dict:
    """What must match to resume a run folder: the resolved config but where the folder is, how
    many threads ran and the reports (they only read the metrics table)."""
    out = {k: v for k, v in config.items() if k not in ("output", "run_name", "reports")}
    out["sampler"] = {k: v for k, v in (out.get("sampler") or {}).items() if k != "threads"}
    return out


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    params: dict


@dataclass(frozen=True)
class SamplerSpec:
    steps: int = 500
    t_end: float = 1e-3
    chunk_size: int = 250
    device: str = "cpu"
    threads: int | None = None
    grid_power: float = 1.0
    denoise: bool = False


@dataclass(frozen=True)
class MethodSpec:
    name: str
    operator: str
    models: tuple[str, ...]
    options: dict


@dataclass(frozen=True)
class Workflow:
    """A validated workflow; :meth:`to_config` is the resolved ``config.yaml``.

    ``evaluation`` is the ``evaluation:`` mapping as given until the run knows the models'
    modality; the run replaces it by what that modality's evaluator resolved.
    """

    name: str
    seed: int
    output: str
    run_name: str
    description: str
    schedule: dict
    models: dict[str, ModelSpec]
    target: str | None
    n_samples: int
    sampler: SamplerSpec
    methods: tuple[MethodSpec, ...]
    evaluation: dict = field(default_factory=dict)
    reports: tuple[dict, ...] = ()

    @property
    def folder(self) -> Path:
        return Path(self.output) / self.name / self.run_name

    @property
    def config_sha256(self) -> str:
        """sha256 of the :func:`comparable` config (canonical JSON): what every chunk of this
        run records, so a chunk of another run or config is never reused."""
        text = json.dumps(jsonable(comparable(self.to_config())), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_config(self) -> dict:
        return {
            "name": self.name, "description": self.description, "seed": self.seed, "output": self.output,
            "run_name": self.run_name, "schedule": dict(self.schedule),
            "models": {n: {"kind": m.kind, **m.params} for n, m in self.models.items()},
            "target": self.target, "n_samples": self.n_samples, "sampler": {k: v for k, v in vars(self.sampler).items()
                                                                    if (k, v) not in (("grid_power", 1.0), ("denoise", False))},
            "methods": [{"name": m.name, "operator": m.operator, "models": list(m.models), **m.options}
                        for m in self.methods],
        } | ({"evaluation": dict(self.evaluation)} if self.evaluation else {}) \
          | ({"reports": [dict(r) for r in self.reports]} if self.reports else {})
