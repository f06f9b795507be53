"""``protein_se3``: an SE(3)-equivariant (not E(3)) noise-prediction network for Cα backbones.

A state is ``x`` (batch, L, 3): Cα positions in model units (``angstrom_per_unit`` Å each),
centred over the real residues by the caller (MATH §6), with a residue mask (batch, L). The
chain order is the column order: residue ``i`` is bonded to ``i + 1`` when both are real. The
network predicts ``eps`` (MATH §1) of the same shape: one vector per residue, rotation-equivariant,
translation-invariant, centred over the real residues and exactly zero on padding.

Chirality. Mirror images are not proteins (a mirrored right-handed helix is left-handed), so
the net must not be reflection-equivariant. Under proper rotations a pseudo-vector (``1e``)
transforms exactly like a vector (``1o``) and a pseudo-scalar (``0o``) like a scalar: only the
inversion tells them apart. The net therefore forgets parity (SO(3) instead of O(3)) in three
places, each chirality-sensitive:

- node scalars include ``sin`` / ``cos`` of the two Cα virtual torsions through each residue
  (``atan2`` of the signed volume ``u1 . (u2 x u3)`` of consecutive bond directions: about
  +50° in an α-helix, -170° in a β-strand; the sign flips in the mirror image);
- node vectors start from the bond directions ``u_in``, ``u_out`` and their cross product
  ``u_in x u_out`` (a pseudo-vector, used as a vector);
- every layer forms cross products ``p x q`` (``1o x 1o -> 1e``) of its vector channels and
  uses them as vectors; the dot products that follow give triple products (``0o``) used as
  scalars.

Without the torsion sines and the cross products the same net is E(3)-equivariant (checked:
mirror error 3e-16); with them the output on a mirrored backbone differs from the mirrored
output by ~50 % of its norm at random init, while proper rotations agree to float precision.

Architecture (PaiNN-like l <= 1 message passing on a sparse chain + space graph; the l <= 1
products are written out, and the vector-vector ones taken on the nodes, because a per-edge
``o3.TensorProduct`` made the default-sized training step 3-4x slower, 0.5 s against 0.14 s):

- graph (:func:`chain_graph`): each residue has K = 2 ``chain_neighbors`` + ``spatial_neighbors``
  neighbour slots (at most n - 1): its sequence neighbours within ``±chain_neighbors``, then its
  nearest other residues (k-NN on the current, noisy positions; no gradient through the choice);
- node scalars ``s_i = W g_i + MLP(sin(t)) + MLP(conditions)`` (``g_i``: angle and torsion
  features, chain-end flags, log n); node state ``h = S x 0e + V x 1o`` (vectors from the bonds);
- edge ``j -> i``: unit vector ``y_ij``, Gaussian radial basis of the distance in Å on
  [0, max_radius] (spacing 1.3 Å by default), a fine basis of ``bond_basis`` Gaussians on
  ``bond_length ± bond_window`` (0.23 Å apart) and the signed stretch ``(d - bond_length) /
  bond_window`` clipped to ±2, embedding of the signed sequence separation ``j - i`` clipped to
  ``±(max_separation + 1)``;
- layer (:class:`_Layer`): edge state ``e_ij = silu(W_r rbf_ij + E[j - i] + A s_i + B s_j)``,
  weights ``(m, b, c) = W e_ij``, mean messages ``(m, b y_ij, c v_j)``, node dot / cross
  products, ``h_i += Gate(W_msg msg_i + W_self h_i)`` (e3nn ``o3.Linear`` and ``Gate``);
- read-out ``o3.Linear(v * exp(a(t))) -> 1x1o`` of the vector channels, each scaled by a learned
  function of t (zero-initialised, so 1 at the start), centred per protein (MATH §6).

Why the fine bond basis and the time-scaled read-out: at small t an eps-network must return the
chain's constraint violations divided by sigma_t, e.g. ``(d - 3.8 Å) / sigma_t`` along a bond, with
sigma_t from 0.1 to 1 Å. Measured on a helix-rich model (share of sampled Cα–Cα steps inside
3.8 ± 0.2 Å; 32 samples of 64 residues, seed 0, 200 steps, ``grid_power = 2``): the first version
of this net (16 Gaussians 1.3 Å apart, read-out of h as is), 5,000 steps with uniform training
times, 38 %; this net after 2,000 steps, 34 % with uniform times and 51 % with ``t_power = 2``
(training times drawn toward small t); the uniform sampling grid loses 10-25 points.

Padding residues are never read (they may hold inf / NaN), get no gradient and output zero; a
protein's output does not depend on the others in its batch.

Conditioning (optional): ``cond`` (batch, k) or (1, k) numeric targets (e.g. helix and strand
fractions) in their own units, normalised with ``property_mean`` / ``property_std``; a NaN entry
means "no condition" and uses a learned null embedding (``null_cond = nan``, classifier-free
dropout).

Speed (``bench/protein_net_speed.py``, measured 2026-12-01, 1 thread, 2-core machine shared with
other training jobs (load average 4.5), torch 2.13 CPU, e3nn 0.6.0). Training step = forward +
backward + Adam on ``denoising_loss`` at batch 32, all residues real, median of 8 steps after 2
warm-up steps, wall / CPU ms of this process; fwd/s: samples/s of a no-grad forward pass at batch
64. Config = scalars/vectors/layers/chain+spatial neighbours; K = neighbour slots per residue;
"full" is the fully connected graph. The CPU times repeat within ~25 % between runs, the wall
times less well (another run measured 0.7-1.8x these, mostly 1.3-1.5x)::

    config        params  K(64) K(128)  ms/step(64)  ms/step(128)  fwd/s(64)  fwd/s(128)
    16/4/3/2+6     10352     10     10      56 / 56     115 / 107       1531         670
    32/8/4/3+10    41664     16     16    159 / 157     376 / 361        417         154
    32/8/4/3+26    41664     32     32    309 / 304     666 / 644        291          82
    64/16/4/3+10  142208     16     16    319 / 303     621 / 613        238         115
    32/8/4/full    41664     63    127    486 / 465   6955 / 4531         94          13

The cost grows with the number of edges, L K per protein: the fully connected graph costs 3x
the k-NN one at L = 64 and 12x (CPU) at L = 128 (16k edges per protein), so the graph is k-NN.

These rows were measured before the fine bond basis and the time-scaled read-out were added
(the default config has 43,080 parameters now, not 41,664); ``bench/proteins.py`` measures the
shipped net: 200 / 453 ms CPU per training step at L = 64 / 128 (2026-12-01, shared machine).

Recommendation (the defaults): ``scalars=32, vectors=8, layers=4, chain_neighbors=3,
spatial_neighbors=10`` (K = 16, 42k parameters): 0.16 s CPU per training step at batch 32,
L = 64 (0.13-0.24 s wall over three runs; inside the 0.1-0.3 s budget), ~0.4 s at L = 128
(halve the batch there). ``64/16/4`` and ``K = 32`` each double the cost.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

try:
    from e3nn import o3
    from e3nn.math import soft_one_hot_linspace
    from e3nn.nn import Gate
except ImportError as err:  # optional heavy dependency of the proteins modality
    raise ImportError("molfuse.modalities.proteins.net needs e3nn: pip install 'e3nn>=0.5'") from err

from molfuse.nets.conditions import PropertyEmbedding, property_targets
from molfuse.nets.embeddings import sinusoidal_embedding
from molfuse.spaces import PointCloud

__all__ = ["ProteinScoreNet", "chain_graph", "chain_features"]

GEOMETRY_FEATURES = 10  # cos angle, 2 x (sin, cos) torsion, 4 flags, log n


def chain_graph(pos: Tensor, mask: Tensor, chain: int, spatial: int) -> dict[str, Tensor]:
    """k-neighbour graph of the real residues: sequence neighbours plus spatial nearest neighbours.

    Every real residue i gets K = min(2 chain + spatial, L - 1) neighbour slots: first the real
    residues within ``±chain`` in sequence, then the nearest other real residues (Euclidean; near
    the chain ends, with fewer sequence neighbours, more of them); a protein of n <= K residues
    fills n - 1 slots (its fully connected graph), the rest are invalid.

    Args:
        pos: (batch, L, 3) positions; padding rows must be finite (e.g. zero).
        mask: (batch, L) bool, True for real residues.
        chain: sequence window on each side.
        spatial: spatial neighbours beyond the sequence window.

    Returns:
        ``node`` (M,): flat indices into ``batch * L`` of the M real residues (row-major);
        ``prot`` (M,): protein of each; ``nbr`` (M, K): indices into the real residues of the
        senders j of residue i (i itself in invalid slots); ``valid`` (M, K) bool; ``sep``
        (M, K): sequence separation ``j - i``.
    """
    batch, n = mask.shape
    idx = torch.arange(n, device=mask.device)
    flat = mask.reshape(-1)
    node = flat.nonzero().squeeze(1)
    rank = torch.cumsum(flat.long(), 0) - 1  # position of each real residue among the real ones
    k = max(min(2 * chain + spatial, n - 1), 1)
    with torch.no_grad():  # the neighbour choice is discrete: no gradient through it
        d2 = (pos[:, :, None, :] - pos[:, None, :, :]).pow(2).sum(-1)  # (batch, L, L): row i, column j
        sep = idx[None, :] - idx[:, None]
        key = torch.where(sep.abs() <= chain, torch.full_like(d2, -1.0), d2)  # sequence neighbours first
        pair = mask[:, :, None] & mask[:, None, :] & (sep != 0)
        vals, j = torch.where(pair, key, torch.full_like(d2, math.inf)).topk(k, dim=-1, largest=False)
    valid = torch.isfinite(vals).reshape(batch * n, k)[node]
    j = j.reshape(batch * n, k)[node]
    own = torch.arange(node.shape[0], device=mask.device)[:, None]
    nbr = torch.where(valid, rank[(node // n)[:, None] * n + j], own)
    return {"node": node, "prot": node // n, "nbr": nbr, "valid": valid, "sep": j - (node % n)[:, None]}


def _unit(v: Tensor, eps: float = 1e-12) -> Tensor:
    """``v / |v|`` along the last axis with a finite value and gradient at ``v = 0``."""
    return v / v.pow(2).sum(-1, keepdim=True).add(eps).sqrt()


def _torsion(u1: Tensor, u2: Tensor, u3: Tensor) -> Tensor:
    """``(sin, cos)`` (..., 2) of the dihedral of consecutive unit bond directions ``u1, u2, u3``.

    ``sin`` has the sign of the signed volume ``u1 . (u2 x u3)``: it flips under a reflection.
    """
    n1, n2 = torch.cross(u1, u2, dim=-1), torch.cross(u2, u3, dim=-1)
    cos = (n1 * n2).sum(-1)
    sin = (torch.cross(n1, n2, dim=-1) * u2).sum(-1)
    norm = (sin.pow(2) + cos.pow(2) + 1e-8).sqrt()
    return torch.stack([sin / norm, cos / norm], -1)


def chain_features(pos: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Chirality-sensitive local geometry of each residue along the chain.

    Args:
        pos: (batch, L, 3) positions (any length unit); padding rows must be finite.
        mask: (batch, L) bool; residue ``i`` is bonded to ``i + 1`` when both are real.

    Returns:
        ``scalars`` (batch, L, 9): cos of the bond angle at i, (sin, cos) of the torsions
        (i-2, i-1, i, i+1) and (i-1, i, i+1, i+2), and flags (bond in, bond out, each torsion's
        four residues real); missing entries are 0. ``vectors`` (batch, L, 3, 3): the unit
        bond directions into and out of i and their cross product (a pseudo-vector).
    """
    bond = mask[:, 1:] & mask[:, :-1]  # (batch, L - 1): i -> i + 1 is a real bond
    u = _unit(pos[:, 1:] - pos[:, :-1]) * bond[..., None]  # (batch, L - 1, 3)
    zero = u.new_zeros(u.shape[0], 1, 3)
    u_in, u_out = torch.cat([zero, u], 1), torch.cat([u, zero], 1)  # (batch, L, 3)
    f_in, f_out = F.pad(bond, (1, 0)), F.pad(bond, (0, 1))
    angle = -(u_in * u_out).sum(-1, keepdim=True)  # cos of the angle (i-1, i, i+1); 0 at chain ends
    quad = bond[:, :-2] & bond[:, 1:-1] & bond[:, 2:]  # (batch, L - 3): torsion of bonds k, k+1, k+2
    tors = F.pad(_torsion(u[:, :-2], u[:, 1:-1], u[:, 2:]) * quad[..., None], (0, 0, 2, 3))  # [p] = k = p - 2
    quad = F.pad(quad, (2, 3))
    n = mask.shape[1]  # about residue i: torsions k = i - 2 and k = i - 1
    flags = torch.stack([f_in, f_out, quad[:, :n], quad[:, 1:n + 1]], -1).to(pos.dtype)
    scalars = torch.cat([angle, tors[:, :n], tors[:, 1:n + 1], flags], -1)
    vectors = torch.stack([u_in, u_out, torch.cross(u_in, u_out, dim=-1)], -2)
    return scalars, vectors


