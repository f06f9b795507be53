"""What a state is (MATH §6): the linear subspace it lives on, its noise and its degrees of freedom.

A batch of states is a tensor ``x`` (batch, ...) plus an optional node mask (batch, N): the
mask travels with the batch (samplers, losses, density estimators and every fusion operator
take ``mask=``), and the *geometry* — which entries are real, which channels are centred —
is a :class:`Space` that a model declares as ``model.space`` (like its ``schedule``) and that
the members of an operator must share (:func:`resolve_space`).

- :class:`Euclidean` (the default): every coordinate is a degree of freedom; no mask.
- :class:`PointCloud`: ``x`` is (batch, N, F) with a (batch, N) node mask; the first
  ``centred`` channels (3-D positions) have zero centre of mass over the real nodes, the
  others are free; padding nodes are zero. A sample with n real nodes has
  ``D = n F - centred`` degrees of freedom (``3 (n - 1)`` for bare positions).
- :class:`Chain`: per-residue features of chains whose ends are trimmed per channel (angles).
- :class:`MoleculeGraph`: molecules with bonds in the state (MATH §6, pair features). ``x`` is
  (batch, N, F + N·B): node i's row holds its F node channels (the first ``centred`` are
  positions, centred over the real nodes as in a point cloud) and then B pair channels for each
  partner j, ``x[:, i, F + j·B + b]``. Only the upper triangle ``j > i`` between two real nodes is
  free; the diagonal, the lower triangle and pairs touching padding are zero. Each unordered pair
  is thus stored once, the projection is coordinate-aligned zeroing plus the centring, the noise
  (ambient ``N(0, I)`` projected) is drawn once per pair, and the plain sums of the Itô, OR / AND
  and FKC updates count every free variable once: ``D = n F - centred + B n (n - 1) / 2``.
  :func:`molfuse.pairs.pack` / :func:`~molfuse.pairs.unpack` (also ``MoleculeGraph.pack`` /
  ``.unpack``) go between a state and its parts (positions, node features, symmetric pairs).

Invariant kept by every molfuse sampler and operator: states, scores, drifts and noise are
projected (:meth:`Space.project`), so they are exactly zero on padding and centred where
required. Inner products and norms (:meth:`Space.inner`) run over the real entries.
"""

from __future__ import annotations

import inspect
import math
import operator
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .base.configured import Configured
from .errors import ConventionError
from .pairs import free_pairs, pack, pair_block, unpack

__all__ = ["Space", "Euclidean", "PointCloud", "Chain", "MoleculeGraph", "SPACES", "space_from_config", "resolve_space",
           "EUCLIDEAN", "node_count_distribution", "draw_node_counts", "node_masks", "condition_key",
           "node_counts_by_condition", "size_histogram"]


