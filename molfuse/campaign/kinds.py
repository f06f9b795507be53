"""The campaign's own model kinds, ``checkpoint`` and ``soup`` (any modality), and building a
workflow's models. Modalities add their own kinds (e.g. ``gaussian_mixture`` of vectors)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import plugins
from ..base.checks import REQUIRED, fail
from ..base.provenance import REPO_ROOT
from ..errors import CheckpointError, WorkflowError
from ..fusion import Soup, guidance, soup
from ..models import bind
from ..nets import build
from ..schedules import Schedule
from ..spaces import condition_key, space_from_config
from ..training.checkpoints import load_model, read_card
from .registry import sample_shape
from .spec import Workflow

__all__ = ["CheckpointModel", "checkpoint_path", "build_models", "condition_value", "property_values", "style_value",
           "SAME_FIELDS", "MAX_PROPERTY_SD"]


class CheckpointModel:
    """A checkpoint as a campaign model: the loaded net (bound to ``cond`` with
    :func:`molfuse.bind` when given) plus what a run needs from its card.

    Attributes: ``sample_shape`` (the card's ``shape``), ``space`` and ``node_counts`` (MATH §6:
    the card's size histogram given ``cond`` when it has one for that value, else the marginal;
    ``node_counts_given`` names the condition, or is ``"workflow"`` for a workflow's own ``sizes``,
    or None),
    ``modality``, ``normalisation`` (the modality's), ``card``, ``checkpoint`` (weights file,
    hashed into provenance).
    """

    def __init__(self, model: Any, card: dict, checkpoint: Path, cond: Any = None, guidance: float | None = None):
        if cond is not None and (card.get("conditioning") or {}).get("kind") == "properties":
            cond = property_values(card, cond)  # numeric strings as numbers
        self.model, self.card, self.checkpoint, self.cond, self.guidance = model, card, checkpoint, cond, guidance
        self.prediction, self.schedule = model.prediction, model.schedule
        self.space = space_from_config(card.get("space"))
        self.node_counts, self.node_counts_given = _sizes(card, cond)
        self.normalisation, self.sample_shape = dict(card["normalisation"]), tuple(card["shape"])
        self.modality = card["modality"]
        self.name = None  # build_models names it after the workflow's key

    def __call__(self, x, t, cond: Any = None, **kwargs: Any):
        return self.model(x, t, **kwargs) if cond is None else self.model(x, t, cond=cond, **kwargs)

    def __repr__(self) -> str:
        cond = "" if self.cond is None else f", cond={self.cond!r}"
        cond += "" if self.guidance is None else f", guidance={self.guidance!r}"
        if self.node_counts and self.node_counts_given == "workflow":
            cond += f", sizes={self.node_counts}"
        elif self.node_counts:
            cond += f", sizes=p(n | {self.node_counts_given})" if self.node_counts_given else ", sizes=p(n)"
        return f"CheckpointModel({str(self.checkpoint.parent)!r}{cond}, shape={self.sample_shape})"


def _sizes(card: dict, cond: Any) -> tuple[dict[int, float] | None, str | None]:
    """The size histogram a prompted checkpoint samples from: ``p(n | cond)`` from the card's
    ``node_counts_by_condition`` when the condition is one of its keys, else ``p(n)``."""
    if (card.get("conditioning") or {}).get("kind") == "style" and card.get("node_counts_by_style") and cond is not None:
        return _style_sizes(card, cond)
    by_cond = card.get("node_counts_by_condition") or {}
    key = condition_key(cond) if cond is not None and by_cond else None
    chosen = by_cond.get(key) if key is not None else None
    if chosen:
        return {int(k): v for k, v in chosen.items()}, key
    return {int(k): v for k, v in (card.get("node_counts") or {}).items()} or None, None


def _style_sizes(card: dict, cond: Any) -> tuple[dict[int, float], str]:
    """A style student's size histogram: its teacher's for one style, the ``w``-mixture of the
    teachers' (normalised) histograms for mixed styles ``ẽ = Σ w_i e_i`` (negative weights: refused)."""
    styles, by_style = list(card["styles"]), card["node_counts_by_style"]
    v = style_value(card, cond)
    w = [1.0 if i == v else 0.0 for i in range(len(styles))] if isinstance(v, int) else v.reshape(-1).tolist()
    if any(x < 0 for x in w):
        raise ValueError(f"cond: a point-cloud style student draws sizes from the w-mixture of its teachers' "
                         f"histograms, which needs w >= 0; got {w}")
    out: dict[int, float] = {}
    for wi, name in zip(w, styles):
        hist = {int(k): float(c) for k, c in (by_style.get(name) or {}).items()}
        total = sum(hist.values()) or 1.0
        for k, c in hist.items():
            out[k] = out.get(k, 0.0) + wi * c / total
    label = styles[v] if isinstance(v, int) else "mixed style " + ", ".join(f"{n} {x:g}" for n, x in zip(styles, w))
    return {k: c for k, c in sorted(out.items()) if c > 0}, label


