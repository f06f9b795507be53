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

__all__ = ["PropertyEmbedding", "property_targets", "time_and_condition"]


class PropertyEmbedding(nn.Module):
    """Property targets (batch, k) in physical units -> features (batch, out).

    Each finite target ``c_p`` is normalised, ``z_p = (c_p - mean_p) / std_p``, and embedded as
    ``z_p w_p + b_p``; a NaN target uses the learned null vector ``n_p``. The k embeddings are
    concatenated and passed through a two-layer MLP.
    """

    def __init__(self, k: int, width: int, out: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.weight = nn.Parameter(torch.randn(k, width))
        self.bias = nn.Parameter(torch.zeros(k, width))
        self.null = nn.Parameter(torch.randn(k, width))
        self.mlp = nn.Sequential(nn.Linear(k * width, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, cond: Tensor) -> Tensor:
        z = (cond - self.mean.to(cond.dtype)) / self.std.to(cond.dtype)
        missing = torch.isnan(z)[..., None]
        feat = torch.where(missing, self.null, torch.nan_to_num(z)[..., None] * self.weight + self.bias)
        return self.mlp(feat.flatten(1))


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