class Space(Configured, ABC):
    """The subspace a state lives on; all methods take the batch's mask (None: no mask)."""

    kind: str = ""

    @abstractmethod
    def check(self, shape: Sequence[int], mask: Tensor | None) -> None:
        """Raise ConventionError when ``shape`` (batch, ...) or ``mask`` do not fit this space."""

    @abstractmethod
    def project(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Orthogonal projection of vectors ``v`` (batch, ...) onto the subspace."""

    @abstractmethod
    def dof(self, shape: Sequence[int], mask: Tensor | None = None) -> Tensor:
        """Degrees of freedom D of each sample, (batch,) float64 (MATH §6)."""

    @abstractmethod
    def config(self) -> dict:
        """JSON-able description (cards record it); equal configs are the same space."""

    @property
    def trivial(self) -> bool:
        """True when projection is the identity (no masks, no constraints)."""
        return False

    def noise(self, shape: Sequence[int], mask: Tensor | None = None, generator: torch.Generator | None = None,
              device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """A standard normal draw on the subspace: ambient ``N(0, I)`` projected (that is
        ``N(0, P)``, the unit Gaussian of the subspace). Drawn on the generator's device, then
        moved, so seeds give the same numbers on every device."""
        gdev = generator.device if generator is not None else device
        z = torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)
        return z if self.trivial else self.project(z, mask)

    def inner(self, a: Tensor, b: Tensor, mask: Tensor | None = None, lead: int = 0) -> Tensor:
        """``<a, b>`` over real entries in float64: (batch, *lead dims) for ``a``, ``b``
        (batch, *lead, *event) (``lead`` extra leading axes, e.g. members)."""
        n = a.shape[0]
        keep = a.shape[1:1 + lead]
        a64 = a.reshape(n, *keep, -1).to(torch.float64)
        b64 = b.reshape(n, *keep, -1).to(torch.float64)
        return (a64 * b64).sum(-1)

    def sqnorm(self, a: Tensor, mask: Tensor | None = None, lead: int = 0) -> Tensor:
        return self.inner(a, a, mask, lead)

    def resize(self, x: Tensor, nodes: int) -> Tensor:
        """States with node rows ``x`` (..., N, W) as states of ``nodes`` rows: the first
        ``min(N, nodes)`` rows kept, zero rows appended (a size-n template in an N-node batch)."""
        have = x.shape[-2]
        if nodes <= have:
            return x[..., :nodes, :]
        return torch.cat([x, x.new_zeros(*x.shape[:-2], nodes - have, x.shape[-1])], dim=-2)



class Euclidean(Space):
    """Plain vectors, images, tensors: every coordinate is a degree of freedom; no mask."""

    kind = "euclidean"

    @property
    def trivial(self) -> bool:
        return True

    def check(self, shape: Sequence[int], mask: Tensor | None) -> None:
        if mask is not None:
            raise ConventionError("a Euclidean state carries no node mask; models with masks declare "
                                  "space = PointCloud(...) (MATH §6)")
        if len(shape) < 2:
            raise ConventionError(f"states are (batch, ...) with at least one coordinate; got shape {tuple(shape)}")

    def project(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return v

    def dof(self, shape: Sequence[int], mask: Tensor | None = None) -> Tensor:
        d = 1
        for s in shape[1:]:
            d *= int(s)
        return torch.full((int(shape[0]),), float(d), dtype=torch.float64)

    def config(self) -> dict:
        return {"kind": self.kind}


class PointCloud(Space):
    """Padded point clouds ``x`` (batch, N, F) with a node mask (batch, N) (MATH §6).

    Args:
        centred: how many leading channels are centred (zero centre of mass over the real
            nodes): 3 for 3-D positions, 0 for free node features only.
    """

    kind = "point_cloud"

    def __init__(self, centred: int = 3):
        if isinstance(centred, bool) or not isinstance(centred, int) or centred < 0:
            raise ConventionError(f"PointCloud(centred=...) takes a channel count >= 0; got {centred!r}")
        self.centred = centred

    def check(self, shape: Sequence[int], mask: Tensor | None) -> None:
        if len(shape) != 3:
            raise ConventionError(f"point clouds are (batch, nodes, channels); got shape {tuple(shape)}")
        if shape[2] < self.centred:
            raise ConventionError(f"{shape[2]} channels per node but {self.centred} are centred positions")
        _check_node_mask(shape, mask)

    def _weights(self, v: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return torch.ones(v.shape[:-1] + (1,), dtype=v.dtype, device=v.device)
        m = mask.to(device=v.device, dtype=v.dtype)
        return m.reshape(m.shape[0], *([1] * (v.dim() - 3)), m.shape[1], 1)  # (batch, [lead,] N, 1)

    def project(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._weights(v, mask)
        v = v * m
        if not self.centred:
            return v
        c = self.centred
        count = m.sum(-2, keepdim=True).clamp_min(1.0)
        mean = v[..., :c].sum(-2, keepdim=True) / count
        return torch.cat([(v[..., :c] - mean) * m, v[..., c:]], dim=-1)

    def dof(self, shape: Sequence[int], mask: Tensor | None = None) -> Tensor:
        b, n, f = (int(s) for s in shape)
        nodes = torch.full((b,), float(n), dtype=torch.float64) if mask is None else mask.sum(1).to(torch.float64)
        return nodes * f - self.centred

    def inner(self, a: Tensor, b: Tensor, mask: Tensor | None = None, lead: int = 0) -> Tensor:
        if mask is not None:
            m = mask.to(device=a.device, dtype=torch.float64).reshape(a.shape[0], *([1] * lead), a.shape[-2], 1)
            return (a.to(torch.float64) * b.to(torch.float64) * m).flatten(-2).sum(-1)
        return super().inner(a, b, None, lead)

    def config(self) -> dict:
        return {"kind": self.kind, "centred": self.centred}


class Chain(Space):
    """Per-residue features of chains of several lengths, ``x`` (batch, N, F) with a residue mask
    (batch, N) whose real residues are a prefix (MATH §6, angles).

    Channel ``c`` of residue ``i`` is a degree of freedom when ``head_c <= i < n - tail_c`` for a
    chain of n real residues: a Cα bond angle (i − 1, i, i + 1) exists for ``1 <= i <= n − 2``
    (``trims`` (1, 1)), a virtual dihedral (i − 1 … i + 2) for ``1 <= i <= n − 3`` ((1, 2)).
    Every other entry is padding and zero. The subspace is coordinate-aligned, so the projection
    zeroes padding and nothing is centred; ``D = Σ_c max(0, n − head_c − tail_c)``.

    Args:
        trims: one ``(head, tail)`` pair of non-negative residue counts per channel.
    """

    kind = "chain"

    def __init__(self, trims: Sequence[Sequence[int]]):
        pairs = [tuple(p) for p in trims] if isinstance(trims, (list, tuple)) else None
        if not pairs or any(len(p) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in p)
                            for p in pairs):
            raise ConventionError(f"Chain(trims=...) takes one (head, tail) pair of residue counts >= 0 per channel; "
                                  f"got {trims!r}")
        self.trims = [list(p) for p in pairs]

    @property
    def min_length(self) -> int:
        """The shortest chain with at least one degree of freedom in every channel."""
        return max(h + t for h, t in self.trims) + 1

    def check(self, shape: Sequence[int], mask: Tensor | None) -> None:
        if len(shape) != 3 or shape[2] != len(self.trims):
            raise ConventionError(f"chain states are (batch, residues, {len(self.trims)}); got shape {tuple(shape)}")
        if mask is None:
            if shape[1] < self.min_length:
                raise ConventionError(f"chains of {shape[1]} residues (no mask: all real) are shorter than "
                                      f"{self.min_length} residues (the trims {self.trims} leave a channel empty)")
            return
        if tuple(mask.shape) != (shape[0], shape[1]) or mask.dtype != torch.bool:
            raise ConventionError(f"the residue mask must be bool (batch, residues) = ({shape[0]}, {shape[1]}); "
                                  f"got {mask.dtype} {tuple(mask.shape)}")
        counts = mask.sum(1)
        if bool((counts < self.min_length).any()):
            raise ConventionError(f"{int((counts < self.min_length).sum())} chains are shorter than "
                                  f"{self.min_length} residues (the trims {self.trims} leave a channel empty)")
        prefix = torch.arange(shape[1], device=mask.device)[None, :] < counts[:, None]
        if not bool((prefix == mask).all()):
            raise ConventionError("the residue mask of a chain must mark a prefix (residues 0 .. n − 1 real, "
                                  "then padding); a gap inside a chain is two chains")

    def entries(self, shape: Sequence[int], mask: Tensor | None, device: Any = None) -> Tensor:
        """(batch, N, F) bool: True on the degrees of freedom."""
        b, n = int(shape[0]), int(shape[1])
        counts = torch.full((b,), n, device=device) if mask is None else mask.sum(1).to(device)
        i = torch.arange(n, device=device)[None, :, None]
        head = torch.tensor([h for h, _ in self.trims], device=device)
        tail = torch.tensor([t for _, t in self.trims], device=device)
        return (i >= head) & (i < counts[:, None, None] - tail)

    def project(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        lead = v.dim() - 3  # extra axes between batch and residues (members)
        keep = self.entries((v.shape[0], v.shape[-2], v.shape[-1]), mask, v.device)
        keep = keep.reshape(v.shape[0], *([1] * lead), *keep.shape[1:])
        return torch.where(keep, v, torch.zeros((), dtype=v.dtype, device=v.device))

    def dof(self, shape: Sequence[int], mask: Tensor | None = None) -> Tensor:
        b, n = int(shape[0]), int(shape[1])
        counts = torch.full((b,), n, dtype=torch.long) if mask is None else mask.sum(1).cpu().long()
        return sum((counts - h - t).clamp_min(0) for h, t in self.trims).to(torch.float64)

    def inner(self, a: Tensor, b: Tensor, mask: Tensor | None = None, lead: int = 0) -> Tensor:
        # over the degrees of freedom only: the trimmed ends are not free even when no mask is given
        keep = self.entries((a.shape[0], a.shape[-2], a.shape[-1]), mask, a.device)
        keep = keep.reshape(a.shape[0], *([1] * lead), *keep.shape[1:]).to(torch.float64)
        return (a.to(torch.float64) * b.to(torch.float64) * keep).flatten(-2).sum(-1)

    def config(self) -> dict:
        return {"kind": self.kind, "trims": [list(p) for p in self.trims]}


class MoleculeGraph(Space):
    """Molecules with bonds in the state (MATH §6, pair features): ``x`` (batch, N, F + N·B) with a
    node mask (batch, N).

    Row i holds node i's F channels (the first ``centred`` are positions with zero centre of mass
    over the real nodes, the rest free: atom types, charges), then B channels for each partner j
    (``x[:, i, F + j·B + b]``: bond orders none / single / double / triple / aromatic). The pair
    (i, j) is free for ``i < j`` both real, stored in row i only; every other pair entry is zero.
    A sample with n real nodes has ``D = n F − centred + B n (n − 1) / 2``.

    Args:
        node_channels: F, channels per node, positions included.
        pair_channels: B >= 1, channels per unordered pair.
        centred: how many leading node channels are centred (3 for 3-D positions).
    """

    kind = "molecule_graph"

    def __init__(self, node_channels: int, pair_channels: int, centred: int = 3):
        counts = {"node_channels": node_channels, "pair_channels": pair_channels, "centred": centred}
        if any(isinstance(v, bool) or not isinstance(v, int) for v in counts.values()) or not (
                0 <= centred <= node_channels and pair_channels >= 1):
            raise ConventionError(f"MoleculeGraph takes channel counts 0 <= centred <= node_channels and "
                                  f"pair_channels >= 1 (no pairs: PointCloud); got {counts}")
        self.node_channels, self.pair_channels, self.centred = node_channels, pair_channels, centred
        self._cloud = PointCloud(centred)

    def width(self, nodes: int) -> int:
        """Channels per row of an N-node state: ``F + N·B``."""
        return self.node_channels + nodes * self.pair_channels

    def check(self, shape: Sequence[int], mask: Tensor | None) -> None:
        if len(shape) != 3 or shape[2] != self.width(shape[1]):
            got = tuple(shape)
            n = shape[1] if len(shape) == 3 else "N"
            want = self.width(shape[1]) if len(shape) == 3 else "F + N·B"
            raise ConventionError(f"molecule-graph states are (batch, N, F + N·B) = (batch, {n}, {want}): "
                                  f"{self.node_channels} node channels, then {self.pair_channels} pair channels for "
                                  f"each of the {n} partners; got shape {got}")
        _check_node_mask(shape, mask)

    def entries(self, shape: Sequence[int], mask: Tensor | None, device: Any = None) -> Tensor:
        """(batch, N, F + N·B) bool: True on the node channels of real nodes and the free pairs."""
        b, n = int(shape[0]), int(shape[1])
        real = torch.ones(b, n, dtype=torch.bool, device=device) if mask is None else mask.to(device)
        nodes = real[:, :, None].expand(b, n, self.node_channels)
        pairs = free_pairs(real)[..., None].expand(b, n, n, self.pair_channels).reshape(b, n, -1)
        return torch.cat([nodes, pairs], -1)

    def project(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, f = v.shape[0], v.shape[-2], self.node_channels
        real = torch.ones(b, n, dtype=torch.bool, device=v.device) if mask is None else mask.to(v.device)
        keep = free_pairs(real).reshape(b, *([1] * (v.dim() - 3)), n, n, 1)
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        pairs = torch.where(keep, pair_block(v, f, self.pair_channels), zero)
        return torch.cat([self._cloud.project(v[..., :f], mask), pairs.flatten(-2)], dim=-1)

    def dof(self, shape: Sequence[int], mask: Tensor | None = None) -> Tensor:
        b, n = int(shape[0]), int(shape[1])
        nodes = torch.full((b,), float(n), dtype=torch.float64) if mask is None else mask.sum(1).cpu().to(torch.float64)
        return nodes * self.node_channels - self.centred + self.pair_channels * nodes * (nodes - 1) / 2

    def inner(self, a: Tensor, b: Tensor, mask: Tensor | None = None, lead: int = 0) -> Tensor:
        keep = self.entries((a.shape[0], a.shape[-2]), mask, a.device)
        keep = keep.reshape(a.shape[0], *([1] * lead), *keep.shape[1:]).to(torch.float64)
        return (a.to(torch.float64) * b.to(torch.float64) * keep).flatten(-2).sum(-1)

    def resize(self, x: Tensor, nodes: int) -> Tensor:
        f = self.node_channels
        rows = super().resize(x[..., :f], nodes)
        pairs = super().resize(super().resize(pair_block(x, f, self.pair_channels), nodes).transpose(-3, -2), nodes)
        return torch.cat([rows, pairs.transpose(-3, -2).reshape(*rows.shape[:-1], -1)], dim=-1)

    def pack(self, positions: Tensor, node_features: Tensor, pairs: Tensor, mask: Tensor | None = None) -> Tensor:
        """:func:`molfuse.pairs.pack` with the channel counts checked against this space; not centred
        (:meth:`project` centres)."""
        x = pack(positions, node_features, pairs, mask)
        if positions.shape[-1] != self.centred or x.shape[-1] != self.width(x.shape[1]):
            raise ConventionError(f"{self!r}.pack takes positions (batch, N, {self.centred}), node_features "
                                  f"(batch, N, {self.node_channels - self.centred}) and pairs (batch, N, N, "
                                  f"{self.pair_channels}); got {tuple(positions.shape)}, {tuple(node_features.shape)} "
                                  f"and {tuple(pairs.shape)}")
        self.check(x.shape, mask)
        return x

    def unpack(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`molfuse.pairs.unpack`: (positions, node features, symmetric pairs (batch, N, N, B))."""
        self.check(x.shape, mask)
        return unpack(x, self.node_channels, self.pair_channels, self.centred, mask)

    def config(self) -> dict:
        return {"kind": self.kind, "node_channels": self.node_channels, "pair_channels": self.pair_channels,
                "centred": self.centred}