class _Layer(nn.Module):
    """One residual message-passing layer on node states ``h = (s, v)`` (M, S + 3V).

    Messages ``j -> i`` (PaiNN-like): the edge state ``e_ij = silu(W_r rbf_ij + E[j - i] + A s_i
    + B s_j)`` (S,) gives per-channel weights ``(m, b, c) = W e_ij`` and the message scalars
    ``m`` (S), vectors ``b y_ij`` and ``c v_j`` (V each), ``y_ij`` the unit vector from j to i;
    they are averaged over the neighbours into ``(s', u)``. Node products: with two linear
    mixes ``p, q`` (V each) of the vectors ``(u, v)``, the dot products ``p . q`` (scalars) and
    the cross products ``p x q`` (pseudo-vectors, e3nn ``1e``, used as vectors: the layer is
    SO(3)-, not O(3)-equivariant). Update ``h_i += Gate(W_msg (s', p . q, u, p x q) + W_self h_i)``.
    """

    def __init__(self, scalars: int, vectors: int, radial_basis: int, separations: int):
        super().__init__()
        self.scalars, self.vectors = scalars, vectors
        self.radial = nn.Linear(radial_basis, scalars)
        self.separation = nn.Embedding(separations, scalars)
        self.dst_scalars = nn.Linear(scalars, scalars, bias=False)
        self.src_scalars = nn.Linear(scalars, scalars, bias=False)
        self.weights = nn.Linear(scalars, scalars + 2 * vectors, bias=False)  # zero on invalid slots
        self.left = o3.Linear(f"{3 * vectors}x1o", f"{vectors}x1o")
        self.right = o3.Linear(f"{3 * vectors}x1o", f"{vectors}x1o")
        self.gate = Gate(f"{scalars}x0e", [F.silu], f"{vectors}x0e", [torch.sigmoid], f"{vectors}x1o")
        self.lin_msg = o3.Linear(f"{scalars + vectors}x0e + {3 * vectors}x1o", self.gate.irreps_in)
        self.lin_self = o3.Linear(f"{scalars}x0e + {vectors}x1o", self.gate.irreps_in)

    def forward(self, h: Tensor, edges: dict[str, Tensor]) -> Tensor:
        """New node states (M, S + 3V) from ``h`` and ``edges`` (K slots per residue): ``nbr``
        (M, K), ``valid`` (M, K, 1) 1 / 0, ``inv_degree`` (M, 1), ``dir`` (M, K, 3) unit vectors
        ``j -> i``, ``rbf`` (M, K, R) and ``sep`` (M, K) separation classes."""
        S, V, nbr, inv = self.scalars, self.vectors, edges["nbr"], edges["inv_degree"]
        s, v = h[:, :S], h[:, S:].reshape(-1, V, 3)
        e = F.silu(self.radial(edges["rbf"]) + self.separation(edges["sep"])
                   + self.dst_scalars(s)[:, None, :] + self.src_scalars(s)[nbr]) * edges["valid"]
        m, b, c = self.weights(e).split([S, V, V], -1)
        u_y = 3 ** 0.5 * torch.einsum("mkv,mkc->mvc", b, edges["dir"])  # unit variance per component
        u_v = (c[..., None] * v[nbr]).sum(1)
        u = torch.cat([u_y, u_v], 1) * inv[..., None]  # (M, 2V, 3)
        uv = torch.cat([u, v], 1).flatten(1)
        p, q = self.left(uv).reshape(-1, V, 3), self.right(uv).reshape(-1, V, 3)
        scalars = torch.cat([m.sum(1) * inv, (p * q).sum(-1) / 3 ** 0.5], 1)
        vectors = torch.cat([u, torch.cross(p, q, dim=-1) / 2 ** 0.5], 1).flatten(1)
        return h + self.gate(self.lin_msg(torch.cat([scalars, vectors], 1)) + self.lin_self(h))


