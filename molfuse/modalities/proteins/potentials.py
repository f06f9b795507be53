"""Energies of backbones for steering samplers (MATH §8): clashes and bond angles out of range.

Each potential takes model-space states (batch, N, F) with their residue mask and the card's
``normalisation`` (Cα traces or angle states, :func:`traces_of` rebuilds Å positions for either,
differentiably) and returns one energy per backbone, (batch,) float64-compatible, zero for a
backbone that satisfies it. A steered sampler targets ``π ∝ Π q_i^{b_i} exp(−λ U)``.

- ``clash``: ``Σ_{|i − j| >= separation} relu(cutoff − d_ij)²`` in Å² over Cα pairs, the chain-break
  free clash term of recent steering work (non-neighbour Cα closer than about 4 Å). The
  evaluator calls a clash a pair closer than 3.0 Å (:data:`.geometry.THRESHOLDS`); the default
  cutoff 4.0 Å pushes pairs well clear of it.
- ``bond_angle``: ``Σ_i relu(lo − θ_i)² + relu(θ_i − hi)²`` in rad² over the Cα virtual bond
  angles, default range 80–150° (real proteins: about 82–148°; the evaluator's validity range is
  the wider 70–160°).
- ``chain_break``: ``Σ relu(|d_{i,i+1} − 3.8| − tol)²`` in Å² over consecutive Cα (zero by
  construction for angle states, whose decoder fixes every bond).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .angles import BOND_LENGTH, nerf, state_to_angles

__all__ = ["traces_of", "clash_energy", "bond_angle_energy", "chain_break_energy", "POTENTIALS"]


def traces_of(x: Tensor, mask: Tensor | None, normalisation: Mapping[str, Any]) -> Tensor:
    """Cα positions (batch, N, 3) in Å of model-space states, differentiable in ``x``; padding zero."""
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if normalisation.get("representation") == "ca_angles":
        theta, tau = state_to_angles(x, mask, normalisation["channel_mean"], normalisation["channel_std"])
        return nerf(theta, tau, mask, float(normalisation.get("bond_length", BOND_LENGTH)))
    return x * float(normalisation["angstrom_per_unit"]) * mask[..., None].to(x.dtype)


def _pair_distances(ca: Tensor) -> Tensor:
    diff = ca[:, :, None, :] - ca[:, None, :, :]
    return diff.pow(2).sum(-1).add(1e-12).sqrt()


def clash_energy(x: Tensor, mask: Tensor | None, normalisation: Mapping[str, Any], cutoff: float = 4.0,
                 separation: int = 3) -> Tensor:
    """(batch,) ``Σ relu(cutoff − d_ij)²`` Å² over real Cα pairs with ``|i − j| >= separation``."""
    ca = traces_of(x, mask, normalisation)
    n = ca.shape[1]
    real = torch.ones(ca.shape[:2], dtype=torch.bool, device=ca.device) if mask is None else mask.to(ca.device)
    idx = torch.arange(n, device=ca.device)
    far = (idx[None, :] - idx[:, None]) >= separation  # each pair once (j > i)
    pairs = far[None] & real[:, :, None] & real[:, None, :]
    overlap = torch.relu(cutoff - _pair_distances(ca)) * pairs
    return overlap.pow(2).flatten(1).sum(1)


def bond_angle_energy(x: Tensor, mask: Tensor | None, normalisation: Mapping[str, Any], lo: float = 80.0,
                      hi: float = 150.0) -> Tensor:
    """(batch,) ``Σ relu(lo − θ)² + relu(θ − hi)²`` rad² over the Cα bond angles (degrees ``lo``, ``hi``)."""
    real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device)
    if normalisation.get("representation") == "ca_angles":
        theta, _ = state_to_angles(x, real, normalisation["channel_mean"], normalisation["channel_std"])
        theta = theta[:, 1:-1]
        has = real[:, 2:] & real[:, 1:-1] & real[:, :-2]
    else:
        ca = traces_of(x, real, normalisation)
        u, v = ca[:, :-2] - ca[:, 1:-1], ca[:, 2:] - ca[:, 1:-1]
        cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp_min(1e-9)
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        has = real[:, 2:] & real[:, 1:-1] & real[:, :-2]
    low, high = math.radians(lo), math.radians(hi)
    out = (torch.relu(low - theta).pow(2) + torch.relu(theta - high).pow(2)) * has
    return out.sum(1)


def chain_break_energy(x: Tensor, mask: Tensor | None, normalisation: Mapping[str, Any],
                       tolerance: float = 0.2) -> Tensor:
    """(batch,) ``Σ relu(|d_{i,i+1} − 3.8 Å| − tolerance)²`` Å² over consecutive real Cα."""
    real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device)
    ca = traces_of(x, real, normalisation)
    d = (ca[:, 1:] - ca[:, :-1]).pow(2).sum(-1).add(1e-12).sqrt()
    out = torch.relu((d - BOND_LENGTH).abs() - tolerance).pow(2) * (real[:, 1:] & real[:, :-1])
    return out.sum(1)


POTENTIALS: dict[str, Callable[..., Tensor]] = {"clash": clash_energy, "bond_angle": bond_angle_energy,
                                                "chain_break": chain_break_energy}
