"""Energies of plain vectors for steered sampling (MATH §8), with closed-form tilts of Gaussians.

``fn(x, mask, normalisation, **params) -> (batch,)`` on model-space vectors (batch, D):

- ``linear``: ``slope · x[coordinate]``; tilting ``N(m, v)`` by ``exp(−λ U)`` moves that
  coordinate's mean to ``m − λ slope v``.
- ``quadratic``: ``½ k ‖x − centre‖²`` (``centre`` one number for every coordinate); it tilts
  ``N(m, v)`` to ``N((m + λ k v centre) / (1 + λ k v), v / (1 + λ k v))`` per coordinate.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from ...plugins import Potential

__all__ = ["linear_energy", "quadratic_energy", "POTENTIALS"]


def linear_energy(x: Tensor, mask: Tensor | None, normalisation: Mapping[str, Any], slope: float = 1.0,
                  coordinate: int = 0) -> Tensor:
    """(batch,) ``slope · x[:, coordinate]``."""
    if not 0 <= coordinate < x.shape[1]:
        raise ValueError(f"coordinate {coordinate} is not one of the {x.shape[1]} coordinates of these vectors")
    return slope * x[:, coordinate]


def quadratic_energy(x: Tensor, mask: Tensor | None, normalisation: Mapping[str, Any], k: float = 1.0,
                     centre: float = 0.0) -> Tensor:
    """(batch,) ``½ k ‖x − centre‖²``."""
    return 0.5 * k * (x - centre).pow(2).flatten(1).sum(1)


POTENTIALS = {"linear": Potential(linear_energy, {"coordinate": (0, None)}, description="slope · x[coordinate]"),
              "quadratic": Potential(quadratic_energy, {"k": (0.0, None)}, description="½ k ‖x − centre‖²")}