def _check_config(cfg: dict[str, Any]) -> None:
    """Raise ValueError naming every bad entry of a ProteinScoreNet config."""
    positive = ("scalars", "vectors", "layers", "radial_basis")
    bad = [f"{k}={cfg[k]} (needs >= 1)" for k in positive if cfg[k] < 1]
    if cfg["bond_basis"] < 0 or cfg["bond_basis"] == 1:
        bad.append(f"bond_basis={cfg['bond_basis']} (needs 0 or >= 2)")
    bad += [f"{k}={cfg[k]} (needs >= 0)" for k in ("chain_neighbors", "spatial_neighbors", "max_separation",
                                                   "num_properties") if cfg[k] < 0]
    if cfg["time_dim"] < 2 or cfg["time_dim"] % 2:
        bad.append(f"time_dim={cfg['time_dim']} (needs an even value >= 2)")
    bad += [f"{k}={cfg[k]} (needs > 0)" for k in ("max_radius", "angstrom_per_unit", "bond_length", "bond_window")
            if not cfg[k] > 0]
    if cfg["chain_neighbors"] + cfg["spatial_neighbors"] < 1:
        bad.append("chain_neighbors + spatial_neighbors = 0 (no edges)")
    k, mean, std = cfg["num_properties"], cfg["property_mean"], cfg["property_std"]
    if len(mean) != k or len(std) != k or not all(math.isfinite(m) for m in mean) \
            or not all(math.isfinite(s) and s > 0 for s in std):
        bad.append(f"property_mean / property_std must hold {k} finite values (std > 0); got {mean} / {std}")
    if bad:
        raise ValueError("ProteinScoreNet config: " + "; ".join(bad))


