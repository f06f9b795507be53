"""Model kinds: the built-in ``gaussian_mixture`` and ``checkpoint``, building a workflow's models, their sample shape."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import WorkflowError
from ..models import GaussianMixture
from ..schedules import Schedule
from .checks import REQUIRED, _fail
from .registry import _MODEL_KINDS, register_model_kind
from .spec import Workflow


def _numeric(v: Any) -> Any:
    """Nested lists with numeric strings (YAML 1.1 reads ``1e-3`` as text) made numbers."""
    if isinstance(v, (list, tuple)):
        return [_numeric(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"expected a number, got {v!r}") from None
    return v


def _gaussian_mixture(spec: dict, schedule: Schedule) -> GaussianMixture:
    w = spec.get("weights")
    return GaussianMixture(_numeric(spec["means"]), _numeric(spec["covs"]), None if w is None else _numeric(w),
                           schedule=schedule)


register_model_kind("gaussian_mixture", _gaussian_mixture, {"means": REQUIRED, "covs": REQUIRED, "weights": None})

REPO_ROOT = Path(__file__).resolve().parents[2]  # relative checkpoint paths start here


class CheckpointModel:
    """A shipped checkpoint as a campaign model: the loaded net (bound to ``cond`` with
    :func:`molfuse.bind` when given) plus what a run needs from its card.

    Attributes: ``sample_shape`` (e.g. (1, 28, 28)), ``normalisation`` (``x_model = scale *
    x_data + shift``), ``card``, ``checkpoint`` (weights file, hashed into provenance),
    ``modality`` (the card's, else None: :func:`~.registry.modality_of` reads the shape).
    """

    def __init__(self, model: Any, card: dict, checkpoint: Path, sample_shape: tuple[int, ...], cond: Any = None,
                 guidance: float | None = None):
        self.model, self.card, self.checkpoint, self.cond, self.guidance = model, card, checkpoint, cond, guidance
        self.prediction, self.schedule = model.prediction, model.schedule
        self.normalisation, self.sample_shape = dict(card["normalisation"]), sample_shape
        self.modality = card.get("modality")
        self.name = None  # build_models names it after the workflow's key

    def __call__(self, x, t, cond: Any = None):
        return self.model(x, t) if cond is None else self.model(x, t, cond=cond)

    def __repr__(self) -> str:
        cond = "" if self.cond is None else f", cond={self.cond!r}"
        cond += "" if self.guidance is None else f", guidance={self.guidance!r}"
        return f"CheckpointModel({str(self.checkpoint.parent)!r}{cond}, shape={self.sample_shape})"


def checkpoint_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one from the repository root (``models/images/<name>``
    works from any working directory)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def card_shape(card: dict) -> tuple[int, ...]:
    """One sample's shape from a card: ``data.shape`` if recorded, else the architecture config
    (``channels, image_size`` for images; ``dim`` for vectors)."""
    shape = (card.get("data") or {}).get("shape") if isinstance(card.get("data"), dict) else None
    cfg = card["architecture"]["config"]
    if shape is None and "image_size" in cfg:
        shape = [cfg.get("channels", 1), cfg["image_size"], cfg["image_size"]]
    if shape is None and "dim" in cfg:
        shape = [cfg["dim"]]
    if shape is None:
        raise ValueError("the card declares no sample shape (data.shape, or image_size / dim in the architecture)")
    return tuple(int(s) for s in shape)


def _checkpoint(spec: dict, schedule: Schedule) -> CheckpointModel:
    from .. import bind
    from ..checkpoints import load_model
    from ..nets import unet as _unet  # noqa: F401  (registers the "unet" architecture)

    if not isinstance(spec["path"], (str, Path)):
        raise ValueError(f"path: expected a checkpoint folder, got {spec['path']!r}")
    net = load_model(checkpoint_path(spec["path"]))
    if net.schedule != schedule:
        raise ValueError(f"the checkpoint was trained with {net.schedule!r} but the workflow uses {schedule!r}; "
                         f"set the workflow's schedule to {net.schedule.config()}")
    cond = spec["cond"]
    if cond is not None:
        classes = getattr(net, "num_classes", None)
        if isinstance(cond, bool) or not isinstance(cond, int) or cond < 0:
            raise ValueError(f"cond: expected a class label (an integer >= 0) or null; got {cond!r}")
        if not classes or cond >= classes:
            raise ValueError(f"cond: {cond} is not a class of this net (it has {classes or 'no'} classes)")
    model = bind(net, cond) if cond is not None else net
    if spec["guidance"] is not None:
        model = _guided(net, cond, spec["guidance"], schedule)
    return CheckpointModel(model, net.card, net.checkpoint, card_shape(net.card), cond, spec["guidance"])


def _guided(net: Any, cond: Any, scale: Any, schedule: Schedule) -> Any:
    """Classifier-free guidance ``(1 + w) s(x, t | cond) − w s(x, t | null)`` (MATH §2), for a
    net trained with label dropout (its card's ``conditioning``); refused otherwise."""
    from .. import bind
    from ..fusion import guidance

    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guidance: expected a scale w >= 0; got {scale!r}")
    if cond is None:
        raise ValueError("guidance needs cond (the class to guide towards)")
    c = net.card.get("conditioning") or {}
    if c.get("null_cond") is None or not c.get("cond_drop_prob"):
        raise ValueError("guidance needs a net trained with label dropout (card conditioning.cond_drop_prob > 0 "
                         "and a null_cond); this one has no trained unconditional score")
    return guidance(bind(net, cond), bind(net, c["null_cond"]), float(scale), schedule)


register_model_kind("checkpoint", _checkpoint, {"path": REQUIRED, "cond": None, "guidance": None})  # CheckpointError is a ValueError

_SAME = ("architecture", "prediction", "schedule", "normalisation", "conditioning")


def _soup(spec: dict, schedule: Schedule) -> CheckpointModel:
    """A weight soup of checkpoints (MATH §5): uniform over ``paths``, or ``weights``; with
    ``remove`` the listed members are taken out of the uniform soup of ``paths`` again with
    :meth:`molfuse.fusion.Soup.remove` (unlearning a shard without retraining)."""
    from .. import bind
    from ..checkpoints import load_model
    from ..fusion import Soup, soup
    from ..nets import build
    from ..nets import unet as _unet  # noqa: F401  (registers the "unet" architecture)

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
        differ = [k for k in _SAME if net.card.get(k) != first.get(k)]
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
    net.prediction, net.schedule, net.normalisation = first["prediction"], nets[0].schedule, dict(first["normalisation"])
    card = {**first, "name": None, "soup": {"paths": paths, "remove": remove, "weights": weights,
                                           "members": [n.card.get("name") for n in nets]}}
    cond = spec["cond"]
    model = CheckpointModel(bind(net, cond) if cond is not None else net, card, nets[0].checkpoint, card_shape(first),
                            cond)
    model.checkpoints = [n.checkpoint for n in nets]
    return model


register_model_kind("soup", _soup, {"paths": REQUIRED, "remove": None, "weights": None, "cond": None})


def build_models(wf: Workflow, schedule: Schedule) -> dict[str, Any]:
    """Every model of ``wf`` built in ``schedule``; builder errors name the model."""
    out = {}
    for name, spec in wf.models.items():
        try:
            model = _MODEL_KINDS[spec.kind].builder(dict(spec.params), schedule)
        except (ValueError, TypeError, RuntimeError) as e:
            raise WorkflowError(f"models.{name}: {e}") from None
        if getattr(model, "name", None) is None:
            try:
                model.name = name
            except AttributeError:
                pass
        data_shape(model, f"models.{name}")
        out[name] = model
    return out


def data_shape(model: Any, path: str = "model") -> tuple[int, ...]:
    """Shape of one sample: ``model.sample_shape`` or ``(model.dim,)``."""
    shape = getattr(model, "sample_shape", None)
    if shape is None and getattr(model, "dim", None) is not None:
        shape = (model.dim,)
    if shape is None:
        _fail(path, f"{type(model).__name__} declares neither sample_shape nor dim; the sampler needs one")
    return tuple(int(s) for s in shape)