def checkpoint_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one from the repository root (``models/images/<name>``
    works from any working directory)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def condition_value(card: dict, net: Any, cond: Any) -> Any:
    """A workflow's ``cond`` for a net, checked against the card's ``conditioning.kind``:
    a class label (an integer below the net's class count), a list of property values (one
    per property, a (1, k) tensor) or nothing."""
    kind = (card.get("conditioning") or {}).get("kind", "none")
    if cond is None:
        return None
    if kind == "class_label":
        classes = getattr(net, "num_classes", None)
        if isinstance(cond, bool) or not isinstance(cond, int) or cond < 0:
            raise ValueError(f"cond: expected a class label (an integer >= 0) or null; got {cond!r}")
        if not classes or cond >= classes:
            raise ValueError(f"cond: {cond} is not a class of this net (it has {classes or 'no'} classes)")
        return cond
    if kind == "properties":
        return torch.tensor([property_values(card, cond)], dtype=torch.get_default_dtype())
    if kind == "style":
        return style_value(card, cond)
    raise ValueError(f"cond: this net was trained without conditions (conditioning kind {kind!r}); drop cond")


# A property prompt further than this from the training mean, in the card's standard deviations,
# is refused: the net sees (c - mean) / sd, and no score is left there. Measured on qm9_rings
# (t = 0.5, random clouds): |score| <= 4.3 up to 50 sd, 100 at 100 sd, 1e8 at 200 sd, NaN at 1e6 rings.
MAX_PROPERTY_SD = 50.0


def property_values(card: dict, cond: Any) -> list[float]:
    """A workflow's property prompt (``cond: [3.0]``, ``cond: 3`` or numeric strings: YAML 1.1 reads
    ``1e3`` as text) checked against the card: one finite value per property the net was trained
    on (``architecture.config.num_properties``; names from ``data.properties``), each within
    ``MAX_PROPERTY_SD`` training standard deviations of the training mean when the card records them.

    Raises:
        ValueError: ``cond: ...`` saying what was expected and what came.
    """
    config = (card.get("architecture") or {}).get("config") or {}
    names = list((card.get("data") or {}).get("properties") or [])
    k = config.get("num_properties", len(names) or None)
    what = f"{k} property value{'s' if k != 1 else ''}" + (f" ({', '.join(map(str, names))})" if names else "")
    vals = cond if isinstance(cond, list) else [cond]
    try:
        out = [_number(v) for v in vals]
    except ValueError:
        raise ValueError(f"cond: expected {what if k else 'property values'} as numbers, got {cond!r}") from None
    if k is not None and len(out) != k:
        raise ValueError(f"cond: this net is conditioned on {what} (its card's architecture num_properties), "
                         f"got {len(out)}: {cond!r}")
    means, sds = config.get("property_mean") or [], config.get("property_std") or []
    for i, v in enumerate(out):
        label = names[i] if i < len(names) else f"property {i}"
        if not math.isfinite(v) or abs(v) > torch.finfo(torch.float32).max:
            raise ValueError(f"cond: {label} = {vals[i]!r} is not a finite float32 number")
        if i < len(means) and i < len(sds) and sds[i] > 0 and abs(v - means[i]) > MAX_PROPERTY_SD * sds[i]:
            z = abs(v - means[i]) / sds[i]
            raise ValueError(f"cond: {label} = {vals[i]!r} is {z:.3g} standard deviations from the training mean "
                             f"{means[i]:g} (sd {sds[i]:g}); beyond {MAX_PROPERTY_SD:g} the net's output is no longer "
                             "a score (it overflows to NaN); give a value the net can extrapolate to")
    return out


