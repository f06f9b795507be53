"""Weight merging beyond plain averaging (MATH §5), and choosing a merge by held-out DSM.

Every rule acts key by key on state dicts of one architecture. Floating (and complex) tensors
are combined in float64 / complex128 and cast back to their own dtype; integer / bool buffers
must equal the parent's and are copied from it; key order and ``_metadata`` are the parent's.

- ``weighted_sum``: ``θ = Σ_i w_i θ_i`` with any finite weights (the soup is the simplex case).
- task vectors ``τ_i = θ_i − θ_p`` of children fine-tuned from one parent ``θ_p``, and task
  arithmetic ``θ = θ_p + λ Σ_i w_i τ_i`` (Ilharco et al., "Editing models with task
  arithmetic", ICLR 2023; "add difference" in the image-model community).
- ``ties``: TIES-merging (Yadav et al., "Resolving interference when merging models", NeurIPS
  2023, Alg. 1): trim each τ_i to its largest entries, elect a sign per entry, average the
  entries that agree with it.
- ``dare``: DARE (Yu et al., "Language models are Super Mario", ICML 2024, Eq. 2): drop each
  delta entry with probability p, rescale the survivors by 1 / (1 − p), then sum or TIES.

A merge is only trustworthy if it scores well: :mod:`.selection` compares candidates on the same
held-out noise draws, and :mod:`molfuse.evaluation.ranks` checks a cheap proxy against a metric.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..base.seeds import seeded_generator
from ..errors import MergeError
from .soup import acc_dtype, averageable, merge_problems, new_like
from .weights import as_weights

__all__ = ["RULES", "COMBINES", "weighted_sum", "task_vectors", "task_arithmetic", "ties", "dare", "merge",
           "rule_options"]

StateDict = Mapping[str, Tensor]
Deltas = dict[str, Tensor]  # key -> float64 / complex128 tensor, floating keys only
RULES = ("weighted_sum", "task_arithmetic", "ties", "dare")
COMBINES = ("sum", "ties")


# ------------------------------------------------------------------ checks
def _refuse(what: str, problems: Sequence[str]) -> None:
    if problems:
        raise MergeError(f"{what}: cannot merge:\n  - " + "\n  - ".join(problems))


def _in_range(name: str, v: Any, lo: float, hi: float, lo_open: bool, hi_open: bool) -> list[str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return [] if ok else [f"{name} must lie in {interval}; got {v!r}"]


def _finite(name: str, v: Any) -> list[str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return [] if ok else [f"{name} must be a finite number; got {v!r}"]


def _checked(what: str, parent: Any, children: Sequence[StateDict], problems: Sequence[str] = ()) -> list:
    """``children`` as a list after every check: options (``problems``), at least one child,
    and keys / shapes / dtypes / integer buffers against the parent (all reported at once)."""
    children, problems = list(children), list(problems)
    if not children:
        problems.append("needs at least 1 child state dict; got 0")
    labels = ["the parent"] + [f"child {i}" for i in range(len(children))]
    problems += merge_problems([parent, *children], labels)
    _refuse(what, problems)
    return children


def _no_complex(parent: Any) -> list[str]:
    if not isinstance(parent, Mapping):
        return []  # reported by merge_problems
    bad = [k for k, v in parent.items() if isinstance(v, Tensor) and v.is_complex()]
    return [f"sign election needs real tensors; complex keys {bad}"] if bad else []


def _weights(weights: Any, n: int, what: str, positive: bool) -> list[float]:
    """(n,) finite weights, default 1 each; > 0 where the disjoint mean divides by them."""
    w = as_weights([1.0] * n if weights is None else weights, n, what, simplex=False)
    if positive and (w <= 0).any():
        raise MergeError(f"{what}: TIES weights must be > 0 (the disjoint mean divides by their sum); got {w.tolist()}")
    return w.tolist()


# ------------------------------------------------------------------ shared maths
def _acc(t: Tensor, ref: Tensor) -> Tensor:
    return t.detach().to(device=ref.device, dtype=acc_dtype(ref))


def _build(parent: StateDict, value: Callable[[str], Tensor]) -> dict[str, Tensor]:
    """A state dict like ``parent``: ``value(key)`` cast to the key's dtype for floating keys,
    a copy of the parent's tensor for integer / bool buffers."""
    out = new_like(parent)
    for key, ref in parent.items():
        out[key] = value(key).to(ref.dtype) if averageable(ref) else ref.detach().clone()
    return out