def _check_node_mask(shape: Sequence[int], mask: Tensor | None) -> None:
    """Raise ConventionError unless ``mask`` is None or a bool (batch, N) node mask for states of
    ``shape`` (batch, N, ...) with at least one real node per sample."""
    if mask is None:
        return
    if tuple(mask.shape) != (shape[0], shape[1]) or mask.dtype != torch.bool:
        raise ConventionError(f"the node mask must be bool (batch, nodes) = ({shape[0]}, {shape[1]}); "
                              f"got {mask.dtype} {tuple(mask.shape)}")
    if bool((mask.sum(1) == 0).any()):
        raise ConventionError(f"{int((mask.sum(1) == 0).sum())} samples have no real node (empty mask rows)")


EUCLIDEAN = Euclidean()
SPACES: dict[str, type[Space]] = {"euclidean": Euclidean, "point_cloud": PointCloud, "chain": Chain,
                                  "molecule_graph": MoleculeGraph}


def space_from_config(config: Mapping[str, Any] | None) -> Space:
    """The :class:`Space` a card's ``space`` entry describes (None: Euclidean)."""
    if config is None:
        return EUCLIDEAN
    if not isinstance(config, Mapping) or config.get("kind") not in SPACES:
        raise ConventionError(f"space must be {{kind: one of {', '.join(SPACES)}, ...}}; got {config!r}")
    params = {k: v for k, v in config.items() if k != "kind"}
    try:
        return SPACES[config["kind"]](**params)
    except TypeError as e:
        raise ConventionError(f"space {dict(config)}: {e}") from None


