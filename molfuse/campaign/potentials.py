"""Potentials a ``steer`` method names: ``potentials: [{name: clash, weight: 1.0, <param>: value}, ...]``.

Read in two passes, both while the workflow is read: :func:`check_potential_list` (the list's
shape, before the models' modality is known) and :func:`resolve_potentials` (each name in the
modality's :attr:`~molfuse.plugins.Modality.potentials`, each parameter one its function takes,
of the type of its default, within its bounds). At run time :func:`total_energy` composes them into
the one energy ``U = Σ_j w_j U_j`` the sampler tilts by (MATH §8), :func:`probe_potentials` calls it
once before any sampling, and :func:`energy_columns` gives each potential's energy of the final samples.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from .. import plugins
from ..base.checks import REQUIRED, as_bool, as_float, as_floats, as_int, fail
from ..spaces import resolve_space

__all__ = ["check_potential_list", "resolve_potentials", "potential_params", "total_energy", "energy_columns",
           "probe_potentials"]


def check_potential_list(v: Any, path: str) -> list[dict]:
    """A non-empty list of ``{name, weight >= 0 (default 1), <params>}`` with distinct names."""
    if not isinstance(v, list) or not v:
        fail(path, f"expected a non-empty list of potentials, e.g. [{{name: clash, weight: 1.0}}]; got {v!r}")
    out, seen = [], set()
    for i, p in enumerate(v):
        here = f"{path}[{i}]"
        if not isinstance(p, Mapping) or not isinstance(p.get("name"), str):
            fail(f"{here}.name", f"each potential is a mapping with a name, e.g. {{name: clash, weight: 1.0}}; "
                 f"got {p!r}")
        if p["name"] in seen:
            fail(f"{here}.name", f"potential {p['name']!r} is listed twice (its energy column would be ambiguous)")
        seen.add(p["name"])
        weight = as_float(p.get("weight", 1.0), f"{here}.weight", 0.0)
        out.append({**p, "weight": weight})
    return out


def potential_params(entry: Any) -> dict[str, Any]:
    """The parameters a workflow may set: keyword parameters of ``fn(x, mask, normalisation, **params)``
    after the first three, with their defaults (REQUIRED when there is none)."""
    fn = entry.fn if isinstance(entry, plugins.Potential) else entry
    params = list(inspect.signature(fn).parameters.values())[3:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default for p in params if p.kind in kinds}


def _value(v: Any, default: Any, bounds: tuple[float | None, float | None] | None, path: str) -> Any:
    """``v`` read as its default's type (bool, int, number, list of numbers) within ``bounds``."""
    lo, hi = bounds or (None, None)
    if isinstance(default, bool):
        return as_bool(v, path)
    if isinstance(default, int):
        out = as_int(v, path, None if lo is None else int(lo))
        if hi is not None and out > hi:
            fail(path, f"must be <= {hi}; got {out}")
        return out
    if isinstance(default, (list, tuple)):
        return as_floats(v, path)
    return as_float(v, path, lo, hi)


def resolve_potentials(specs: Sequence[Mapping[str, Any]], modality: plugins.Modality, path: str) -> list[dict]:
    """Each spec as ``{name, weight, <every param with its value or default>}``, checked against
    ``modality``'s potentials.

    Raises:
        WorkflowError: an unknown name (the modality's names listed), an unknown parameter (the
            potential's listed), a value of the wrong type, out of its bounds or refused by its check.
    """
    known = dict(modality.potentials)
    out = []
    for i, spec in enumerate(specs):
        here, name = f"{path}[{i}]", spec["name"]
        if name not in known:
            fail(f"{here}.name", f"unknown potential {name!r} for modality {modality.name!r}; known: "
                 f"{', '.join(sorted(known)) or 'none (this modality registers no potentials)'}")
        entry = known[name]
        defaults = potential_params(entry)
        given = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        for key in given:
            if key not in defaults:
                fail(f"{here}.{key}", f"potential {name!r} has no parameter {key!r}; its parameters: "
                     f"{', '.join(defaults) or 'none'} (and weight)")
        bounds = entry.bounds if isinstance(entry, plugins.Potential) else {}
        params = {}
        for key, default in defaults.items():
            if default is REQUIRED and key not in given:
                fail(f"{here}.{key}", f"potential {name!r} needs this parameter")
            params[key] = _value(given[key], default, bounds.get(key), f"{here}.{key}") if key in given else default
        if isinstance(entry, plugins.Potential) and entry.check is not None:
            params = entry.check(params, here)
        out.append({"name": name, "weight": spec["weight"], **params})
    return out


def _parts(specs: Sequence[Mapping[str, Any]], modality: plugins.Modality) -> list[tuple[str, float, Callable, dict]]:
    return [(s["name"], float(s["weight"]), modality.potentials[s["name"]],
             {k: v for k, v in s.items() if k not in ("name", "weight")}) for s in specs]


def total_energy(specs: Sequence[Mapping[str, Any]], modality: plugins.Modality,
                 normalisation: Mapping[str, Any]) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``U(x, mask) = Σ_j w_j U_j(x, mask, normalisation, **params_j)``, (batch,) float64."""
    parts = _parts(specs, modality)

    def energy(x: Tensor, mask: Tensor | None) -> Tensor:
        return sum(w * fn(x, mask, normalisation, **p).to(torch.float64) for _, w, fn, p in parts)

    return energy


def energy_columns(specs: Sequence[Mapping[str, Any]], modality: plugins.Modality, normalisation: Mapping[str, Any],
                   x: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """``energy_<name>``: each potential's (unweighted) energy of the samples ``x``, (n,) float64 on CPU."""
    with torch.no_grad():
        return {f"energy_{name}": fn(x, mask, normalisation, **p).detach().to(torch.float64).cpu()
                for name, _, fn, p in _parts(specs, modality)}


def probe_potentials(potential: Callable[[Tensor, Tensor | None], Tensor], members: Sequence[Any],
                     layout: Callable[..., tuple], generator: torch.Generator, device: Any) -> None:
    """Call ``potential`` once on two noise states of the members' layout (``RunContext.layout``)
    before any sampling, so a parameter only the state can refuse (a coordinate past the dimension)
    stops the run there: a ValueError, which the run names as ``methods[i] (name): potentials: ...``."""
    shape, mask = layout(members, 2, generator, "product")
    x = resolve_space(members).noise(shape, mask, generator, device)
    try:
        u = potential(x, mask)
    except Exception as e:  # a potential's own failure, whatever its type, named before sampling starts
        raise ValueError(f"potentials: evaluating them on a state of shape {tuple(shape)} failed: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(u, Tensor) or tuple(u.shape) != (2,):
        raise ValueError(f"potentials: the energies must have shape (batch,) = (2,) for a state of shape "
                         f"{tuple(shape)}; got {tuple(u.shape) if isinstance(u, Tensor) else u!r}")