def _deltas(parent: StateDict, children: Sequence[StateDict]) -> list[Deltas]:
    return [{k: _acc(c[k], p) - _acc(p, p) for k, p in parent.items() if averageable(p)} for c in children]


def _linear(taus: Sequence[Deltas], w: Sequence[float]) -> Deltas:
    return {k: sum(wi * tau[k] for wi, tau in zip(w, taus)) for k in taus[0]}


def _add(parent: StateDict, tau: Deltas, scale: float) -> dict[str, Tensor]:
    """``θ_p + λ τ`` cast back to each tensor's dtype."""
    return _build(parent, lambda k: _acc(parent[k], parent[k]) + scale * tau[k])


def _keep_count(density: float, numel: int) -> int:
    """``k = ceil(density · numel)`` (1e-9 tolerance: ``0.3 · 10`` keeps 3, not 4)."""
    return min(numel, math.ceil(round(density * numel, 9)))


def _trim(tau: Tensor, density: float) -> Tensor:
    """TIES step 1 on one tensor: keep exactly ``k = ceil(density · numel)`` entries, the k
    largest ``|τ|``; among equal magnitudes the earlier entry in row-major (flattened) order
    wins (a stable descending sort), so the result never depends on the hardware."""
    flat = tau.reshape(-1)
    k = _keep_count(density, flat.numel())
    if k >= flat.numel():
        return tau.clone()
    idx = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    out = torch.zeros_like(flat)
    out[idx] = flat[idx]
    return out.reshape(tau.shape)


def _disjoint_mean(taus: Sequence[Deltas], w: Sequence[float]) -> Deltas:
    """TIES steps 2-3: ``γ = sign(Σ_i w_i τ̂_i)`` per entry, then the w-weighted mean of the
    τ̂_i that are non-zero with sign γ; 0 where none agrees (or γ = 0)."""
    out = {}
    for key in taus[0]:
        stack = torch.stack([tau[key] for tau in taus])  # (N, ...)
        wv = torch.tensor(w, dtype=stack.dtype, device=stack.device).reshape((-1,) + (1,) * (stack.dim() - 1))
        gamma = torch.sign((wv * stack).sum(0))  # elected sign
        agree = wv * ((torch.sign(stack) == gamma) & (stack != 0))
        den = agree.sum(0)
        out[key] = torch.where(den > 0, (agree * stack).sum(0) / torch.where(den > 0, den, 1.0), 0.0)
    return out


def _ties_tau(taus: Sequence[Deltas], density: float, w: Sequence[float]) -> Deltas:
    """TIES (Yadav et al. 2023, Alg. 1): trim every tensor, elect signs, disjoint mean."""
    return _disjoint_mean([{k: _trim(v, density) for k, v in tau.items()} for tau in taus], w)


def _drop_rescale(tau: Tensor, drop: float, seed: int, member: int, key: str) -> Tensor:
    """DARE on one tensor: ``u ~ U[0, 1)`` (float64, CPU generator seeded with
    ``derive_seed(seed, "dare", member, key)``, shape of the tensor); keep where ``u >= drop``
    (probability 1 − drop) and divide the survivors by ``1 − drop``."""
    g = seeded_generator(seed, "dare", member, key)
    keep = torch.rand(tuple(tau.shape), generator=g, dtype=torch.float64) >= drop
    return torch.where(keep.to(tau.device), tau / (1.0 - drop), 0.0)


