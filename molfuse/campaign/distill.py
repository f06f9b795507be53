"""The ``distill`` training objective (DMM merge, MATH §5) as a training workflow names it.

``objective: {kind: distill, teachers: [checkpoint, ...], ...}`` with ``architecture:
{name: style_student, config: {base: {...}, num_styles: N}}`` trains one style student on the
teachers. Fields (default after ``=``)::

    teachers: [path, ...]          # checkpoints in one convention (refused otherwise, naming the field)
    styles?: [name, ...]           # one name per teacher (default: the teachers' card names)
    source?: data                  # data: the workflow's data (x_t from real states; a style per
                                   #   sample and step, uniform); teacher_samples: each teacher's
                                   #   own samples (drawn once, kept in the run folder)
    teacher_samples?: {n: 256, steps: 100, t_end: 0.001, grid_power: 1.0, batch: 64}
    init_base?: path               # copy this checkpoint's weights into the student's base net
                                   #   (the teachers' common parent, or one teacher)
    previous?: path                # incremental merging: a student to extend; its styles come
                                   #   first, the teachers take the new rows
    regularise?: true              # with previous: old styles learn from the frozen previous
                                   #   student; false trains the new styles only (shows forgetting)
    feature_layers?: []            # base-net submodules to imitate (forward hooks)
    feature_weight?: 0.0
    adversarial_weight?: 0.0       # > 0: a 2N-way discriminator on x̂_0 (molfuse.nets.discriminators)

The card gets ``objective`` (every teacher's path, name and sha256, the previous student's, the
settings) and ``styles``; its ``conditioning.kind`` is ``style``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .. import plugins
from ..base.checks import REQUIRED
from ..base.io import atomic_write
from ..base.seeds import derive_seed
from ..errors import CheckpointError, WorkflowError
from ..fusion import Distillation
from ..models import bind
from ..nets.discriminators import discriminator_for
from ..nets.style import STYLE_ARCHITECTURE, StyledNet
from ..sampling import sample
from ..schedules import Schedule
from ..spaces import draw_node_counts, node_masks, space_from_config
from ..training.checkpoints import load_model
from ..training.data import StateDataset
from .kinds import checkpoint_path

__all__ = ["FIELDS", "OBJECTIVE", "build_distillation", "register"]

FIELDS = {"teachers": REQUIRED, "styles": None, "source": "data", "teacher_samples": None, "init_base": None,
          "previous": None, "regularise": True, "feature_layers": [], "feature_weight": 0.0, "adversarial_weight": 0.0}
SAMPLES = {"n": 256, "steps": 100, "t_end": 1e-3, "grid_power": 1.0, "batch": 64}
_SAME = ("modality", "schedule", "space", "shape", "normalisation")


def _load(path: Any, field: str) -> Any:
    if not isinstance(path, str):
        raise WorkflowError(f"objective.{field}: expected a checkpoint folder, got {path!r}")
    try:
        return load_model(checkpoint_path(path))
    except CheckpointError as e:
        raise WorkflowError(f"objective.{field}: {e}") from None


def _check_teacher(net: Any, field: str, expect: Mapping[str, Any]) -> None:
    """Refuse a teacher whose convention differs from the data's (MATH §1: never mix silently)."""
    card = net.card
    differ = [f"{k} {card.get(k)!r} vs {expect[k]!r}" for k in _SAME
              if json.loads(json.dumps(card.get(k))) != json.loads(json.dumps(expect[k]))]
    if differ:
        raise WorkflowError(f"objective.{field}: {card.get('name')} does not match the workflow's data and schedule: "
                            + "; ".join(differ))


def _student(net: Any, n_styles: int) -> StyledNet:
    if not isinstance(net, StyledNet):
        raise WorkflowError(f"architecture.name: a distillation trains a {STYLE_ARCHITECTURE!r} "
                            f"(base net + style codebook); got {net.architecture.get('name')!r}")
    if net.num_styles != n_styles:
        raise WorkflowError(f"architecture.config.num_styles: {net.num_styles}, but the objective has {n_styles} "
                            "styles (previous student's + one per teacher)")
    return net


