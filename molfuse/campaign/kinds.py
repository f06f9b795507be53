"""Model kinds: the built-in ``gaussian_mixture``, building a workflow's models, their sample shape."""

from __future__ import annotations

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