# ------------------------------------------------------------------ rules
def weighted_sum(state_dicts: Sequence[StateDict], weights: Any = None) -> dict[str, Tensor]:
    """``θ = Σ_i w_i θ_i`` with any finite weights (MATH §5; :func:`soup` is the simplex case).

    Args:
        state_dicts: N >= 1 mappings ``name -> Tensor`` with equal keys, shapes and dtypes.
        weights: (N,) finite weights, not required to sum to 1 (default ``1/N`` each).

    Returns:
        A new state dict (key order, ``_metadata`` and integer buffers of the first member).

    Raises:
        MergeError: fewer than 1 state dict, or keys / shapes / dtypes / integer buffers differ.
        WeightsError: wrong number of weights, or NaN / inf weights.
    """
    sds = list(state_dicts)
    _refuse("weighted_sum", merge_problems(sds, [f"member {i}" for i in range(len(sds))]) if sds
            else ["needs at least 1 state dict; got 0"])
    w = as_weights([1.0 / len(sds)] * len(sds) if weights is None else weights, len(sds), "weighted_sum",
                   simplex=False).tolist()
    return _build(sds[0], lambda k: sum(wi * _acc(sd[k], sds[0][k]) for wi, sd in zip(w, sds)))


def task_vectors(parent: StateDict, children: Sequence[StateDict]) -> list[dict[str, Tensor]]:
    """Task vectors ``τ_i = θ_i − θ_p`` (Ilharco et al. 2023) of the floating tensors.

    Returns:
        One dict per child, ``key -> τ_i[key]`` in float64 (complex128 for complex keys), same
        shapes as the parent's tensors, in the parent's key order; integer / bool buffers are
        left out (they must equal the parent's).

    Raises:
        MergeError: no children, or a child's keys / shapes / dtypes / integer buffers differ
            from the parent's.
    """
    return _deltas(parent, _checked("task_vectors", parent, children))


def task_arithmetic(parent: StateDict, children: Sequence[StateDict], weights: Any = None,
                    scale: float = 1.0) -> dict[str, Tensor]:
    """Task arithmetic ``θ = θ_p + λ Σ_i w_i τ_i`` (Ilharco et al. 2023; MATH §5).

    Args:
        parent: the common starting point ``θ_p`` of the children.
        children: N >= 1 state dicts fine-tuned from ``parent``.
        weights: (N,) finite weights ``w_i`` (default 1 each: the sum of the task vectors).
        scale: λ, a finite number.

    Raises:
        MergeError: bad ``scale``, no children, or children that do not fit the parent.
        WeightsError: wrong number of weights, or NaN / inf weights.
    """
    children = _checked("task_arithmetic", parent, children, _finite("scale", scale))
    w = _weights(weights, len(children), "task_arithmetic", positive=False)
    return _add(parent, _linear(_deltas(parent, children), w), scale)


def ties(parent: StateDict, children: Sequence[StateDict], density: float = 0.2, scale: float = 1.0,
         weights: Any = None) -> dict[str, Tensor]:
    """TIES-merging (Yadav et al., NeurIPS 2023, Alg. 1) of children fine-tuned from ``parent``.

    1. Trim: per tensor (not over the whole model) keep exactly ``k = ceil(density · numel)``
       entries of each ``τ_i``, the k largest ``|τ_i|``; ties at the threshold go to the
       earlier entry in row-major order. The rest become 0: ``τ̂_i``.
    2. Elect: ``γ = sign(Σ_i w_i τ̂_i)`` per entry.
    3. Disjoint mean: ``τ_m = Σ_{i∈A} w_i τ̂_i / Σ_{i∈A} w_i`` over ``A`` = the tasks whose
       ``τ̂_i`` is non-zero with sign γ (0 where A is empty); ``θ = θ_p + λ τ_m``.

    With unit weights this is the paper's algorithm; weighted, it is mergekit's ``ties``.

    Args:
        parent: the common starting point ``θ_p`` (real tensors only).
        children: N >= 1 state dicts fine-tuned from ``parent``.
        density: fraction of entries kept per tensor, in (0, 1] (1: no trimming).
        scale: λ, a finite number.
        weights: (N,) weights ``w_i > 0`` (default 1 each).

    Raises:
        MergeError: density outside (0, 1], bad scale, complex tensors, non-positive weights,
            no children, or children that do not fit the parent.
        WeightsError: wrong number of weights, or NaN / inf weights.
    """
    problems = _in_range("density", density, 0.0, 1.0, True, False) + _finite("scale", scale)
    children = _checked("ties", parent, children, problems + _no_complex(parent))
    w = _weights(weights, len(children), "ties", positive=True)
    return _add(parent, _ties_tau(_deltas(parent, children), density, w), scale)