def _copy_base(student: StyledNet, spec: dict) -> dict | None:
    """Load ``init_base`` into the student's base net (same base architecture); its card entry."""
    if not spec["init_base"]:
        return None
    src = _load(spec["init_base"], "init_base")
    base = student.architecture["config"]["base"]
    if json.loads(json.dumps(src.card["architecture"])) != json.loads(json.dumps(base)):
        raise WorkflowError(f"objective.init_base: architecture {src.card['architecture']} differs from the student's "
                            f"base {base}")
    student.net.load_state_dict(src.state_dict(), strict=True)
    return _entry(spec["init_base"], src)


def _extend(student: StyledNet, prev: Any, path: str, n_new: int, seed: int) -> None:
    """Incremental merging: the previous student's weights into ``student``, new rows drawn."""
    if not isinstance(prev, StyledNet):
        raise WorkflowError(f"objective.previous: {path} is not a style student")
    grown = prev.grow(n_new, seed=derive_seed(seed, "codebook"))
    if json.loads(json.dumps(grown.architecture)) != json.loads(json.dumps(student.architecture)):
        raise WorkflowError(f"objective.previous: growing it by {n_new} styles gives {grown.architecture['config']}, "
                            f"not the workflow's architecture {student.architecture['config']}")
    student.load_state_dict(grown.state_dict(), strict=True)


def _entry(path: str, net: Any) -> dict:
    return {"path": path, "name": net.card.get("name"), "sha256": net.card["weights"]["sha256"]}


