"""Data kind ``toy_clouds``: rings (points on a unit circle) or rods (points on a segment of
length 3), randomly oriented, with small noise; n nodes per cloud, centred, padded."""

from __future__ import annotations

import math

import torch

from molfuse import plugins
from molfuse.spaces import PointCloud, node_masks


def _rotations(n: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    return q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]


def make_clouds(shape: str, n: int, sizes, max_nodes: int, g: torch.Generator,
                radius: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.as_tensor(sizes)[torch.randint(len(sizes), (n,), generator=g)]
    mask = node_masks(counts, max_nodes)
    u = torch.rand(n, max_nodes, generator=g)
    if shape == "ring":
        phase = 2 * math.pi * (torch.arange(max_nodes)[None, :] / counts[:, None] + u[:, :1])
        r = torch.ones(n, 1) if radius is None else radius[:, None]
        pts = torch.stack([r * torch.cos(phase), r * torch.sin(phase), torch.zeros_like(phase)], -1)
    elif shape == "rod":
        pos = 3.0 * (torch.arange(max_nodes)[None, :] / (counts[:, None] - 1) - 0.5)
        pts = torch.stack([pos, torch.zeros_like(pos), torch.zeros_like(pos)], -1)
    else:
        raise ValueError(f"shape must be ring or rod; got {shape!r}")
    pts = pts + 0.05 * torch.randn(pts.shape, generator=g)
    pts = torch.einsum("bij,bnj->bni", _rotations(n, g), pts)
    return PointCloud(3).project(pts, mask), mask


def toy_clouds(spec: dict) -> plugins.TrainingData:
    """With ``radius_property`` the rings' radius (0.5-2) is drawn per cloud and is the condition."""
    g = torch.Generator().manual_seed(int(spec["seed"]))
    radius = 0.5 + 1.5 * torch.rand(int(spec["n"]), generator=g) if spec["radius_property"] else None
    x, mask = make_clouds(spec["shape"], int(spec["n"]), spec["sizes"], int(spec["max_nodes"]), g, radius)
    counts = {int(k): int(v) for k, v in zip(*torch.unique(mask.sum(1), return_counts=True))}
    desc = {"kind": "toy_clouds", "shape": spec["shape"], "n": int(spec["n"]), "seed": int(spec["seed"]),
            "node_counts": counts}
    return plugins.TrainingData(x.float(), desc, {}, mask=mask, space={"kind": "point_cloud", "centred": 3},
                                node_counts=counts, cond=None if radius is None else radius[:, None].float(),
                                condition="properties" if radius is not None else "none")
