"""Numeric conditions (property targets) for score networks, with a learned "no condition".

A condition is a (batch, k) tensor of targets in physical units (ring count, helix fraction);
a NaN entry means "no condition" for that target and takes a learned null embedding, which is
what classifier-free dropout trains (``null_cond = nan`` in a card).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .embeddings import sinusoidal_embedding

__all__ = ["PropertyEmbedding", "centres_fit", "property_targets", "time_and_condition"]


class PropertyEmbedding(nn.Module):
    """Property targets (batch, k) in physical units -> features (batch, out).

    Each finite target ``c_p`` is normalised, ``z_p = (c_p - mean_p) / std_p``, and embedded as
    ``z_p w_p + b_p``; a NaN target uses the learned null vector ``n_p``. The k embeddings are
    concatenated and passed through a two-layer MLP.

    With ``centres`` (k lists of increasing values in physical units, e.g. the ring counts
    0 … 6), each finite target also adds ``Σ_j g_j(c_p) v_pj``: Gaussian bumps
    ``g_j = exp(-((c_p - μ_j) / Δ)² / 2)`` at the centres ``μ_j`` (``Δ`` the smallest spacing),
    so that each value, not only the direction of larger values, has its own embedding (a
    count read as "exactly 3", not "more rings"). The MLP's output layer then starts at zero:
    the embedding adds nothing until trained, so a net initialised from an unconditional parent
    starts as that parent exactly.
    """

    def __init__(self, k: int, width: int, out: int, mean: Sequence[float], std: Sequence[float],
                 centres: Sequence[Sequence[float]] | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.weight = nn.Parameter(torch.randn(k, width))
        self.bias = nn.Parameter(torch.zeros(k, width))
        self.null = nn.Parameter(torch.randn(k, width))
        self.mlp = nn.Sequential(nn.Linear(k * width, out), nn.SiLU(), nn.Linear(out, out))
        if centres is not None and not centres_fit(centres, k):
            raise ValueError(f"centres must be {k} lists of at least 2 increasing finite values; got {centres}")
        self.centres = None if centres is None else [[float(v) for v in c] for c in centres]
        if self.centres is not None:
            self.bumps = nn.ModuleList(nn.Linear(len(c), width, bias=False) for c in self.centres)
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, cond: Tensor) -> Tensor:
        z = (cond - self.mean.to(cond.dtype)) / self.std.to(cond.dtype)
        missing = torch.isnan(z)[..., None]
        value = torch.nan_to_num(z)[..., None] * self.weight + self.bias
        if self.centres is not None:
            value = value + torch.stack([self._bumps(torch.nan_to_num(cond[:, p]), p)
                                         for p in range(len(self.centres))], 1)
        feat = torch.where(missing, self.null, value)
        return self.mlp(feat.flatten(1))

    def _bumps(self, c: Tensor, p: int) -> Tensor:
        """(batch, width): the Gaussian bumps of property p's targets ``c`` (batch,), embedded."""
        mu = torch.tensor(self.centres[p], dtype=c.dtype, device=c.device)
        spread = float(min(b - a for a, b in zip(self.centres[p], self.centres[p][1:])))
        return self.bumps[p](torch.exp(-0.5 * ((c[:, None] - mu) / spread) ** 2))


def centres_fit(centres: Any, k: int) -> bool:
    """Whether ``centres`` are k lists of at least 2 strictly increasing finite numbers (bools refused)."""
    return (isinstance(centres, (list, tuple)) and len(centres) == k and all(
        isinstance(c, (list, tuple)) and len(c) >= 2
        and all(isinstance(u, (int, float)) and not isinstance(u, bool) and math.isfinite(u) for u in c)
        and all(b > a for a, b in zip(c, c[1:])) for c in centres))


def property_targets(cond: Any, k: int, batch: int, like: Tensor, owner: str) -> Tensor | None:
    """A net's ``cond`` argument as targets (batch, k), NaN for "no condition".

    Args:
        cond: None (every target missing), a scalar (one value for every target, e.g. the null
            condition nan), (k,), (1, k) or (batch, k).
        k: the net's number of properties (0: an unconditional net, which refuses a condition).
        batch: the batch size.
        like: a tensor whose dtype and device the targets take.
        owner: the net's class name, for messages.

    Returns:
        (batch, k) targets, or None for an unconditional net called without a condition.
    """
    if k == 0:
        if cond is not None:
            raise ValueError(f"this {owner} is unconditional (num_properties=0) but got a condition; "
                             "pass cond=None or build it with num_properties > 0")
        return None
    if cond is None:
        return like.new_full((batch, k), math.nan)
    c = torch.as_tensor(cond, dtype=like.dtype, device=like.device)
    if c.dim() == 0:
        c = c.expand(1, k)
    elif c.dim() == 1 and c.shape[0] == k:
        c = c[None]
    if c.dim() != 2 or c.shape[1] != k or c.shape[0] not in (1, batch):
        raise ValueError(f"cond must be property targets (batch, k) = ({batch}, {k}) or (1, {k}); "
                         f"got shape {tuple(c.shape)}")
    return c.expand(batch, k)


def time_and_condition(t: Any, cond: Any, batch: int, like: Tensor, time_emb: nn.Module, time_dim: int,
                       cond_emb: nn.Module | None, k: int, owner: str) -> Tensor:
    """(batch, width) conditioning of a net: ``time_emb`` of the sinusoidal features of ``t``
    (a float or (batch,)) plus ``cond_emb`` of the targets :func:`property_targets` reads from ``cond``."""
    tb = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1)
    if tb.shape[0] not in (1, batch):
        raise ValueError(f"t must be (batch,) = ({batch},); got shape {tuple(tb.shape)}")
    c = time_emb(sinusoidal_embedding(tb.expand(batch), time_dim).to(like.dtype))
    targets = property_targets(cond, k, batch, like, owner)
    return c if targets is None else c + cond_emb(targets)