def _number(v: Any) -> float:
    """A number, or a numeric string (YAML 1.1 reads 1e3 as text); bools and the rest refused."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(v)
    return float(v)


def style_value(card: dict, cond: Any) -> Any:
    """A style student's ``cond`` (MATH §5, DMM): a style index or name (one teacher), or mixing
    weights ``ẽ = Σ w_i e_i`` as a list (one per style) or a mapping name -> weight (others 0)."""
    styles = list(card.get("styles") or [])
    if isinstance(cond, str):
        if cond not in styles:
            raise ValueError(f"cond: unknown style {cond!r}; this student has {styles}")
        return styles.index(cond)
    if isinstance(cond, int) and not isinstance(cond, bool):
        if not 0 <= cond < len(styles):
            raise ValueError(f"cond: style index {cond} outside 0..{len(styles) - 1} ({styles})")
        return cond
    if isinstance(cond, Mapping):
        unknown = [k for k in cond if k not in styles]
        if unknown:
            raise ValueError(f"cond: unknown styles {unknown}; this student has {styles}")
        cond = [float(cond.get(name, 0.0)) for name in styles]
    if isinstance(cond, list) and len(cond) == len(styles) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in cond):
        if abs(sum(cond) - 1.0) > 1e-6:
            raise ValueError(f"cond: style weights must sum to 1; got {cond} (sum {sum(cond):.6g})")
        return torch.tensor([cond], dtype=torch.get_default_dtype())
    raise ValueError(f"cond: expected a style of {styles} (index, name, or {len(styles)} weights summing to 1); got {cond!r}")


def _checkpoint(spec: dict, schedule: Schedule) -> CheckpointModel:
    if not isinstance(spec["path"], (str, Path)):
        raise ValueError(f"path: expected a checkpoint folder, got {spec['path']!r}")
    net = load_model(checkpoint_path(spec["path"]))
    if net.schedule != schedule:
        raise ValueError(f"the checkpoint was trained with {net.schedule!r} but the workflow uses {schedule!r}; "
                         f"set the workflow's schedule to {net.schedule.config()}")
    cond = condition_value(net.card, net, spec["cond"])
    model = bind(net, cond) if cond is not None else net
    if spec["guidance"] is not None:
        model = _guided(net, cond, spec["guidance"], schedule)
    out = CheckpointModel(model, net.card, net.checkpoint, spec["cond"], spec["guidance"])
    if spec["sizes"] is not None:
        out.node_counts, out.node_counts_given = _own_sizes(spec["sizes"], out), "workflow"
    return out


def _own_sizes(sizes: Any, model: CheckpointModel) -> dict[int, float]:
    """A workflow's ``sizes: {n: weight}`` for a checkpoint whose card draws node counts (e.g.
    ``{128: 1}``: 128-residue chains only), checked against the model's node capacity."""
    if not model.node_counts:
        raise ValueError("sizes: this checkpoint has a fixed size (its card has no node_counts)")
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError(f"sizes: expected a mapping {{node count: weight}}, e.g. {{128: 1}}; got {sizes!r}")
    out = {}
    for k, v in sizes.items():
        try:
            n = int(k)
        except (TypeError, ValueError):
            n = None
        if n is None or str(k).strip() != str(n) or not 1 <= n <= model.sample_shape[0]:
            raise ValueError(f"sizes: node count {k!r} is not a whole number in 1 .. {model.sample_shape[0]} "
                             "(the model's capacity)")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"sizes: weight of {n} must be a finite number >= 0; got {v!r}")
        out[n] = float(v)
    if sum(out.values()) <= 0:
        raise ValueError("sizes: the weights sum to 0")
    return out


