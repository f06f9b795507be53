"""Cα traces as internal coordinates: virtual bond angles and dihedrals, and back by NeRF.

Once every Cα–Cα distance is fixed (3.80 Å), a trace of n residues is fixed up to a rigid motion
by its virtual bond angles ``θ_i`` (i − 1, i, i + 1), ``1 <= i <= n − 2``, and virtual dihedrals
``τ_i`` (i − 1, i, i + 1, i + 2), ``1 <= i <= n − 3`` (IUPAC sign, as
:func:`.geometry.virtual_dihedrals`: about +50° in a right-handed α-helix, −170° in a β-strand).
Angles are invariant to rotations and translations; a mirror image flips the sign of every τ.

Model state (MATH §6, angles): each angle embedded as ``(cos, sin)``, one row per residue,
``x`` (batch, N, 4) = ``(cos θ_i, sin θ_i, cos τ_i, sin τ_i)`` standardised per channel with one
fixed mean and standard deviation (:data:`CHANNEL_MEAN`, :data:`CHANNEL_STD`, the shipped training
fragments'; the card's ``normalisation`` records them), on the
:class:`~molfuse.spaces.Chain` space whose ``trims`` leave residue 0 and the chain ends empty.
Decoding reads ``θ = atan2(|sin|, cos)`` and ``τ = atan2(sin, cos)`` of the un-standardised pairs
(the norm of a pair carries no geometry) and rebuilds the trace by NeRF (Parsons et al. 2005):
residue 0 at the origin, residue 1 on +x, residue 2 in the xy-plane on the +y side, every later
residue placed from the three before it; the result is centred over the real residues.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ...spaces import Chain

__all__ = ["BOND_LENGTH", "ANGLE_TRIMS", "angle_space", "chain_angles", "nerf", "angles_to_state", "state_to_angles",
           "channel_stats", "encode_angles", "decode_angles", "angle_normalisation", "CHANNEL_MEAN", "CHANNEL_STD"]

BOND_LENGTH = 3.80  # Å, the Cα–Cα distance of trans peptides that the decoder puts on every bond
# One standardisation for every angle model, so that members share a state convention and can be
# fused: the per-channel mean and standard deviation of (cos θ, sin θ, cos τ, sin τ) over the real
# entries of the 1,282 shipped training fragments (64 and 128 residues; `channel_stats`, rounded;
# tests/modalities/proteins/test_angles.py recomputes them).
CHANNEL_MEAN = (-0.2505, 0.9243, 0.0156, 0.2107)
CHANNEL_STD = (0.2662, 0.1094, 0.7018, 0.6803)
ANGLE_TRIMS = ((1, 1), (1, 1), (1, 2), (1, 2))  # (head, tail) residues without a value, per channel


def angle_space() -> Chain:
    """The state space of ``(cos θ, sin θ, cos τ, sin τ)`` rows (:data:`ANGLE_TRIMS`)."""
    return Chain(ANGLE_TRIMS)


def _prefix_mask(shape: Sequence[int], mask: Tensor | None, device: Any) -> Tensor:
    if mask is None:
        return torch.ones(int(shape[0]), int(shape[1]), dtype=torch.bool, device=device)
    return torch.as_tensor(mask, dtype=torch.bool, device=device)


def chain_angles(ca: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Virtual bond angles and dihedrals (radians) of padded traces.

    Args:
        ca: (batch, N, 3) Cα positions (any unit); padding rows are ignored.
        mask: (batch, N) bool, real residues a prefix of each row (None: all real).

    Returns:
        ``theta`` (batch, N) in [0, π] at residues 1 .. n − 2 and ``tau`` (batch, N) in (−π, π] at
        residues 1 .. n − 3, zero elsewhere.
    """
    ca = torch.as_tensor(ca)
    mask = _prefix_mask(ca.shape, mask, ca.device)
    b = ca[:, 1:] - ca[:, :-1]  # (batch, N − 1, 3) bond vectors
    u, v = -b[:, :-1], b[:, 1:]  # at residue i = 1 .. N − 2: towards i − 1 and towards i + 1
    cos = (u * v).sum(-1)
    sin = torch.linalg.cross(u, v, dim=-1).norm(dim=-1)
    theta = torch.atan2(sin, cos)
    b0, b1, b2 = b[:, :-2], b[:, 1:-1], b[:, 2:]  # dihedral (i − 1, i, i + 1, i + 2), i = 1 .. N − 3
    n1, n2 = torch.linalg.cross(b0, b1, dim=-1), torch.linalg.cross(b1, b2, dim=-1)
    tau = torch.atan2(b1.norm(dim=-1) * (b0 * n2).sum(-1), (n1 * n2).sum(-1))
    zero = ca.new_zeros(ca.shape[0], 1)
    theta = torch.cat([zero, theta, zero], 1)
    tau = torch.cat([zero, tau, zero, zero], 1)
    keep = angle_space().entries((ca.shape[0], ca.shape[1], 4), mask, ca.device)
    return theta * keep[..., 0], tau * keep[..., 2]


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def nerf(theta: Tensor, tau: Tensor, mask: Tensor | None = None, bond: float = BOND_LENGTH) -> Tensor:
    """Cα traces from virtual bond angles and dihedrals (radians), every bond ``bond`` long.

    Args:
        theta: (batch, N) bond angle at residue i (used for i = 1 .. n − 2).
        tau: (batch, N) dihedral (i − 1, i, i + 1, i + 2) (used for i = 1 .. n − 3).
        mask: (batch, N) bool, real residues a prefix (None: all real).
        bond: the Cα–Cα distance, in the unit of the result (Å by default).

    Returns:
        (batch, N, 3) positions, centred over the real residues, zero on padding; residue m >= 3
        is placed from m − 3, m − 2, m − 1 with angle ``theta[m − 1]`` and dihedral ``tau[m − 2]``.
    """
    theta, tau = torch.as_tensor(theta), torch.as_tensor(tau)
    batch, n = theta.shape
    mask = _prefix_mask(theta.shape, mask, theta.device)
    pos = [theta.new_zeros(batch, 3) for _ in range(min(n, 2))]
    if n > 1:
        pos[1] = pos[1] + theta.new_tensor([bond, 0.0, 0.0])
    if n > 2:
        t1 = theta[:, 1]
        pos.append(pos[1] + bond * torch.stack([-torch.cos(t1), torch.sin(t1), torch.zeros_like(t1)], -1))
    for m in range(3, n):
        a, b, c = pos[m - 3], pos[m - 2], pos[m - 1]
        bc = _unit(c - b)
        nrm = _unit(torch.linalg.cross(b - a, bc, dim=-1))
        th, tt = theta[:, m - 1:m], tau[:, m - 2:m - 1]
        d = (-torch.cos(th) * bc + torch.sin(th) * torch.cos(tt) * torch.linalg.cross(nrm, bc, dim=-1)
             + torch.sin(th) * torch.sin(tt) * nrm)
        pos.append(c + bond * d)
    x = torch.stack(pos, 1) * mask[..., None]
    centre = x.sum(1, keepdim=True) / mask.sum(1).clamp_min(1)[:, None, None]
    return (x - centre) * mask[..., None]


