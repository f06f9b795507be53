"""``molecule_e3nn``: an E(3)-equivariant noise-prediction network for small molecules (e3nn).

A state is ``x`` (batch, N, 3 + T): positions in Å (centred over the real atoms by the caller,
MATH §6) followed by a continuous (scaled, noisy) one-hot of the T atom types, with a node
mask (batch, N). The network predicts ``eps`` (MATH §1) of the same shape: a ``1o`` vector per
atom for the positions (rotation- and reflection-equivariant, translation-invariant, centred
over the real atoms) and invariant scalars for the type channels.

Architecture (NequIP-like message passing on the fully connected graph of each molecule):

- node scalars ``s_i = W_type a_i + MLP(sin(t)) + MLP(properties)``; node state
  ``h = S x 0e + V x 1o (+ V x 2e for lmax = 2)``, vectors start at zero;
- per edge ``j -> i`` (real atoms of one molecule, ``i != j``): spherical harmonics
  ``Y(x_i - x_j)`` up to ``lmax``, Gaussian radial basis of ``|x_i - x_j|`` on [0, max_radius];
- each layer: ``m_ij = TP_uvu(h_j, Y_ij; w_ij)``, with per-edge, per-channel weights
  ``w_ij = W silu(W_r rbf_ij + A s_i + B s_j)``; ``h_i += Gate(W_self h_i + W_msg mean_j m_ij)``;
- read-out: ``o3.Linear(h) -> 1x1o + T x 0e``; the vector part is centred per molecule.

Edges are index tensors of real pairs only, built for the whole padded batch, so padding atoms
are never read (their inputs may be anything, even inf) and their outputs are exactly zero.
Only relative vectors and invariants enter, so the net is E(3)-equivariant (O(3) x
translations); mirror images are equally likely.

Conditioning (optional): ``cond`` (batch, k) or (1, k) property targets in physical units,
normalised with ``property_mean`` / ``property_std``; a NaN entry means "no condition" for that
property and uses a learned null embedding (``null_cond = nan`` for classifier-free dropout).

Speed (``bench/molecule_net_speed.py``, measured 2026-11-29, 1 thread, 2-core machine, torch 2.13
CPU, e3nn 0.6.0). Training step = forward + backward + Adam on ``denoising_loss`` at batch 64, median
of 10 steps after 3 warm-up steps; N = 9: QM9 heavy atoms, 4 types; N = 29: explicit hydrogens,
5 types; all atoms real. fwd/s: samples/s of a no-grad forward pass at batch 256. Params for
4 types. Other jobs shared the machine: repeated runs differ by up to ~25 %::

    config (S/V/lmax/layers)  params  ms/step(N=9)  ms/step(N=29)  fwd/s(N=9)  fwd/s(N=29)
    16/4/1/2                    5508          17.3          147.4       12216          541
    32/8/1/3 (default)         27896          40.3          441.9        4946          198
    32/8/2/3                   40616         180.4         1882.2        1378           81
    64/16/1/4                 137808          95.4         1414.0        1893           92

The cost is dominated by the per-edge tensor product and its weights, so it grows with the
number of pairs, N (N - 1): N = 29 costs 10-15x N = 9. ``lmax = 2`` costs 3-4x ``lmax = 1`` at
equal width.

Recommendation for 2-core CPU training: ``scalars=64, vectors=16, lmax=1, layers=4`` for QM9
heavy atoms (N = 9): about 0.1 s per step at batch 64, N = 9 (1 thread; inside the 0.1-0.3 s
budget) with 5x the parameters of the default. For explicit hydrogens (N = 29) that configuration
takes ~1.4 s per step; use the default 32/8/1/3 (~0.45 s) there. Keep ``lmax = 1`` on CPU.
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
except ImportError as err:  # optional heavy dependency of the molecules modality
    raise ImportError("molfuse.modalities.molecules.net needs e3nn: pip install 'e3nn>=0.5'") from err

from molfuse.nets.conditions import PropertyEmbedding, property_targets
from molfuse.nets.embeddings import sinusoidal_embedding

__all__ = ["MoleculeScoreNet", "real_graph", "hidden_irreps"]


def real_graph(mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index tensors of the fully connected graph among the real atoms of each molecule.

    Args:
        mask: (batch, N) bool, True for real atoms.

    Returns:
        ``node`` (M,): flat indices into ``batch * N`` of the M real atoms (row-major);
        ``mol`` (M,): molecule of each real atom;
        ``src``, ``dst`` (E,): indices into the M real atoms of every ordered pair ``j -> i``
        of one molecule with ``i != j`` (no self edges, no padding).
    """
    batch, n = mask.shape
    flat = mask.reshape(-1)
    node = flat.nonzero().squeeze(1)
    rank = torch.cumsum(flat.long(), 0) - 1  # position of each real atom among the real ones
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    b, i, j = (mask[:, :, None] & mask[:, None, :] & ~eye).nonzero(as_tuple=True)
    return node, node // n, rank[b * n + j], rank[b * n + i]