def resolve_space(models: Sequence[Any], space: Space | None = None) -> Space:
    """The one space the models share (their ``space`` attributes; undeclared means any),
    checked against ``space`` if given; Euclidean when nobody declares one.

    Raises:
        ConventionError: two models (or a model and ``space``) declare different spaces, naming
            both and their spaces; or the shared space has node masks and a model that declares
            no space cannot take ``mask=``.
    """
    source = None if space is None else "the space passed in"
    for m in models:
        s = getattr(m, "space", None)
        if s is None:
            continue
        if not isinstance(s, Space):
            raise ConventionError(f"{_name(m)}.space is {type(s).__name__}, not a molfuse Space")
        if space is None:
            space, source = s, repr(_name(m))
        elif s != space:
            raise ConventionError(f"space mismatch: {_name(m)!r} lives on {s!r} but {source} on {space!r}; members "
                                  "of one operator must share their state space (MATH §6)")
    space = space if space is not None else EUCLIDEAN
    for m in models:
        if not space.trivial and getattr(m, "space", None) is None and not _takes_mask(m):
            raise ConventionError(f"{_name(m)!r} declares no space and takes no mask=, so it cannot run on {space!r} "
                                  f"(the space of {source}): a model of plain vectors declares space = Euclidean(), "
                                  "a point-cloud model takes mask= (MATH §6)")
    return space