def dare(parent: StateDict, children: Sequence[StateDict], drop: float = 0.9, seed: int = 0, weights: Any = None,
         scale: float = 1.0, combine: str = "sum", density: float = 1.0) -> dict[str, Tensor]:
    """DARE (Yu et al., ICML 2024, Eq. 2): drop and rescale each task vector, then combine.

    Each entry of ``τ_i[key]`` is kept with probability ``1 − drop``: ``u ~ U[0, 1)`` drawn in
    float64 on CPU by ``torch.rand(shape, generator=torch.Generator().manual_seed(
    derive_seed(seed, "dare", i, key)))`` (i = the child's index), kept where ``u >= drop``;
    survivors are divided by ``1 − drop`` so ``E[τ̃_i] = τ_i``. The draws depend only on
    (seed, i, key), not on dict order or device. Then ``combine``:

    - ``"sum"``: task arithmetic ``θ_p + λ Σ_i w_i τ̃_i`` (``drop=0`` is task arithmetic exactly);
    - ``"ties"``: :func:`ties` steps 1-3 on the τ̃_i; the default ``density=1`` skips the
      magnitude trim (DARE's random drop replaces it, mergekit's ``dare_ties``).

    Args:
        parent, children: as in :func:`task_arithmetic`.
        drop: drop probability p in [0, 1).
        seed: integer seed of the drop masks.
        weights: (N,) weights (default 1 each; > 0 for ``combine="ties"``).
        scale: λ, a finite number.
        combine: ``"sum"`` or ``"ties"``.
        density: TIES trim after the drop, in (0, 1] (``combine="ties"`` only).

    Raises:
        MergeError: drop / density out of range, unknown combine, bad seed or scale, no
            children, or children that do not fit the parent.
        WeightsError: wrong number of weights, or NaN / inf weights.
    """
    problems = _in_range("drop", drop, 0.0, 1.0, False, True) + _in_range("density", density, 0.0, 1.0, True, False)
    problems += _finite("scale", scale) + ([] if combine in COMBINES else
                                           [f"combine must be one of {', '.join(COMBINES)}; got {combine!r}"])
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(f"seed must be an integer; got {seed!r}")
    if combine == "ties":
        problems += _no_complex(parent)
    children = _checked("dare", parent, children, problems)
    w = _weights(weights, len(children), "dare", positive=combine == "ties")
    taus = [{k: _drop_rescale(v, drop, seed, i, k) for k, v in tau.items()}
            for i, tau in enumerate(_deltas(parent, children))]
    return _add(parent, _linear(taus, w) if combine == "sum" else _ties_tau(taus, density, w), scale)


_RULE_FNS = {"weighted_sum": weighted_sum, "task_arithmetic": task_arithmetic, "ties": ties, "dare": dare}


def rule_options(rule: str) -> dict[str, Any]:
    """The options a rule of :data:`RULES` takes and their defaults, e.g. ``{"density": 0.2, ...}``."""
    if rule not in RULES:
        raise MergeError(f"unknown merge rule {rule!r}; known: {', '.join(RULES)}")
    params = inspect.signature(_RULE_FNS[rule]).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("state_dicts", "parent", "children")}


def merge(rule: str, parent: StateDict | None, children: Sequence[StateDict], **options: Any) -> dict[str, Tensor]:
    """``merge("ties", θ_p, [θ_1, θ_2], density=0.3)``: one of :data:`RULES` by name.

    ``weighted_sum`` needs no parent; given one, the children are checked against it but it
    does not enter the sum. Every other rule needs the parent.

    Raises:
        MergeError: unknown rule, an option the rule does not take, a missing parent, or
            anything the rule itself refuses.
    """
    known = rule_options(rule)
    bad = [o for o in options if o not in known]
    if bad:
        raise MergeError(f"{rule} does not take option(s) {', '.join(bad)}; it takes {', '.join(known)}")
    if rule == "weighted_sum":
        if parent is not None:
            _checked("weighted_sum", parent, children)
        return weighted_sum(children, **options)
    if parent is None:
        raise MergeError(f"{rule} needs the parent state dict (task vectors are θ_i − θ_parent); "
                         "only weighted_sum takes parent=None")
    return _RULE_FNS[rule](parent, children, **options)