def _parity(l: int) -> str:
    return "e" if l % 2 == 0 else "o"


def hidden_irreps(scalars: int, vectors: int, lmax: int) -> o3.Irreps:
    """Node state ``S x 0e + V x 1o (+ V x 2e ...)``: scalars first, pure (-1)^l parity."""
    return o3.Irreps(f"{scalars}x0e" + "".join(f" + {vectors}x{l}{_parity(l)}" for l in range(1, lmax + 1)))


def _uvu_paths(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, lmax: int) -> tuple[o3.Irreps, list[tuple]]:
    """Depthwise (``uvu``) tensor-product paths ``h x Y -> l <= lmax`` with parity (-1)^l.

    Returns:
        The output irreps (one block per path, multiplicity of the input block) and the
        e3nn instructions ``(i_in, i_sh, i_out, "uvu", True)``.
    """
    allowed = {o3.Irrep(l, (-1) ** l) for l in range(lmax + 1)}
    out, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for k, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in allowed:
                    instructions.append((i, k, len(out), "uvu", True))
                    out.append((mul, ir_out))
    return o3.Irreps(out), instructions


class _Interaction(nn.Module):
    """One residual message-passing layer on node states ``h`` (M, dim(hidden)).

    ``h_i += Gate(W_self h_i + W_msg mean_j TP_uvu(h_j, Y_ij; w_ij))`` where the per-edge
    weights ``w_ij = W silu(W_r rbf_ij + A s_i + B s_j)`` see the distance and both atoms'
    scalars ``s``.
    """

    def __init__(self, hidden: o3.Irreps, irreps_sh: o3.Irreps, lmax: int, radial_basis: int):
        super().__init__()
        self.scalars = hidden[0].mul
        irreps_mid, instructions = _uvu_paths(hidden, irreps_sh, lmax)
        self.tp = o3.TensorProduct(hidden, irreps_sh, irreps_mid, instructions,
                                   internal_weights=False, shared_weights=False)
        self.radial = nn.Linear(radial_basis, self.scalars)
        self.dst_scalars = nn.Linear(self.scalars, self.scalars, bias=False)
        self.src_scalars = nn.Linear(self.scalars, self.scalars, bias=False)
        self.weights = nn.Linear(self.scalars, self.tp.weight_numel)
        gated = hidden[1:]
        self.gate = Gate(hidden[:1], [F.silu], o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid], gated)
        self.lin_msg = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.lin_self = o3.Linear(hidden, self.gate.irreps_in)

    def forward(self, h: Tensor, sh: Tensor, rbf: Tensor, src: Tensor, dst: Tensor, inv_degree: Tensor) -> Tensor:
        """New node states (M, dim) from ``h`` (M, dim), edge harmonics ``sh`` (E, dim(Y)),
        radial basis ``rbf`` (E, R), edges ``src -> dst`` (E,) and 1 / degree (M,)."""
        s = h[:, :self.scalars]
        e = F.silu(self.radial(rbf) + self.dst_scalars(s)[dst] + self.src_scalars(s)[src])
        msg = self.tp(h[src], sh, self.weights(e))
        agg = torch.zeros(h.shape[0], msg.shape[1], dtype=msg.dtype, device=msg.device).index_add_(0, dst, msg)
        return h + self.gate(self.lin_msg(agg * inv_degree[:, None]) + self.lin_self(h))


