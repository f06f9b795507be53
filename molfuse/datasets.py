"""Training data kinds: an open registry of ``data: {kind: ..., ...}`` builders.

A kind turns a workflow's ``data`` mapping into ``(TensorDataset, description, normalisation)``.
``molfuse train`` trains on it and a fitted barycenter (``fit.data``) fits its weights on it, so
the registry lives here, free of lightning. Modalities register their kinds in their
``register()``; :func:`ensure_registered` imports them on demand. Built in:
``gaussian_mixture_samples`` (tests, vectors).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch.utils.data import TensorDataset

from .campaign.checks import REQUIRED, _fail, _fields, _int
from .campaign.kinds import _numeric
from .models import GaussianMixture

__all__ = ["DatasetKind", "register_dataset_kind", "ensure_registered", "check_data_spec"]

DatasetBuilder = Callable[[dict], tuple[TensorDataset, dict, dict]]


@dataclass(frozen=True)
class DatasetKind:
    """``builder(spec) -> (TensorDataset, description, normalisation)`` for ``data.kind``.

    ``spec`` is the workflow's ``data`` mapping without ``kind``, defaults filled in from
    ``fields`` (key -> default or REQUIRED; None leaves key checks to the builder). The
    description goes into the card and the fingerprint; the normalisation is
    ``{scale, shift}`` with ``x_model = scale * x_data + shift``. A builder's ValueError /
    TypeError becomes a WorkflowError naming ``data``.
    """

    builder: DatasetBuilder
    fields: Mapping[str, Any] | None = None


_DATASET_KINDS: dict[str, DatasetKind] = {}
_REGISTERED: set[str] = set()  # modalities whose register() already ran


def register_dataset_kind(name: str, builder: DatasetBuilder, fields: Mapping[str, Any] | None = None,
                          replace: bool = False) -> None:
    """Make ``data: {kind: <name>, ...}`` trainable (see :class:`DatasetKind`)."""
    if name in _DATASET_KINDS and not replace:
        raise ValueError(f"dataset kind {name!r} is already registered (pass replace=True)")
    _DATASET_KINDS[name] = DatasetKind(builder, fields)


def check_data_spec(d: Any, path: str) -> dict:
    """A ``{kind: ..., ...}`` mapping of a registered kind, with the kind's defaults filled in.

    Raises:
        WorkflowError: naming ``path`` (missing or unknown kind, bad fields).
    """
    if not isinstance(d, Mapping) or "kind" not in d:
        _fail(f"{path}.kind", "required field is missing (a dataset kind, e.g. mnist_population)")
    if not ensure_registered(lambda: list(_DATASET_KINDS), d["kind"]):
        _fail(f"{path}.kind", f"unknown data kind {d['kind']!r}; registered: {', '.join(sorted(_DATASET_KINDS))}")
    spec = _DATASET_KINDS[d["kind"]].fields
    return dict(d) if spec is None else _fields(d, path, {"kind": REQUIRED, **spec})


def ensure_registered(names: Callable[[], Iterable[str]], wanted: Any) -> bool:
    """Whether ``wanted`` is in ``names()``, after importing molfuse's modalities when it is not
    yet: importing one registers its architectures, and its ``register()`` (if any, called
    once) registers its data kinds."""
    if wanted in names():
        return True
    from . import modalities

    for mod in pkgutil.iter_modules(modalities.__path__, "molfuse.modalities."):
        try:
            module = importlib.import_module(mod.name)
        except ImportError:
            continue  # a modality whose optional dependencies are missing registers nothing
        if mod.name not in _REGISTERED and callable(getattr(module, "register", None)):
            module.register()
            _REGISTERED.add(mod.name)
    return wanted in names()


def _gaussian_mixture_samples(spec: dict) -> tuple[TensorDataset, dict, dict]:
    """``n`` float32 samples of a :class:`GaussianMixture`; with ``labels`` the component index."""
    n, seed = _int(spec["n"], "data.n", 1), _int(spec["seed"], "data.seed", 0)
    w = spec["weights"]
    gm = GaussianMixture(_numeric(spec["means"]), _numeric(spec["covs"]), None if w is None else _numeric(w))
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(gm.weights, n, replacement=True, generator=g)
    x = torch.empty(n, gm.dim, dtype=torch.float64)
    for k in range(len(gm.weights)):  # each component is a one-component mixture
        idx = (comp == k).nonzero()[:, 0]
        x[idx] = GaussianMixture(gm.means[k:k + 1], gm.covs[k:k + 1]).sample(len(idx), generator=g)
    tensors = (x.float(), comp) if spec["labels"] else (x.float(),)
    desc = {"kind": "gaussian_mixture_samples", "n": n, "seed": seed, "dim": gm.dim, "labels": bool(spec["labels"]),
            "means": gm.means.tolist(), "covs": gm.covs.tolist(), "weights": gm.weights.tolist()}
    return TensorDataset(*tensors), desc, {"scale": 1.0, "shift": 0.0}


register_dataset_kind("gaussian_mixture_samples", _gaussian_mixture_samples,
                      {"means": REQUIRED, "covs": REQUIRED, "weights": None, "n": REQUIRED, "seed": 0, "labels": False})
