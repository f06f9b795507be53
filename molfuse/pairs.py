"""Pair features in one state tensor, each unordered pair stored once (MATH §6, pair features).

A molecule-graph state of N node rows is ``x`` (batch, N, F + N·B): row i holds node i's F
channels, then B channels for each partner j, ``x[:, i, F + j·B + b]``. Only the upper triangle
``j > i`` between two real nodes is state; the diagonal, the lower triangle and every pair that
touches a padding node are zero. So a plain sum over the entries of a state counts each free
pair once, which is what every sum of the fusion core does. :class:`~molfuse.spaces.MoleculeGraph`
is the space of such states; the functions here move between a state and its parts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import ConventionError

__all__ = ["free_pairs", "pair_block", "pack", "unpack"]


def free_pairs(mask: Tensor) -> Tensor:
    """(batch, N, N) bool: True on the pairs ``i < j`` of two real nodes, for a (batch, N) bool mask."""
    n = mask.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
    return upper & mask[:, :, None] & mask[:, None, :]


def pair_block(x: Tensor, node_channels: int, pair_channels: int) -> Tensor:
    """The pair channels of states ``x`` (..., N, F + N·B) as a (..., N, N, B) view: entry
    ``[..., i, j, b]`` is channel b of the pair (i, j) as stored in row i."""
    n = x.shape[-2]
    return x[..., node_channels:].reshape(*x.shape[:-1], n, pair_channels)


def _real(mask: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    return torch.ones(batch, n, dtype=torch.bool, device=device) if mask is None else mask.to(device)


def pack(positions: Tensor, node_features: Tensor, pairs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Lay parts out as one state ``x`` (batch, N, F + N·B), F = c + f: the positions and node
    features of the real nodes, and the upper triangle of ``pairs`` between real nodes.

    The state is not centred here (``MoleculeGraph.project`` centres the positions); the
    diagonal and pairs touching padding nodes are not state and are dropped, padding rows zeroed.

    Args:
        positions: (batch, N, c) centred channels (3-D positions, Å).
        node_features: (batch, N, f) free node channels (atom types, charges).
        pairs: (batch, N, N, B) pair channels (bond orders), symmetric over real pairs.
        mask: (batch, N) bool, real nodes (None: all real).

    Raises:
        ConventionError: the shapes disagree, or ``pairs`` is not symmetric on a real pair
            (naming the sample and pair): symmetrise it first, ``(p + p.transpose(1, 2)) / 2``.
    """
    b, n = (positions.shape[0], positions.shape[1]) if positions.dim() == 3 else (-1, -1)
    if (b < 0 or node_features.dim() != 3 or tuple(node_features.shape[:2]) != (b, n)
            or pairs.dim() != 4 or tuple(pairs.shape[:3]) != (b, n, n)):
        raise ConventionError(f"pack takes positions (batch, N, c), node_features (batch, N, f) and pairs "
                              f"(batch, N, N, B) with one batch and N; got {tuple(positions.shape)}, "
                              f"{tuple(node_features.shape)} and {tuple(pairs.shape)}")
    real = _real(mask, b, n, positions.device)
    both = (real[:, :, None] & real[:, None, :]).to(pairs.device)
    gap = (pairs - pairs.transpose(1, 2)).abs().amax(-1)
    off = torch.where(both, gap, torch.zeros_like(gap)).flatten(1)
    if bool((off > 0).any()):
        worst = int(off.amax(1).argmax())
        i, j = divmod(int(off[worst].argmax()), n)
        raise ConventionError(f"pack: pairs must be symmetric (pairs[:, i, j] == pairs[:, j, i]) on real nodes; "
                              f"sample {worst}, pair ({i}, {j}) differs by {float(off[worst].max()):.3g}. Each "
                              "unordered pair is stored once: symmetrise first, (p + p.transpose(1, 2)) / 2")
    zero = torch.zeros((), dtype=positions.dtype, device=positions.device)
    nodes = torch.where(real[..., None], torch.cat([positions, node_features], -1), zero)
    upper = torch.where(free_pairs(real)[..., None], pairs.to(nodes), zero)
    return torch.cat([nodes, upper.reshape(b, n, -1)], -1)


def unpack(x: Tensor, node_channels: int, pair_channels: int, centred: int = 3,
           mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The parts of states ``x`` (batch, N, F + N·B), the inverse of :func:`pack` on real entries.

    Returns:
        positions (batch, N, centred), node features (batch, N, F − centred) and pairs
        (batch, N, N, B), symmetric: the stored upper triangle mirrored, zero on the diagonal
        and on pairs touching padding (zero rows for padding nodes).

    Raises:
        ConventionError: ``x`` is not (batch, N, F + N·B).
    """
    f, nb = node_channels, pair_channels
    if x.dim() != 3 or x.shape[2] != f + x.shape[1] * nb:
        raise ConventionError(f"unpack takes states (batch, N, F + N·B) with F = {f}, B = {nb}; got "
                              f"{tuple(x.shape)}")
    real = _real(mask, x.shape[0], x.shape[1], x.device)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    nodes = torch.where(real[..., None], x[..., :f], zero)
    upper = torch.where(free_pairs(real)[..., None], pair_block(x, f, nb), zero)
    return nodes[..., :centred], nodes[..., centred:], upper + upper.transpose(1, 2)
