"""Sample grids as PNG files (written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...base.io import atomic_write

__all__ = ["make_grid", "save_grid"]


def make_grid(images: np.ndarray | torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images into one uint8 array (rows, cols).

    Args:
        images: uint8 pixels or float intensities in [0, 1] (clipped); (n, H, W) or
            (n, 1, H, W). Non-finite pixels (invalid samples) are drawn mid-grey.
        nrow: images per row (default ``ceil(sqrt(n))``).
        pad: pixels of black between images and at the border.
    """
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"single-channel images expected; got shape {x.shape}")
        x = x[:, 0]
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"images must be a non-empty (n, H, W) or (n, 1, H, W) array; got shape {x.shape}")
    if x.dtype == np.uint8:
        u = x.astype(np.float64) / 255.0
    else:
        u = np.where(np.isfinite(x), np.clip(x.astype(np.float64), 0.0, 1.0), 0.5)
    n, h, w = u.shape
    ncol = nrow or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncol)
    grid = np.zeros((pad + nrows * (h + pad), pad + ncol * (w + pad)))
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = u[i]
    return np.round(grid * 255).astype(np.uint8)


def save_grid(images: np.ndarray | torch.Tensor, path: str | Path, nrow: int | None = None, pad: int = 2,
              upscale: int = 2) -> Path:
    """Write a PNG grid of ``images`` (see :func:`make_grid`) to ``path``, enlarged by
    ``upscale`` (nearest neighbour), atomically."""
    from PIL import Image  # a dependency of matplotlib

    grid = make_grid(images, nrow, pad)
    if upscale > 1:
        grid = np.kron(grid, np.ones((upscale, upscale), dtype=np.uint8))
    return atomic_write(path, lambda fh: Image.fromarray(grid).save(fh, format="PNG"))
