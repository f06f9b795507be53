"""Figures for 2-D vector workflows: samples over density contours, one panel per method.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so
it works headless and does not disturb an interactive session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["Contour", "Panel", "grid", "log_density_grid", "hdr_levels", "extent_of", "panels_figure", "COLORS"]

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


@dataclass
class Contour:
    """Density contours on the figure grid: ``log_density`` (G, G), unnormalised is fine."""

    label: str
    log_density: np.ndarray
    color: str = "tab:blue"
    linestyle: str = "-"


@dataclass
class Panel:
    """One method: its samples (n, 2) and the contours drawn under them."""

    title: str
    samples: np.ndarray
    contours: list[Contour] = field(default_factory=list)


def grid(extent: Sequence[float], n: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axes ``xs`` (n,), ``ys`` (n,) and grid points (n*n, 2), row-major in y."""
    xs = np.linspace(extent[0], extent[1], n)
    ys = np.linspace(extent[2], extent[3], n)
    xx, yy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([xx.ravel(), yy.ravel()], axis=1)


def log_density_grid(model: Any, points: np.ndarray, n: int, t: float = 0.0) -> np.ndarray:
    """Exact ``model.log_prob(points, t)`` reshaped to (n, n), nats."""
    with torch.no_grad():
        lp = model.log_prob(torch.as_tensor(points, dtype=torch.float64), t)
    return lp.cpu().numpy().reshape(n, n)


def hdr_levels(log_density: np.ndarray, masses: Sequence[float] = (0.9, 0.6, 0.3)) -> np.ndarray:
    """Density levels enclosing the given probability masses on the grid (increasing).

    Invariant to normalisation, so an unnormalised ``Σ λ_i log p_i`` works as well.
    """
    p = np.exp(log_density - np.nanmax(log_density)).ravel()
    order = np.sort(p)[::-1]
    cum = np.cumsum(order) / order.sum()
    levels = [order[min(np.searchsorted(cum, m), len(order) - 1)] for m in masses]
    levels = np.unique(np.asarray(levels))
    return levels[levels > 0]


def extent_of(points: Sequence[np.ndarray], pad: float = 0.2, clip: float = 0.5) -> tuple[float, float, float, float]:
    """Square-ish bounding box around the central ``100 - 2 clip`` % of all points, padded."""
    pts = np.concatenate([p.reshape(-1, 2) for p in points if len(p)])
    pts = pts[np.isfinite(pts).all(axis=1)]
    lo, hi = np.percentile(pts, clip, axis=0), np.percentile(pts, 100 - clip, axis=0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def panels_figure(panels: Sequence[Panel], xs: np.ndarray, ys: np.ndarray, ncols: int = 4,
                  size: float = 3.2, max_points: int = 2000) -> Figure:
    """One scatter panel per method over the contours of its models.

    Args:
        panels: what to draw, in order.
        xs, ys: the grid axes the contours were evaluated on (see :func:`grid`).
        max_points: at most this many samples drawn per panel (the first ones).
    """
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for c in panel.contours:
            levels = hdr_levels(c.log_density)
            if len(levels):
                dens = np.exp(c.log_density - np.nanmax(c.log_density))
                ax.contour(xs, ys, dens, levels=levels, colors=c.color, linestyles=c.linestyle, linewidths=1.0)
            ax.plot([], [], color=c.color, linestyle=c.linestyle, label=c.label)
        pts = panel.samples[:max_points]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="black", alpha=0.35, linewidths=0)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        ax.set_aspect("equal")
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
        if panel.contours:
            ax.legend(fontsize=6, loc="best", framealpha=0.6)
    return fig