def _teacher_samples(sources: list, spec: Mapping[str, Any], schedule: Schedule, space: Any, shape: list,
                     folder: Path, seed: int, say: Callable) -> StateDataset:
    """Samples of each source ``(model, cond, style, card)`` (a teacher, or the previous student in
    an old style), drawn once with per-chunk seeds and kept in ``folder`` (reused on resume)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    opts = {**SAMPLES, **(spec or {})}
    unknown = set(opts) - set(SAMPLES)
    if unknown:
        raise WorkflowError(f"objective.teacher_samples: unknown fields {sorted(unknown)}; known {sorted(SAMPLES)}")
    path = folder / "teacher_samples.safetensors"
    meta = json.dumps({"opts": opts, "sources": [[c["weights"]["sha256"], s] for _, _, s, c in sources], "seed": seed})
    if path.is_file():
        with safe_open(str(path), "pt") as fh:
            same = (fh.metadata() or {}).get("molfuse") == meta
        if same:
            saved = load_file(str(path))
            return StateDataset(saved["x"], saved.get("mask"), saved["style"])
    xs, masks, labels = [], [], []
    for model, cond, style, card in sources:
        say(f"molfuse: drawing {opts['n']} samples of {card.get('name')} as style {style} ({opts['steps']} steps)")
        model = bind(model, cond) if cond is not None else model
        for start in range(0, opts["n"], opts["batch"]):
            n = min(opts["batch"], opts["n"] - start)
            g = torch.Generator().manual_seed(derive_seed(seed, "teacher_samples", style, start))
            counts = card.get("node_counts")
            mask = None if not counts else node_masks(draw_node_counts({int(a): b for a, b in counts.items()}, n, g),
                                                      int(shape[0]))
            with torch.no_grad():
                out = sample(model, schedule, [n, *shape], steps=opts["steps"], generator=g, t_end=opts["t_end"],
                             mask=mask, space=space, grid_power=opts["grid_power"])
            xs.append(out.x.detach())
            masks.append(mask)
            labels.append(torch.full((n,), style, dtype=torch.long))
    tensors = {"x": torch.cat(xs).contiguous(), "style": torch.cat(labels)}
    if masks[0] is not None:
        tensors["mask"] = torch.cat(masks)
    atomic_write(path, lambda fh: fh.write(save(tensors, {"molfuse": meta})))
    return StateDataset(tensors["x"], tensors.get("mask"), tensors["style"])


def build_distillation(spec: dict, net: Any, schedule: Schedule, data: Any, modality: str, seed: int,
                       folder: Path, say: Callable = print, config: Any = None) -> tuple[Distillation, Any, dict]:
    """The ``distill`` objective of a training workflow: (objective, training data, card entries)."""
    paths = spec["teachers"]
    if not isinstance(paths, list) or not paths:
        raise WorkflowError(f"objective.teachers: expected a non-empty list of checkpoint folders, got {paths!r}")
    expect = {"modality": modality, "schedule": schedule.config(), "space": data.space,
              "shape": list(data.x.shape[1:]), "normalisation": data.normalisation}
    teachers = [_load(p, f"teachers[{i}]") for i, p in enumerate(paths)]
    for i, t in enumerate(teachers):
        _check_teacher(t, f"teachers[{i}]", expect)
    names = spec["styles"] or [t.card.get("name") for t in teachers]
    if len(names) != len(teachers):
        raise WorkflowError(f"objective.styles: one name per teacher; got {len(names)} for {len(teachers)}")
    prev = _load(spec["previous"], "previous") if spec["previous"] else None
    old = list(prev.card.get("styles") or []) if prev is not None else []
    student = _student(net, len(old) + len(teachers))
    base = _copy_base(student, spec)
    if prev is not None:
        _check_teacher(prev, "previous", expect)
        _extend(student, prev, spec["previous"], len(teachers), seed)
    prev_entry = _entry(spec["previous"], prev) if prev is not None else None
    new = list(range(len(old), len(old) + len(teachers)))
    space = space_from_config(data.space)
    if spec["source"] not in ("data", "teacher_samples"):
        raise WorkflowError(f"objective.source: expected data or teacher_samples, got {spec['source']!r}")
    disc = (discriminator_for(data.space, list(data.x.shape[1:]), 2 * student.num_styles)
            if float(spec["adversarial_weight"]) > 0 else None)
    objective = Distillation(teachers, schedule, student.num_styles, styles=new,
                             previous=prev if spec["regularise"] else None,
                             previous_styles=range(len(old)) if prev is not None and spec["regularise"] else (),
                             feature_layers=spec["feature_layers"], feature_weight=float(spec["feature_weight"]),
                             adversarial_weight=float(spec["adversarial_weight"]), discriminator=disc,
                             t_min=getattr(config, "t_min", 1e-3), t_power=getattr(config, "t_power", 1.0), space=space)
    if spec["source"] == "teacher_samples":
        sources = [(t, None, s, t.card) for t, s in zip(teachers, new)]
        if prev is not None and spec["regularise"]:  # old styles: the previous student's own samples
            sources = [(prev, s, s, prev.card) for s in range(len(old))] + sources
        dataset = _teacher_samples(sources, spec["teacher_samples"], schedule, space, list(data.x.shape[1:]),
                                   folder, seed, say)
    else:
        dataset = StateDataset(data.x, data.mask, None)
    entry = {"kind": "distill", "teachers": [{**_entry(p, t), "style": s} for p, t, s in zip(paths, teachers, new)],
             "styles": old + list(names), "source": spec["source"], "teacher_samples": spec["teacher_samples"],
             "init_base": base, "previous": prev_entry, "regularise": bool(spec["regularise"]),
             "feature_layers": list(spec["feature_layers"]), "feature_weight": float(spec["feature_weight"]),
             "adversarial_weight": float(spec["adversarial_weight"])}
    extra = {"objective": entry, "styles": old + list(names), "conditioning": {"kind": "style"}}
    sizes = [(n, t.card.get("node_counts")) for n, t in zip(names, teachers)]
    if prev is not None:
        sizes = [(n, (prev.card.get("node_counts_by_style") or {}).get(n)) for n in old] + sizes
    if any(h for _, h in sizes):  # point clouds: style i samples its teacher's sizes (MATH §6)
        extra["node_counts_by_style"] = {n: h for n, h in sizes}
    return objective, dataset, extra


OBJECTIVE = plugins.ObjectiveKind(build_distillation, FIELDS)


def register() -> None:
    """Make the ``distill`` objective known (idempotent; also run on import of molfuse.campaign)."""
    plugins.register_objective("distill", OBJECTIVE)


register()
