"""Model soups: weight-space averages of fine-tuned siblings (MATH §5 "Soup").

Floating (and complex) tensors are averaged in float64 / complex128 and cast back to their
own dtype; integer and bool buffers (e.g. BatchNorm ``num_batches_tracked``) cannot be
averaged, so they must agree between members and are copied.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import MergeError
from .weights import as_weights

__all__ = ["check_mergeable", "soup", "Soup"]

StateDict = Mapping[str, Tensor]
_SHOW = 10  # key names listed per problem before "... (+N more)"


def averageable(t: Tensor) -> bool:
    """Floating and complex tensors are combined; integer / bool buffers are copied."""
    return t.is_floating_point() or t.is_complex()


def acc_dtype(t: Tensor) -> torch.dtype:
    """The accumulation dtype of a combinable tensor: float64, or complex128 for complex ones."""
    return torch.complex128 if t.is_complex() else torch.float64


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    return shown + (f", ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def _key_problems(ref: StateDict, other: StateDict, a: str, b: str) -> list[str]:
    """Readable differences between two state dicts with labels ``a`` (ref) and ``b``."""
    out = []
    missing = [k for k in ref if k not in other]
    extra = [k for k in other if k not in ref]
    if missing:
        out.append(f"{b} is missing keys {_listing(missing)} (present in {a})")
    if extra:
        out.append(f"{b} has extra keys {_listing(extra)} (absent from {a})")
    for key in (k for k in ref if k in other):
        x, y = ref[key], other[key]
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            continue  # reported per member by _value_problems
        if x.shape != y.shape:
            out.append(f"key {key!r}: shapes differ, {a} {tuple(x.shape)} vs {b} {tuple(y.shape)}")
        elif x.dtype != y.dtype:
            out.append(f"key {key!r}: dtypes differ, {a} {x.dtype} vs {b} {y.dtype}")
        elif not averageable(x) and not torch.equal(x.cpu(), y.cpu()):
            out.append(f"key {key!r}: integer buffers must agree; cannot average ({a} vs {b} differ)")
    return out


def _value_problems(sd: Any, label: str) -> list[str]:
    if not isinstance(sd, Mapping):
        return [f"{label} is a {type(sd).__name__}, not a state dict (mapping of name -> Tensor)"]
    bad = [f"{k!r} ({type(v).__name__})" for k, v in sd.items() if not isinstance(v, Tensor)]
    return [f"{label} has non-tensor values: {', '.join(bad)}"] if bad else []


def merge_problems(sds: Sequence[Any], labels: Sequence[str]) -> list[str]:
    """Every reason the state dicts cannot be merged, each member compared with the first."""
    out = [p for sd, lab in zip(sds, labels) for p in _value_problems(sd, lab)]
    if out:
        return out  # key-wise comparison needs mappings of tensors
    for sd, lab in zip(sds[1:], labels[1:]):
        out += _key_problems(sds[0], sd, labels[0], lab)
    return out


def check_mergeable(state_dicts: Sequence[StateDict], labels: Sequence[str] | None = None) -> None:
    """Refuse state dicts that cannot be averaged, with a readable diff (MATH §5).

    Every member is compared with the first: missing / extra keys (listed by name), shape and
    dtype mismatches (key and both values), integer / bool buffers that differ, and values
    that are not tensors. All problems are reported at once.

    Args:
        state_dicts: one or more mappings ``name -> Tensor``.
        labels: names used in the message (default ``"member 0"``, ``"member 1"``, ...).

    Raises:
        MergeError: fewer than one state dict, or any of the problems above.
    """
    sds = list(state_dicts)
    if len(sds) < 1:
        raise MergeError("a soup needs at least 1 state dict; got 0")
    labels = list(labels) if labels is not None else [f"member {i}" for i in range(len(sds))]
    problems = merge_problems(sds, labels)
    if problems:
        raise MergeError("state dicts cannot be merged:\n  - " + "\n  - ".join(problems))


def new_like(template: StateDict) -> "OrderedDict[str, Tensor]":
    """Empty ordered dict that carries the template's ``_metadata`` (module versions)."""
    out: OrderedDict[str, Tensor] = OrderedDict()
    meta = getattr(template, "_metadata", None)
    if meta is not None:
        out._metadata = copy.deepcopy(meta)  # type: ignore[attr-defined]
    return out


