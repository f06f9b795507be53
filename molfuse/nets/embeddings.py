"""Time embeddings shared by score networks (UNet, MLPs)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal_embedding", "TimeEmbedding"]


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Transformer-style features of times ``t`` (batch,) -> (batch, dim).

    ``[cos(scale t w_k), sin(scale t w_k)]`` with ``w_k = max_period^(-k / (dim/2))``. With
    ``t in [0, 1]`` and ``scale = 1000`` the phases span the range DDPM's integer steps did.
    An odd ``dim`` gets one zero column at the end.
    """
    if t.dim() != 1:
        raise ValueError(f"t must be (batch,); got shape {tuple(t.shape)}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))
    phase = scale * t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t`` followed by a two-layer MLP: (batch,) -> (batch, out_dim).

    Args:
        dim: width of the sinusoidal features.
        out_dim: output width (default ``4 * dim``).
        scale: multiplies ``t`` before the sinusoids (see :func:`sinusoidal_embedding`).
    """

    def __init__(self, dim: int, out_dim: int | None = None, scale: float = 1000.0):
        super().__init__()
        out_dim = out_dim or 4 * dim
        self.dim, self.scale = dim, scale
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim, self.scale))