def _name(model: Any) -> str:
    return getattr(model, "name", None) or type(model).__name__


def _takes_mask(model: Any) -> bool:
    """Whether ``model(x, t, mask=...)`` can be called (True when its signature cannot be read)."""
    try:
        params = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def node_count_distribution(counts: Sequence[Mapping[Any, float]], weights: Sequence[float] | None = None,
                            rule: str = "mixture") -> dict[int, float]:
    """How a fused sampler draws the node count n of a point cloud from its members' size
    histograms ``p_i(n)`` (MATH §6: the atom count is part of the sample).

    - ``"mixture"`` (OR, random choice): ``Σ_i ω_i p_i(n)`` — a sample is one member's, so its
      size follows that member's histogram with probability ω_i.
    - ``"product"`` (AND, barycenters, ensembles): ``Π_i p_i(n)^{w_i}``, normalised — a size
      every member supports, as the fused density is a (weighted) product of the members'.

    Args:
        counts: one ``{n: count or probability}`` per member (normalised here).
        weights: ω (mixture) or exponents w (product); default uniform 1/K (mixture) or 1 (product).

    Raises:
        ValueError: unknown rule, empty histograms, or (product) no node count all members support.
        ConventionError: a histogram that :func:`size_histogram` refuses (negative counts,
            keys that are not node counts).
    """
    if rule not in ("mixture", "product"):
        raise ValueError(f"rule must be 'mixture' or 'product'; got {rule!r}")
    hists = []
    for i, c in enumerate(counts):
        if not c:
            raise ConventionError(f"member {i} has no node counts (its card needs node_counts)")
        h = {k: v for k, v in size_histogram(c, what=f"member {i}'s node_counts").items() if v > 0}
        total = sum(h.values())
        hists.append({k: v / total for k, v in h.items()})
    k = len(hists)
    w = [1.0 / k if rule == "mixture" else 1.0] * k if weights is None else [float(x) for x in weights]
    sizes = sorted(set().union(*hists))
    if rule == "mixture":
        out = {n: sum(wi * h.get(n, 0.0) for wi, h in zip(w, hists)) for n in sizes}
    else:
        out = {n: math.prod(h.get(n, 0.0) ** wi if wi else 1.0 for wi, h in zip(w, hists)) for n in sizes}
    total = sum(out.values())
    if total <= 0:
        raise ValueError("the members share no node count (their size histograms do not overlap), so a product "
                         f"of their densities has no support: {[sorted(h) for h in hists]}")
    return {n: v / total for n, v in out.items() if v > 0}


