"""The ``merge`` model kind and :func:`merge_checkpoints`: weighted sums, task arithmetic, TIES
and DARE of checkpoints fine-tuned from one parent (MATH §5, :mod:`molfuse.fusion.merge`).

Before merging, every member's card must agree with the parent's (or, without a parent, the
first member's) on the fields a soup checks (modality, architecture, prediction, schedule,
space, shape, normalisation, conditioning), and each member's ``init_from.sha256`` must be the
parent's ``weights.sha256``: task vectors are only meaningful against the weights they started
from. The merged card records ``merge = {rule, options, parent, members}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import plugins
from ..base.checks import REQUIRED, fields
from ..base.seeds import derive_seed
from ..fusion.merge import RULES, merge, rule_options
from ..fusion.selection import choose_by_heldout
from ..models import bind
from ..nets import build
from ..schedules import Schedule
from ..training.checkpoints import load_model, read_card, save_checkpoint
from ..training.data import build_data, check_data_spec
from .kinds import SAME_FIELDS  # the card fields every soup / merge member must share
from .kinds import CheckpointModel, checkpoint_path, condition_value

__all__ = ["merge_checkpoints", "check_members", "select_by_heldout", "OPTIONS", "SELECT"]

OPTIONS = ("weights", "scale", "density", "drop", "seed", "combine")
# Card entries that describe the parent's own weights or training run, not the merge.
_NOT_INHERITED = ("format", "format_version", "weights", "created", "molfuse_version", "final_losses")


def _folder(p: Any, field: str) -> Path:
    if not isinstance(p, (str, Path)):
        raise ValueError(f"{field}: expected a checkpoint folder, got {p!r}")
    return checkpoint_path(p)


def _check_spec(rule: Any, paths: Any, parent: Any) -> None:
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {', '.join(RULES)}; got {rule!r}")
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, (str, Path)) for p in paths):
        raise ValueError(f"paths: expected a non-empty list of checkpoint folders, got {paths!r}")
    if parent is None and rule != "weighted_sum":
        raise ValueError(f"parent: rule {rule} merges task vectors θ_i − θ_parent and needs the parent checkpoint "
                         "(only weighted_sum works without one)")


def _entry(path: Any, net: Any) -> dict:
    return {"path": str(path), "name": net.card.get("name"), "sha256": net.card["weights"]["sha256"],
            "steps": net.card.get("steps")}


def _differences(ref: Mapping, card: Mapping) -> list[str]:
    return [f"{k} ({card.get(k)!r} vs {ref.get(k)!r})" for k in SAME_FIELDS if card.get(k) != ref.get(k)]


def check_members(paths: Sequence[Any], nets: Sequence[Any], parent: Any = None, parent_net: Any = None) -> None:
    """Refuse members that cannot be merged: a card field of ``SAME_FIELDS`` differs from the
    parent's (or the first member's), or a member was not fine-tuned from the parent (its
    ``init_from.sha256`` is not the parent's ``weights.sha256``). All problems at once.

    Raises:
        ValueError: naming both files, the field and both values (both hashes for lineage).
    """
    ref_path, ref = (parent, parent_net) if parent_net is not None else (paths[0], nets[0])
    problems = []
    for p, net in zip(paths, nets):
        differ = _differences(ref.card, net.card)
        if differ:
            problems.append(f"{p} cannot be merged with {ref_path}: they differ in {'; '.join(differ)}")
        if parent_net is not None:
            got, want = (net.card.get("init_from") or {}).get("sha256"), parent_net.card["weights"]["sha256"]
            if got != want:
                came = f"was fine-tuned from init_from.sha256 = {got}" if got else "names no init_from.sha256"
                problems.append(f"parent mismatch: {p} {came} but the parent {parent} has weights.sha256 = {want}; "
                                "its task vector would not be relative to this parent")
    if problems:
        raise ValueError("checkpoints cannot be merged:\n  - " + "\n  - ".join(problems))


def _net(state: Mapping, card: Mapping, like: Any) -> Any:
    arch = card["architecture"]
    net = build(arch["name"], arch["config"])
    net.load_state_dict(state, strict=True)
    net.eval().requires_grad_(False)
    net.prediction, net.schedule, net.space, net.modality = like.prediction, like.schedule, like.space, like.modality
    net.normalisation = dict(card["normalisation"])
    return net


def _card(ref: Any, rule: str, options: Mapping, parent: Any, parent_net: Any, paths: Sequence, nets: Sequence,
          name: str | None) -> dict:
    """The merged net's card: the parent's (else the first member's) fields, minus those
    describing its own weights and losses, plus ``merge`` provenance."""
    effective = {**rule_options(rule), **options}
    card = {k: v for k, v in ref.card.items() if k not in _NOT_INHERITED}
    card["merge"] = {"rule": rule, "options": {k: effective.get(k) for k in OPTIONS},
                     "parent": _entry(parent, parent_net) if parent_net is not None else None,
                     "members": [_entry(p, n) for p, n in zip(paths, nets)]}
    if parent_net is not None:
        card["init_from"] = _entry(parent, parent_net)  # the merge is a point near its parent, like a fine-tune
    elif len({(n.card.get("init_from") or {}).get("sha256") for n in nets}) > 1:
        card["init_from"] = None  # members of several origins: no single starting point
    call = ", ".join([repr(rule), repr([str(p) for p in paths])] + ([f"parent={str(parent)!r}"] if parent else [])
                     + [f"{k}={v!r}" for k, v in options.items()])
    card.update(name=name, steps=0, rebuild=f"molfuse.campaign.merges.merge_checkpoints({call}, out=...)")
    return card


def merge_checkpoints(rule: str, paths: Sequence[str | Path], parent: str | Path | None = None,
                      out: str | Path | None = None, name: str | None = None, **options: Any) -> tuple[Any, dict]:
    """Merge checkpoints fine-tuned from ``parent`` with a rule of :data:`molfuse.fusion.merge.RULES`.

    Args:
        rule: ``weighted_sum``, ``task_arithmetic``, ``ties`` or ``dare``.
        paths: the members' checkpoint folders (relative paths from the repository root).
        parent: their common parent's folder (required except for ``weighted_sum``).
        out: if given, write the merge there as a checkpoint (``load_model(out)`` reads it).
        name: the card's name (default: ``out``'s folder name, else None).
        **options: the rule's options (weights, scale, density, drop, seed, combine).

    Returns:
        ``(net, card)``: the merged net in eval mode (with ``prediction``, ``schedule``,
        ``space``, ``modality``, ``normalisation``, ``card`` and ``checkpoints``, the weight files
        of parent and members) and its card (as written when ``out`` is given).

    Raises:
        ValueError: a bad rule / paths / parent, card fields that differ, a parent mismatch,
            or options the rule refuses (MergeError); CheckpointError for unreadable files.
    """
    _check_spec(rule, paths, parent)
    nets = [load_model(_folder(p, f"paths[{i}]")) for i, p in enumerate(paths)]
    parent_net = None if parent is None else load_model(_folder(parent, "parent"))
    check_members(paths, nets, parent, parent_net)
    state = merge(rule, None if parent_net is None else parent_net.state_dict(), [n.state_dict() for n in nets],
                  **options)
    ref = parent_net if parent_net is not None else nets[0]
    name = name if name is not None else (Path(out).name if out is not None else None)
    card = _card(ref, rule, options, parent, parent_net, paths, nets, name)
    net = _net(state, card, ref)
    net.checkpoints = [n.checkpoint for n in ([parent_net] if parent_net is not None else []) + nets]
    if out is not None:
        folder = save_checkpoint(out, net, card)
        card = read_card(folder)[0]
        net.checkpoint = Path(folder) / card["weights"]["file"]
    net.card, net.name = card, name
    return net, card


SELECT = {"option": REQUIRED, "values": REQUIRED, "data": REQUIRED, "n": 256, "n_t": 4, "seed": 0}


def select_by_heldout(spec: dict, options: dict, schedule: Schedule) -> tuple[dict, dict]:
    """Choose one merge option by held-out DSM loss (MATH §2; common random numbers across the
    candidates): ``select = {option, values, data (a data kind), n, n_t, seed}``. Returns the
    options with the chosen value and the selection record for the card."""
    sel = fields(spec["select"], "select", SELECT)
    if sel["option"] not in OPTIONS or not isinstance(sel["values"], list) or len(sel["values"]) < 2:
        raise ValueError(f"select: option must be one of {', '.join(OPTIONS)} with a list of >= 2 values; got {sel}")
    data = build_data(check_data_spec(sel["data"], "select.data"), "select.data")
    g = torch.Generator().manual_seed(derive_seed(int(sel["seed"]), "select"))
    idx = torch.randperm(len(data.x), generator=g)[:int(sel["n"])]
    mask = None if data.mask is None else data.mask[idx]
    nets = {}
    for v in sel["values"]:
        nets[f"{sel['option']}={v}"] = merge_checkpoints(spec["rule"], spec["paths"], spec["parent"],
                                                        **{**options, sel["option"]: v})[0]
    space = next(iter(nets.values())).space
    best, table = choose_by_heldout(nets, data.x[idx], schedule, n_t=int(sel["n_t"]), seed=int(sel["seed"]),
                                    mask=mask, space=space)
    chosen = sel["values"][list(nets).index(best)]
    record = {"option": sel["option"], "values": sel["values"], "chosen": chosen, "data": data.description,
              "n": int(len(idx)), "n_t": int(sel["n_t"]), "seed": int(sel["seed"]),
              "heldout_dsm": {k: {"mean": m, "se": e} for k, (m, e) in table.items()}}
    return {**options, sel["option"]: chosen}, record


def _merge_kind(spec: dict, schedule: Schedule) -> CheckpointModel:
    """``{kind: merge, rule, paths, parent?, weights?, scale?, density?, drop?, seed?, combine?, cond?,
    select?}``; ``select`` picks one option's value by held-out DSM loss (:func:`select_by_heldout`)."""
    options = {k: spec[k] for k in OPTIONS if spec[k] is not None}
    record = None
    if spec["select"] is not None:
        options, record = select_by_heldout(spec, options, schedule)
    net, card = merge_checkpoints(spec["rule"], spec["paths"], spec["parent"], **options)
    if record is not None:
        card = {**card, "merge": {**card["merge"], "selection": record}}
    if net.schedule != schedule:
        raise ValueError(f"the checkpoints were trained with {net.schedule!r} but the workflow uses {schedule!r}; "
                         f"set the workflow's schedule to {net.schedule.config()}")
    cond = condition_value(card, net, spec["cond"])
    model = CheckpointModel(bind(net, cond) if cond is not None else net, card, net.checkpoints[0], spec["cond"])
    model.checkpoints = net.checkpoints
    return model


def _merge_modality(spec: dict) -> str:
    if not isinstance(spec["paths"], list) or not spec["paths"]:
        raise ValueError(f"paths: expected a non-empty list of checkpoint folders, got {spec['paths']!r}")
    if spec["parent"] is not None:
        return read_card(_folder(spec["parent"], "parent"))[0]["modality"]
    return read_card(_folder(spec["paths"][0], "paths[0]"))[0]["modality"]


plugins.register_model_kind("merge", plugins.ModelKind(
    _merge_kind, {"rule": REQUIRED, "paths": REQUIRED, "parent": None, **{k: None for k in OPTIONS}, "cond": None,
                  "select": None},
    _merge_modality))