def _guided(net: Any, cond: Any, scale: Any, schedule: Schedule) -> Any:
    """Classifier-free guidance ``(1 + w) s(x, t | cond) − w s(x, t | null)`` (MATH §2), for a
    net trained with condition dropout (its card's ``conditioning``); refused otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guidance: expected a scale w >= 0; got {scale!r}")
    if cond is None:
        raise ValueError("guidance needs cond (the condition to guide towards)")
    c = net.card.get("conditioning") or {}
    if c.get("null_cond") is None or not c.get("cond_drop_prob"):
        raise ValueError("guidance needs a net trained with condition dropout (card conditioning.cond_drop_prob > 0 "
                         "and a null_cond); this one has no trained unconditional score")
    return guidance(bind(net, cond), bind(net, _null(c, cond)), float(scale), schedule)


def _null(conditioning: dict, cond: Any) -> Any:
    """The card's null condition in the form the net takes: for properties a (1, k) tensor
    (the card stores NaN, "no property", as the string "nan")."""
    null = conditioning["null_cond"]
    if conditioning.get("kind") != "properties":
        return null
    values = null if isinstance(null, list) else [null] * int(torch.as_tensor(cond).numel())
    return torch.tensor([[float(v) for v in values]], dtype=torch.get_default_dtype())


SAME_FIELDS = ("modality", "architecture", "prediction", "schedule", "space", "shape", "normalisation", "conditioning")


def _soup(spec: dict, schedule: Schedule) -> CheckpointModel:
    """A weight soup of checkpoints (MATH §5): uniform over ``paths``, or ``weights``; with
    ``remove`` the listed members are taken out of the uniform soup of ``paths`` again with
    :meth:`molfuse.fusion.Soup.remove` (unlearning a shard without retraining)."""
    paths, remove, weights = spec["paths"], spec["remove"] or [], spec["weights"]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError(f"paths: expected a non-empty list of checkpoint folders, got {paths!r}")
    if not isinstance(remove, list) or any(r not in paths for r in remove):
        raise ValueError(f"remove: every entry must be one of paths {paths}; got {remove!r}")
    if remove and weights is not None:
        raise ValueError("remove works on the uniform soup; drop weights")
    if len(set(remove)) == len(paths):
        raise ValueError("remove would take every member out of the soup")
    nets = [load_model(checkpoint_path(p)) for p in paths]
    first = nets[0].card
    for p, net in zip(paths[1:], nets[1:]):
        differ = [k for k in SAME_FIELDS if net.card.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"{p} cannot be souped with {paths[0]}: they differ in {', '.join(differ)}")
    if nets[0].schedule != schedule:
        raise ValueError(f"the checkpoints were trained with {nets[0].schedule!r} but the workflow uses {schedule!r}")
    if remove:
        s = Soup.from_state_dicts([n.state_dict() for n in nets])
        for r in remove:
            s.remove(nets[paths.index(r)].state_dict())
        state = s.state_dict()
    else:
        state = soup([n.state_dict() for n in nets], weights)
    arch = first["architecture"]
    net = build(arch["name"], arch["config"])
    net.load_state_dict(state, strict=True)
    net.eval().requires_grad_(False)
    net.prediction, net.schedule, net.space = first["prediction"], nets[0].schedule, nets[0].space
    net.normalisation, net.card = dict(first["normalisation"]), first
    card = {**first, "name": None, "soup": {"paths": paths, "remove": remove, "weights": weights,
                                           "members": [n.card.get("name") for n in nets]}}
    cond = condition_value(first, net, spec["cond"])
    model = CheckpointModel(bind(net, cond) if cond is not None else net, card, nets[0].checkpoint, spec["cond"])
    model.checkpoints = [n.checkpoint for n in nets]
    return model


def _card_modality(path: Any, key: str = "path", cond: Any = None) -> str:
    """The modality of a checkpoint's card, read while the workflow is read; a property prompt
    ``cond`` is checked against the card here too (before any weights are loaded)."""
    if not isinstance(path, (str, Path)):
        raise ValueError(f"{key}: expected a checkpoint folder, got {path!r}")
    card = read_card(checkpoint_path(path))[0]
    if cond is not None and (card.get("conditioning") or {}).get("kind") == "properties":
        property_values(card, cond)
    return card["modality"]


def _soup_modality(spec: dict) -> str:
    paths = spec["paths"]
    if not isinstance(paths, list) or not paths:
        raise ValueError(f"paths: expected a non-empty list of checkpoint folders, got {paths!r}")
    return _card_modality(paths[0], "paths[0]", spec.get("cond"))


plugins.register_model_kind("checkpoint", plugins.ModelKind(
    _checkpoint, {"path": REQUIRED, "cond": None, "guidance": None, "sizes": None},
    lambda spec: _card_modality(spec["path"], cond=spec.get("cond"))))
plugins.register_model_kind("soup", plugins.ModelKind(
    _soup, {"paths": REQUIRED, "remove": None, "weights": None, "cond": None},
    _soup_modality))


def build_models(wf: Workflow, schedule: Schedule) -> dict[str, Any]:
    """Every model of ``wf`` built in ``schedule``; builder errors name the model. Each model
    declares its ``modality`` (a modality's kinds get the modality's name)."""
    out = {}
    for name, spec in wf.models.items():
        owner, kind = plugins.model_kind(spec.kind)
        try:
            model = kind.builder(dict(spec.params), schedule)
        except (ValueError, TypeError, RuntimeError, CheckpointError) as e:
            raise WorkflowError(f"models.{name}: {e}") from None
        if getattr(model, "name", None) is None:
            try:
                model.name = name
            except AttributeError:
                pass
        if getattr(model, "modality", None) is None:
            if owner is None:
                fail(f"models.{name}", f"kind {spec.kind!r} built a model that declares no modality")
            model.modality = owner
        try:
            sample_shape(model)
        except ValueError as e:
            fail(f"models.{name}", str(e))
        out[name] = model
    return out