def soup(state_dicts: Sequence[StateDict], weights: Any = None) -> dict[str, Tensor]:
    """Weighted soup ``θ̄ = Σ_i w_i θ_i`` of N >= 1 state dicts (MATH §5).

    Floating tensors are averaged in float64 and cast back to their dtype; integer / bool
    buffers are copied from the first member (``check_mergeable`` verified they agree).
    A soup of one state dict is allowed and returns a copy of it.

    Args:
        state_dicts: N mappings ``name -> Tensor`` with the same keys, shapes and dtypes.
        weights: (N,) weights on the simplex (default uniform ``1/N``).

    Returns:
        A new state dict (key order and ``_metadata`` of the first member), loadable with
        ``module.load_state_dict(..., strict=True)``.

    Raises:
        MergeError: the state dicts cannot be merged.
        WeightsError: wrong number of weights, or weights off the simplex.
    """
    sds = list(state_dicts)
    check_mergeable(sds)
    n = len(sds)
    w = as_weights([1.0 / n] * n if weights is None else weights, n, "soup", simplex=True)
    out = new_like(sds[0])
    for key, ref in sds[0].items():
        if not averageable(ref):
            out[key] = ref.detach().clone()
            continue
        acc = torch.zeros(ref.shape, dtype=acc_dtype(ref), device=ref.device)
        for wi, sd in zip(w.tolist(), sds):
            acc += wi * sd[key].detach().to(device=ref.device, dtype=acc.dtype)
        out[key] = acc.to(ref.dtype)
    return out


class Soup:
    """Running uniform soup: add and remove members one at a time (MATH §5).

    The running SUM ``Σ_i θ_i`` of floating tensors is kept in float64, so
    ``add(sd); remove(sd)`` returns the previous soup within float tolerance.

    Args:
        first_state_dict: the first member; fixes keys, shapes, dtypes and integer buffers.
    """

    def __init__(self, first_state_dict: StateDict):
        check_mergeable([first_state_dict])
        self._template = new_like(first_state_dict)
        self._sum: dict[str, Tensor] = {}
        for key, v in first_state_dict.items():
            v = v.detach()
            # Floating keys: a meta tensor records shape/dtype for checks; ints are kept as is.
            self._template[key] = v.to("meta") if averageable(v) else v.clone()
            if averageable(v):
                self._sum[key] = v.to(acc_dtype(v)).clone()
        self._n = 1

    @classmethod
    def from_state_dicts(cls, state_dicts: Sequence[StateDict]) -> "Soup":
        """Uniform soup of N >= 1 state dicts; every incompatibility is reported up front."""
        sds = list(state_dicts)
        check_mergeable(sds)
        out = cls(sds[0])
        for sd in sds[1:]:
            out._accumulate(sd, +1.0)
        return out

    @property
    def n(self) -> int:
        """Number of members currently in the soup."""
        return self._n

    def add(self, state_dict: StateDict) -> "Soup":
        """Add a member: ``θ̄' = (N θ̄ + θ_new) / (N + 1)``. Returns ``self``.

        Raises:
            MergeError: ``state_dict`` is incompatible with the soup.
        """
        check_mergeable([self._template, state_dict], labels=["the soup", "the new state dict"])
        self._accumulate(state_dict, +1.0)
        return self

    def remove(self, state_dict: StateDict) -> "Soup":
        """Remove a member: ``θ̄' = (N θ̄ − θ_j) / (N − 1)``. Returns ``self``.

        The soup keeps only the running sum, so it cannot verify that ``state_dict`` was ever
        added: removing a non-member silently gives ``(N θ̄ − θ) / (N − 1)``. Keep track of
        the members yourself.

        Raises:
            MergeError: the soup has one member, or ``state_dict`` is incompatible with it.
        """
        if self._n <= 1:
            raise MergeError("cannot remove the last member of a soup (N would become 0)")
        check_mergeable([self._template, state_dict], labels=["the soup", "the removed state dict"])
        self._accumulate(state_dict, -1.0)
        return self

    def _accumulate(self, state_dict: StateDict, sign: float) -> None:
        for key, acc in self._sum.items():
            acc += sign * state_dict[key].detach().to(device=acc.device, dtype=acc.dtype)
        self._n += int(sign)

    def state_dict(self) -> dict[str, Tensor]:
        """The current soup ``θ̄ = (Σ_i θ_i) / N`` in each tensor's original dtype.

        Returns:
            A new ordered state dict (keys in the first member's order, its ``_metadata``).
        """
        out = new_like(self._template)
        for key, ref in self._template.items():
            out[key] = (self._sum[key] / self._n).to(ref.dtype) if key in self._sum else ref.clone()
        return out

    def __repr__(self) -> str:
        return f"Soup(n={self._n}, keys={len(self._template)})"