class ProteinScoreNet(nn.Module):
    """SE(3)-equivariant eps-network for Cα backbones (architecture ``"protein_se3"``).

    Args:
        scalars: S, scalar channels of the node state (also the width of the embeddings).
        vectors: V, vector channels of the node state.
        layers: number of message-passing layers.
        chain_neighbors: each residue receives from residues within ``±chain_neighbors`` in sequence.
        spatial_neighbors: and from its ``spatial_neighbors`` nearest other residues.
        max_separation: sequence separations ``|i - j|`` above it share one embedding per sign.
        time_dim: width of the sinusoidal time features (and per-property embedding width).
        num_properties: k, numeric conditions accepted as ``cond`` (0: unconditional).
        property_mean, property_std: per-property normalisation (default 0 / 1).
        radial_basis: Gaussians on [0, max_radius] Å featurising distances.
        max_radius: Å, range of the radial basis (the graph is k-NN, not a radius graph).
        angstrom_per_unit: Å per model unit of ``x`` (10: positions in nm).
        bond_basis: fine Gaussians on ``bond_length ± bond_window`` Å (0: none, else >= 2).
        bond_length, bond_window: Å, centre and half-width of that basis and of the stretch feature.
    """

    prediction = "eps"

    def __init__(self, scalars: int = 32, vectors: int = 8, layers: int = 4, chain_neighbors: int = 3,
                 spatial_neighbors: int = 10, max_separation: int = 32, time_dim: int = 32, num_properties: int = 0,
                 property_mean: list[float] | None = None, property_std: list[float] | None = None,
                 radial_basis: int = 16, max_radius: float = 20.0, angstrom_per_unit: float = 10.0,
                 bond_basis: int = 8, bond_length: float = 3.8, bond_window: float = 0.8):
        super().__init__()
        mean = [float(v) for v in (property_mean if property_mean is not None else [0.0] * num_properties)]
        std = [float(v) for v in (property_std if property_std is not None else [1.0] * num_properties)]
        cfg = {"scalars": scalars, "vectors": vectors, "layers": layers, "chain_neighbors": chain_neighbors,
               "spatial_neighbors": spatial_neighbors, "max_separation": max_separation, "time_dim": time_dim,
               "num_properties": num_properties, "property_mean": mean, "property_std": std,
               "radial_basis": radial_basis, "max_radius": float(max_radius),
               "angstrom_per_unit": float(angstrom_per_unit), "bond_basis": bond_basis,
               "bond_length": float(bond_length), "bond_window": float(bond_window)}
        _check_config(cfg)
        self.architecture = {"name": "protein_se3", "config": cfg}
        self.space = PointCloud(centred=3)  # the zero-CoM subspace of the Cα positions (MATH §6)
        self.num_properties = num_properties
        self.null_cond = float("nan") if num_properties else None
        self.scalars, self.time_dim = scalars, time_dim
        self.geometry = nn.Linear(GEOMETRY_FEATURES, scalars)
        self.bond_vectors = o3.Linear("3x1o", f"{vectors}x1o")
        self.time_emb = nn.Sequential(nn.Linear(time_dim, scalars), nn.SiLU(), nn.Linear(scalars, scalars))
        self.cond_emb = PropertyEmbedding(num_properties, time_dim, scalars, mean, std) if num_properties else None
        self.layers = nn.ModuleList(_Layer(scalars, vectors, radial_basis + bond_basis + 1, 2 * max_separation + 3)
                                    for _ in range(layers))
        self.readout = o3.Linear(f"{vectors}x1o", "1x1o")  # an l = 1 output reads only the vector channels
        # per-channel log-scale of the read-out as a function of t: at small t an eps-network must
        # return (constraint violation) / sigma_t, a factor that grows ~100x as t -> 0
        self.readout_scale = nn.Linear(scalars, vectors)
        with torch.no_grad():
            self.readout_scale.weight.zero_()
            self.readout_scale.bias.zero_()
        with torch.no_grad():  # start near eps_hat = 0 (loss ~1 per dof) instead of a random O(1) guess
            self.readout.weight.mul_(0.1)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        """eps prediction (batch, L, 3) for Cα positions ``x`` (batch, L, 3) in model units, ``t``
        (batch,) in [0, 1], ``cond`` None or targets (batch, k) / (1, k) (NaN = no condition) and
        ``mask`` (batch, L) bool (None: every residue real). Zero on padding, centred per protein."""
        batch, n = self._check_input(x, mask)
        mask = torch.ones(batch, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device)
        pos = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))  # padding never read
        cfg = self.architecture["config"]
        graph = chain_graph(pos, mask, cfg["chain_neighbors"], cfg["spatial_neighbors"])
        node, prot, counts = graph["node"], graph["prot"], mask.sum(1)
        h, temb = self._nodes(pos, mask, t, cond, counts)
        h = h.reshape(batch * n, -1)[node]
        edges = self._edges(pos.reshape(batch * n, 3)[node], graph)
        for layer in self.layers:
            h = layer(h, edges)
        scale = self.readout_scale(temb).clamp(-8.0, 8.0).exp()[prot]  # (M, V); exp(0) = 1 at init
        vec = self.readout((h[:, self.scalars:].reshape(h.shape[0], -1, 3) * scale[..., None]).flatten(1))
        sums = vec.new_zeros(batch, 3).index_add_(0, prot, vec)
        vec = vec - (sums / counts.clamp(min=1)[:, None].to(vec.dtype))[prot]  # MATH §6: zero-CoM subspace
        return x.new_zeros(batch * n, 3).index_copy(0, node, vec).reshape(batch, n, 3)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> tuple[int, int]:
        if x.dim() != 3 or x.shape[-1] != 3:
            raise ValueError(f"x must be Cα positions (batch, L, 3); got shape {tuple(x.shape)}")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2])):
            raise ValueError(f"mask must be bool (batch, L) = {tuple(x.shape[:2])}; got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        return x.shape[0], x.shape[1]

    def _nodes(self, pos: Tensor, mask: Tensor, t: Tensor, cond: Any, counts: Tensor) -> tuple[Tensor, Tensor]:
        """Initial node states (batch, L, S + 3V) (geometry, time and condition scalars; bond
        vectors) and the time embedding (batch, S) that sets the read-out scale."""
        batch, n = mask.shape
        tb = torch.as_tensor(t, dtype=pos.dtype, device=pos.device).reshape(-1)
        if tb.shape[0] not in (1, batch):
            raise ValueError(f"t must be (batch,) = ({batch},); got shape {tuple(tb.shape)}")
        e = temb = self.time_emb(sinusoidal_embedding(tb.expand(batch), self.time_dim).to(pos.dtype))
        c = property_targets(cond, self.num_properties, batch, pos, type(self).__name__)
        if c is not None:
            e = e + self.cond_emb(c)
        geo, vec = chain_features(pos, mask)
        size = counts.to(pos.dtype).clamp(min=1).log()[:, None, None].expand(batch, n, 1) / math.log(100.0)
        s = self.geometry(torch.cat([geo, size], -1)) + e[:, None, :]
        v = self.bond_vectors(vec.reshape(batch * n, 9)).reshape(batch, n, -1)
        return torch.cat([s, v], -1), temb

    def _edges(self, pos: Tensor, graph: dict[str, Tensor]) -> dict[str, Tensor]:
        """Edge inputs of every layer (M, K, ...) for the real positions ``pos`` (M, 3), model units."""
        cfg = self.architecture["config"]
        rel = (pos[:, None, :] - pos[graph["nbr"]]) * cfg["angstrom_per_unit"]  # x_i - x_j in Å
        dist = rel.pow(2).sum(-1).add(1e-12).sqrt()  # finite gradient even for coincident residues
        rbf = soft_one_hot_linspace(dist, 0.0, cfg["max_radius"], cfg["radial_basis"], basis="gaussian", cutoff=False)
        rbf = rbf * cfg["radial_basis"] ** 0.5
        lo, w = cfg["bond_length"] - cfg["bond_window"], cfg["bond_window"]
        if cfg["bond_basis"]:  # fine Gaussians (spacing 2 w / (B - 1) Å) about the Cα–Cα bond length
            fine = soft_one_hot_linspace(dist, lo, lo + 2 * w, cfg["bond_basis"], basis="gaussian", cutoff=False)
            rbf = torch.cat([rbf, fine * cfg["bond_basis"] ** 0.5], -1)
        stretch = ((dist - cfg["bond_length"]) / w).clamp(-2.0, 2.0)[..., None]  # signed bond stretch, linear
        rbf = torch.cat([rbf, stretch], -1)
        valid, m = graph["valid"].to(pos.dtype), cfg["max_separation"] + 1
        inv_degree = 1.0 / valid.sum(1, keepdim=True).clamp(min=1)
        return {"nbr": graph["nbr"], "valid": valid[..., None], "inv_degree": inv_degree, "dir": rel / dist[..., None],
                "rbf": rbf, "sep": graph["sep"].clamp(-m, m) + m}