def angles_to_state(theta: Tensor, tau: Tensor, mask: Tensor | None, mean: Sequence[float],
                    std: Sequence[float]) -> Tensor:
    """(batch, N, 4) standardised ``(cos θ, sin θ, cos τ, sin τ)`` rows, projected on the chain space."""
    raw = torch.stack([torch.cos(theta), torch.sin(theta), torch.cos(tau), torch.sin(tau)], -1)
    m = raw.new_tensor(list(mean))
    s = raw.new_tensor(list(std))
    mask = _prefix_mask(theta.shape, mask, theta.device)
    return angle_space().project((raw - m) / s, mask)


def state_to_angles(x: Tensor, mask: Tensor | None, mean: Sequence[float],
                    std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`angles_to_state`: ``theta = atan2(|sin|, cos)`` in [0, π] and
    ``tau = atan2(sin, cos)``, zero where the chain has no such angle."""
    raw = x * x.new_tensor(list(std)) + x.new_tensor(list(mean))
    mask = _prefix_mask(x.shape, mask, x.device)
    keep = angle_space().entries(x.shape, mask, x.device)
    theta = torch.atan2(raw[..., 1].abs(), raw[..., 0]) * keep[..., 0]
    tau = torch.atan2(raw[..., 3], raw[..., 2]) * keep[..., 2]
    return theta, tau


def channel_stats(theta: Tensor, tau: Tensor, mask: Tensor | None) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the ``(cos, sin)`` rows over the real entries."""
    raw = torch.stack([torch.cos(theta), torch.sin(theta), torch.cos(tau), torch.sin(tau)], -1).to(torch.float64)
    mask = _prefix_mask(theta.shape, mask, theta.device)
    keep = angle_space().entries(raw.shape, mask, raw.device).to(torch.float64)
    count = keep.sum((0, 1))
    mean = (raw * keep).sum((0, 1)) / count
    var = ((raw - mean) ** 2 * keep).sum((0, 1)) / count
    return mean.tolist(), var.sqrt().clamp_min(1e-3).tolist()


def angle_normalisation(mean: Sequence[float] = CHANNEL_MEAN, std: Sequence[float] = CHANNEL_STD,
                        bond: float = BOND_LENGTH) -> dict:
    """The card's ``normalisation`` of an angle model: what :func:`decode_angles` needs."""
    return {"representation": "ca_angles", "bond_length": float(bond), "channels": ["cos_theta", "sin_theta",
            "cos_tau", "sin_tau"], "channel_mean": [float(v) for v in mean], "channel_std": [float(v) for v in std]}


def encode_angles(ca: Any, mask: Any, mean: Sequence[float] = CHANNEL_MEAN,
                  std: Sequence[float] = CHANNEL_STD) -> tuple[Tensor, Tensor]:
    """Padded Å traces (n, N, 3) and prefix masks (n, N) -> angle states (n, N, 4) float32 and masks."""
    ca_t = torch.as_tensor(np.asarray(ca, dtype=np.float64))
    mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
    theta, tau = chain_angles(ca_t, mask_t)
    return angles_to_state(theta, tau, mask_t, mean, std).to(torch.float32), mask_t


def decode_angles(x: Any, mask: Any, normalisation: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Angle states -> (Cα positions (n, N, 3) Å by NeRF, centred, zero on padding; masks (n, N) bool)."""
    x_t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64))
    mask_t = torch.as_tensor(np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask, dtype=bool))
    theta, tau = state_to_angles(x_t, mask_t, normalisation["channel_mean"], normalisation["channel_std"])
    ca = nerf(theta, tau, mask_t, float(normalisation.get("bond_length", BOND_LENGTH)))
    return ca.numpy(), mask_t.numpy()