def size_histogram(counts: Any, max_nodes: int | None = None, what: str = "node_counts") -> dict[int, float]:
    """A size histogram ``{n: count}`` checked and with integer keys (JSON writes them as strings).

    Args:
        counts: a non-empty mapping from node counts ``1 <= n <= max_nodes`` (ints, or strings of
            digits as a card stores them) to finite counts >= 0, at least one of them positive.
        max_nodes: the padded state's node count (a card's ``shape[0]``); None: no upper bound.
        what: names the histogram in errors, e.g. ``"node_counts_by_condition['3']"``.

    Raises:
        ConventionError: naming ``what`` and the first bad key or count.
    """
    if not isinstance(counts, Mapping) or not counts:
        raise ConventionError(f"{what}: expected a non-empty mapping {{node count: how many}}; got {counts!r}")
    out: dict[int, float] = {}
    for key, value in counts.items():
        n = _node_count(key)
        if n is None or n < 1:
            raise ConventionError(f"{what}: key {key!r} is not a node count (a whole number >= 1)")
        if max_nodes is not None and n > max_nodes:
            raise ConventionError(f"{what}: node count {n} exceeds the model's {max_nodes} nodes (shape[0])")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConventionError(f"{what}[{key!r}]: expected a finite count >= 0; got {value!r}")
        out[n] = float(value)
    if not any(v > 0 for v in out.values()):
        raise ConventionError(f"{what}: every count is zero; a size histogram needs at least one positive count")
    return out


