"""Small discriminators on predicted clean states ``x̂_0`` for the optional adversarial term of a
distillation merge (MATH §5, DMM): ``D(x0_hat, t, mask) -> (batch, classes)`` logits.

- :class:`FlatDiscriminator`: dense states (vectors, images): flattened ``x̂_0`` and time
  features through an MLP.
- :class:`CloudDiscriminator`: point clouds (molecules, Cα traces): invariant to rotations,
  translations, reflections and the order of points — per point, a Gaussian basis of its
  distances to the other real points (summed) and its extra channels (atom types), an MLP, a
  masked mean over points, and an MLP with the time features.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .embeddings import sinusoidal_embedding

__all__ = ["FlatDiscriminator", "CloudDiscriminator", "discriminator_for"]


class FlatDiscriminator(nn.Module):
    """Logits (batch, classes) of dense states (batch, *shape) at times t (batch,)."""

    def __init__(self, shape: Sequence[int], classes: int, hidden: int = 256, time_dim: int = 32):
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(nn.Linear(math.prod(shape) + time_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, classes))

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        tf = sinusoidal_embedding(t.reshape(-1).expand(x.shape[0]), self.time_dim).to(x.dtype)
        return self.mlp(torch.cat([x.flatten(1), tf], 1))


class CloudDiscriminator(nn.Module):
    """Logits (batch, classes) of point clouds (batch, N, channels) with mask (batch, N); the
    first ``centred`` channels are positions (model units), the rest per-point features."""

    def __init__(self, channels: int, classes: int, centred: int = 3, hidden: int = 64, basis: int = 16,
                 max_radius: float = 3.0, time_dim: int = 32):
        super().__init__()
        self.centred, self.time_dim, self.max_radius = centred, time_dim, max_radius
        self.register_buffer("centres", torch.linspace(0.0, max_radius, basis), persistent=False)
        self.point = nn.Sequential(nn.Linear(basis + channels - centred, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.head = nn.Sequential(nn.Linear(hidden + time_dim, hidden), nn.SiLU(), nn.Linear(hidden, classes))

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        mask = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask
        pos, feat = x[..., :self.centred], x[..., self.centred:]
        d = torch.cdist(pos, pos)  # (b, n, n)
        width = self.max_radius / max(len(self.centres) - 1, 1)
        rbf = torch.exp(-((d[..., None] - self.centres) / width) ** 2)  # (b, n, n, basis)
        pair = (mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=x.device))
        h = self.point(torch.cat([(rbf * pair[..., None]).sum(2), feat], -1))  # (b, n, hidden)
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        tf = sinusoidal_embedding(t.reshape(-1).expand(b), self.time_dim).to(x.dtype)
        return self.head(torch.cat([pooled, tf], 1))


def discriminator_for(space: dict, shape: Sequence[int], classes: int) -> nn.Module:
    """The default discriminator for a card's ``space`` and sample ``shape``."""
    if (space or {}).get("kind") == "point_cloud":
        return CloudDiscriminator(int(shape[-1]), classes, centred=int(space.get("centred", 3)))
    return FlatDiscriminator(shape, classes)
