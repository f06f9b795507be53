"""``cloud_mlp``: a tiny masked, permutation-equivariant eps-network for point clouds.

Each node sees its own position, the mean of a per-node embedding over the real nodes and
the time; padding nodes never enter the mean, so they cannot change the real nodes' output.
"""

from __future__ import annotations

import torch
from torch import nn

from molfuse.nets.embeddings import TimeEmbedding


class CloudMLP(nn.Module):
    prediction = "eps"

    def __init__(self, channels: int = 3, hidden: int = 64, properties: int = 0):
        super().__init__()
        self.architecture = {"name": "cloud_mlp", "config": {"channels": channels, "hidden": hidden,
                                                             "properties": properties}}
        self.properties = properties
        self.null_cond = [0.0] * properties if properties else None  # "no property" (no dropout trained here)
        self.time = TimeEmbedding(16, hidden)
        self.prop = nn.Linear(properties, hidden) if properties else None
        self.embed = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.out = nn.Sequential(nn.Linear(channels + 2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None, mask: torch.Tensor | None = None) -> torch.Tensor:
        m = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
        h = self.embed(x) * m[..., None]
        pooled = h.sum(1, keepdim=True) / m.sum(1, keepdim=True)[..., None]
        e = self.time(t)
        if self.prop is not None and cond is not None:  # numeric property targets (batch, k)
            e = e + self.prop(torch.as_tensor(cond, dtype=x.dtype, device=x.device).reshape(x.shape[0], -1))
        e = e[:, None, :].expand(-1, x.shape[1], -1)
        return self.out(torch.cat([x, pooled.expand_as(h) + e, h], -1)) * m[..., None]
