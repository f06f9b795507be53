"""A small time-embedded MLP eps-network for vector / tabular data (architecture ``"mlp"``).

The vectors modality registers it as ``"mlp"``: ``molfuse.nets.build("mlp", {"dim": 2, ...})``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .embeddings import TimeEmbedding

__all__ = ["MLPScoreNet"]


class MLPScoreNet(nn.Module):
    """Residual MLP predicting the noise ``eps`` (MATH §1) from ``(x, t[, class])``.

    ``h = W_in x``; each block adds ``W2 SiLU(W1 SiLU(h + e))`` where ``e`` is the time
    embedding (sinusoidal -> MLP) plus the class embedding. Class conditioning (when
    ``num_classes > 0``) has one extra embedding row, the null class ``num_classes``, used
    for unconditional calls and classifier-free dropout. The output layer starts at zero.

    Args:
        dim: data dimension D; input and output are (batch, D).
        hidden: width of every hidden layer.
        depth: number of residual blocks.
        time_dim: size of the sinusoidal time features (even).
        num_classes: number of class labels (0: unconditional).
    """

    prediction = "eps"

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 64, num_classes: int = 0):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1 or num_classes < 0 or time_dim < 2 or time_dim % 2:
            raise ValueError(f"MLPScoreNet needs dim, hidden, depth >= 1, num_classes >= 0 and an even time_dim >= 2; "
                             f"got dim={dim}, hidden={hidden}, depth={depth}, time_dim={time_dim}, "
                             f"num_classes={num_classes}")
        self.dim, self.time_dim, self.num_classes = dim, time_dim, num_classes
        self.architecture = {"name": "mlp", "config": {"dim": dim, "hidden": hidden, "depth": depth,
                                                       "time_dim": time_dim, "num_classes": num_classes}}
        self.null_cond = num_classes if num_classes else None
        self.time_emb = TimeEmbedding(time_dim, hidden)
        self.class_emb = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """eps prediction (batch, D) for ``x`` (batch, D), ``t`` (batch,) in [0, 1] and
        ``cond`` None (null class), an int, or (batch,) / (1,) integer labels."""
        e = self.time_emb(t.expand(x.shape[0])).to(x.dtype)
        if self.class_emb is not None:
            e = e + self.class_emb(self._labels(cond, x))
        elif cond is not None:
            raise ValueError("this MLPScoreNet is unconditional (num_classes=0) but got a condition")
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)

    def _labels(self, cond: Any, x: Tensor) -> Tensor:
        if cond is None:
            return torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        c = torch.as_tensor(cond, device=x.device)
        if c.is_floating_point() or c.dim() > 1:
            raise ValueError(f"class labels must be integers of shape (batch,); got {c.dtype} {tuple(c.shape)}")
        c = c.long().expand(x.shape[0]) if c.numel() == 1 else c.long()
        if c.shape != (x.shape[0],) or bool(((c < 0) | (c > self.num_classes)).any()):
            raise ValueError(f"labels must be (batch,) = ({x.shape[0]},) in [0, {self.num_classes}] "
                             f"({self.num_classes} = null class); got shape {tuple(c.shape)}")
        return c