def _check_config(num_types: int, scalars: int, vectors: int, lmax: int, layers: int, time_dim: int,
                  num_properties: int, mean: list[float], std: list[float], radial_basis: int,
                  max_radius: float) -> None:
    ints = {"num_types": num_types, "scalars": scalars, "vectors": vectors, "lmax": lmax, "layers": layers}
    bad = [f"{k}={v}" for k, v in ints.items() if v < 1]
    if bad or num_properties < 0 or time_dim < 2 or time_dim % 2 or radial_basis < 2 or not max_radius > 0:
        raise ValueError(f"MoleculeScoreNet needs num_types, scalars, vectors, lmax, layers >= 1, num_properties >= 0, "
                         f"an even time_dim >= 2, radial_basis >= 2 and max_radius > 0; got {ints}, "
                         f"num_properties={num_properties}, time_dim={time_dim}, radial_basis={radial_basis}, "
                         f"max_radius={max_radius}")
    if len(mean) != num_properties or len(std) != num_properties or not all(math.isfinite(m) for m in mean) \
            or not all(math.isfinite(s) and s > 0 for s in std):
        raise ValueError(f"property_mean / property_std must hold {num_properties} finite values (std > 0); "
                         f"got {mean} / {std}")


class MoleculeScoreNet(nn.Module):
    """E(3)-equivariant eps-network for molecules (architecture ``"molecule_e3nn"``).

    Args:
        num_types: T, atom-type channels after the 3 position channels.
        scalars: S, ``0e`` channels of the node state (also the width of the embeddings).
        vectors: V, channels of each ``l >= 1`` irrep of the node state.
        lmax: highest degree of the spherical harmonics and of the node state (1 or 2).
        layers: number of message-passing layers.
        time_dim: width of the sinusoidal time features (and per-property embedding width).
        num_properties: k, property targets accepted as ``cond`` (0: unconditional).
        property_mean, property_std: per-property normalisation (default 0 / 1).
        radial_basis: Gaussians on [0, max_radius] featurising distances.
        max_radius: Å, range of the radial basis (the graph itself is fully connected).
    """

    prediction = "eps"

    def __init__(self, num_types: int = 4, scalars: int = 32, vectors: int = 8, lmax: int = 1, layers: int = 3,
                 time_dim: int = 32, num_properties: int = 0, property_mean: list[float] | None = None,
                 property_std: list[float] | None = None, radial_basis: int = 16, max_radius: float = 8.0):
        super().__init__()
        mean = [float(v) for v in (property_mean if property_mean is not None else [0.0] * num_properties)]
        std = [float(v) for v in (property_std if property_std is not None else [1.0] * num_properties)]
        _check_config(num_types, scalars, vectors, lmax, layers, time_dim, num_properties, mean, std,
                      radial_basis, max_radius)
        self.architecture = {"name": "molecule_e3nn", "config": {
            "num_types": num_types, "scalars": scalars, "vectors": vectors, "lmax": lmax, "layers": layers,
            "time_dim": time_dim, "num_properties": num_properties, "property_mean": mean, "property_std": std,
            "radial_basis": radial_basis, "max_radius": float(max_radius)}}
        self.num_types, self.num_properties = num_types, num_properties
        self.null_cond = float("nan") if num_properties else None
        self.time_dim, self.radial_basis, self.max_radius = time_dim, radial_basis, float(max_radius)
        self.irreps_hidden = hidden_irreps(scalars, vectors, lmax)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.type_emb = nn.Linear(num_types, scalars)
        self.time_emb = nn.Sequential(nn.Linear(time_dim, scalars), nn.SiLU(), nn.Linear(scalars, scalars))
        self.prop_emb = PropertyEmbedding(num_properties, time_dim, scalars, mean, std) if num_properties else None
        self.layers = nn.ModuleList(_Interaction(self.irreps_hidden, self.irreps_sh, lmax, radial_basis)
                                    for _ in range(layers))
        self.readout = o3.Linear(self.irreps_hidden, o3.Irreps(f"1x1o + {num_types}x0e"))
        with torch.no_grad():  # start near eps_hat = 0 (loss ~1 per dof) instead of a random O(1) guess
            self.readout.weight.mul_(0.1)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        """eps prediction (batch, N, 3 + T) for ``x`` (batch, N, 3 + T), ``t`` (batch,) in [0, 1],
        ``cond`` None or property targets (batch, k) / (1, k) (NaN = no condition) and ``mask``
        (batch, N) bool (None: every atom real). Zero on padding atoms."""
        batch, n, channels = self._check_input(x, mask)
        mask = torch.ones(batch, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device)
        node, mol, src, dst = real_graph(mask)
        real = x.reshape(batch * n, channels)[node]  # padding atoms are never read
        pos, types = real[:, :3], real[:, 3:]
        h = self._embed(types, t, cond, mol, batch)
        sh, rbf = self._edges(pos, src, dst)
        counts = mask.sum(1)
        inv_degree = 1.0 / (counts[mol] - 1).clamp(min=1).to(x.dtype)
        for layer in self.layers:
            h = layer(h, sh, rbf, src, dst, inv_degree)
        out = self.readout(h)
        vec = out[:, :3] - _molecule_mean(out[:, :3], mol, counts)  # MATH §6: on the zero-CoM subspace
        full = x.new_zeros(batch * n, channels).index_copy(0, node, torch.cat([vec, out[:, 3:]], 1))
        return full.reshape(batch, n, channels)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> tuple[int, int, int]:
        if x.dim() != 3 or x.shape[-1] != 3 + self.num_types:
            raise ValueError(f"x must be (batch, N, 3 + num_types) = (batch, N, {3 + self.num_types}); "
                             f"got {tuple(x.shape)}")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2])):
            raise ValueError(f"mask must be bool (batch, N) = {tuple(x.shape[:2])}; got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        return x.shape[0], x.shape[1], x.shape[2]

    def _embed(self, types: Tensor, t: Tensor, cond: Any, mol: Tensor, batch: int) -> Tensor:
        """Initial node states (M, dim(hidden)): scalars from types, time and properties; zero vectors."""
        tb = torch.as_tensor(t, dtype=types.dtype, device=types.device).reshape(-1)
        if tb.shape[0] not in (1, batch):
            raise ValueError(f"t must be (batch,) = ({batch},); got shape {tuple(tb.shape)}")
        e = self.time_emb(sinusoidal_embedding(tb.expand(batch), self.time_dim).to(types.dtype))
        c = property_targets(cond, self.num_properties, batch, types, type(self).__name__)
        if c is not None:
            e = e + self.prop_emb(c)
        s = self.type_emb(types) + e[mol]
        return torch.cat([s, s.new_zeros(s.shape[0], self.irreps_hidden.dim - s.shape[1])], 1)

    def _edges(self, pos: Tensor, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
        """Spherical harmonics (E, dim(Y)) of ``x_i - x_j`` and Gaussian radial basis (E, R) of its length."""
        rel = pos[dst] - pos[src]
        sh = o3.spherical_harmonics(self.irreps_sh, rel, normalize=True, normalization="component")
        dist = rel.pow(2).sum(1).add(1e-12).sqrt()  # finite gradient even for coincident atoms
        rbf = soft_one_hot_linspace(dist, 0.0, self.max_radius, self.radial_basis, basis="gaussian", cutoff=False)
        return sh, rbf * self.radial_basis ** 0.5


def _molecule_mean(v: Tensor, mol: Tensor, counts: Tensor) -> Tensor:
    """Mean of per-atom rows ``v`` (M, d) over each molecule's real atoms, gathered back to (M, d)."""
    sums = v.new_zeros(counts.shape[0], v.shape[1]).index_add_(0, mol, v)
    return (sums / counts.clamp(min=1)[:, None].to(v.dtype))[mol]