def _node_count(key: Any) -> int | None:
    """``key`` as an int when it is one (or a string of digits), else None."""
    if isinstance(key, str):
        return int(key) if key.isascii() and key.isdigit() else None
    try:
        return None if isinstance(key, bool) else operator.index(key)
    except TypeError:
        return None


def condition_key(values: Any) -> str | None:
    """The key of a condition in a card's ``node_counts_by_condition``: its values joined by
    commas (``[3.0, 4.0]`` -> ``"3,4"``), or None when a value is not a whole number (a continuous
    condition has no histogram of its own)."""
    flat = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).reshape(-1).tolist()]
    if not flat or any(not math.isfinite(v) or v != round(v) for v in flat):
        return None
    return ",".join(str(int(v)) for v in flat)


def node_counts_by_condition(mask: Tensor, cond: Tensor, max_keys: int = 256) -> dict[str, dict[int, int]] | None:
    """Size histograms per condition value, ``{condition_key: {n: count}}`` (MATH §6: the atom count
    is part of the sample, so a sampler prompted with a condition draws n from ``p(n | c)``).

    Only for whole-number conditions (counts such as rings or heteroatoms) with at most ``max_keys``
    distinct values; otherwise None and samplers use the marginal histogram.

    Args:
        mask: (n, N) bool node masks of the training clouds.
        cond: (n, k) or (n,) condition values of the same clouds.
    """
    cond = torch.as_tensor(cond, dtype=torch.float64).reshape(len(mask), -1)
    if not bool(torch.isfinite(cond).all()) or not bool((cond == cond.round()).all()):
        return None
    keys, inverse = torch.unique(cond, dim=0, return_inverse=True)
    if len(keys) > max_keys:
        return None
    sizes = mask.sum(1)
    out = {}
    for j, key in enumerate(keys):
        n, c = torch.unique(sizes[inverse == j], return_counts=True)
        out[condition_key(key)] = {int(a): int(b) for a, b in zip(n.tolist(), c.tolist())}
    return out


def draw_node_counts(dist: Mapping[int, float], n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` node counts (int64) drawn from ``{count: probability}``."""
    sizes = torch.as_tensor(sorted(dist), dtype=torch.long)
    probs = torch.as_tensor([dist[int(s)] for s in sizes], dtype=torch.float64)
    return sizes[torch.multinomial(probs, n, replacement=True, generator=generator)]


def node_masks(counts: Tensor, max_nodes: int) -> Tensor:
    """(n, max_nodes) bool masks with the first ``counts[i]`` nodes real."""
    if int(counts.max()) > max_nodes:
        raise ConventionError(f"a node count {int(counts.max())} exceeds the {max_nodes} nodes of the padded state")
    return torch.arange(max_nodes)[None, :] < counts.reshape(-1, 1)

