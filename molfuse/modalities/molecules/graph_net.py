"""``molecule_graph_egnn``: an E(3)-equivariant network that updates atoms, bonds and positions together.

A state lives on :class:`~molfuse.spaces.MoleculeGraph` (MATH §6, pair features): ``x`` (batch, N,
F + N·B), node i's row holding 3 centred positions (Å), F − 3 type channels (a scaled, noisy
one-hot), then B bond channels per partner j, stored once in the upper triangle ``j > i``; a node
mask (batch, N). The network predicts ``eps`` (MATH §1, default) or ``x0`` of the same layout,
projected on the space: positions centred over the real atoms, lower triangle, diagonal and
padding exactly zero.

Architecture (EGNN message passing, Satorras et al. 2021, with pair features as in JODO / MiDi /
EQGAT-diff), dense over the fully connected graph of each molecule's real atoms:

- inputs: node features ``h_i = W_a a_i + c`` (types ``a_i``; ``c`` the time and property
  embedding), pair features ``e_ij = W_b b_ij`` from the symmetric bond channels ``b_ij``
  (:func:`molfuse.pairs.unpack`: the stored upper triangle mirrored), positions ``x_i``;
- each layer, with ``d_ij = |x_i − x_j|`` and a Gaussian basis ``r_ij`` of it:
  ``m_ij = φ_m(A LN(h)_i + B LN(h)_j + C LN(e)_ij + R r_ij)`` (a message j -> i),
  ``s_ij = m_ij + m_ji`` (symmetric),
  ``h_i += φ_h([LN(h)_i, mean_j m_ij, c])``, and with ``u_ij = silu(W_u s_ij)`` (width E)
  ``e_ij += W_e u_ij``, ``x_i += mean_j (x_i − x_j) / (d_ij + 1) · w_x·u_ij``;
- read-out: positions ``x_L − x_0`` (eps) or ``x_L`` (x0), types ``W LN(h)``, pairs ``W LN(e)``
  (symmetric, then stored in the upper triangle); everything projected on the space.

Means run over the other real atoms of the same molecule (``n − 1`` of them); padding atoms are
zeroed before anything reads them (any value, even inf / NaN, gives the same output) and pairs
touching them are never aggregated. Each molecule's output depends on its own entries only.

Symmetries: only distances and relative vectors enter, and the coordinate update is linear in
``x_i − x_j`` with invariant coefficients, so the position output is E(3)-equivariant (rotations,
translations and reflections) and the type and pair outputs are invariant. A mirrored molecule is
thus as likely as the original: the state holds no chirality (no stereo tags), and the SMILES
the decoder writes carry none. Relabelling the atoms permutes node rows and the symmetric pair
matrix alike (the upper-triangle storage itself changes under a permutation; compare after
:func:`~molfuse.pairs.unpack`).

Why eps by default: the core converts either prediction (:mod:`molfuse.convert`) and
:func:`molfuse.losses.denoising_loss` trains both on the same ``σ_t²``-weighted objective (same
minimiser), so the choice is only the parameterisation. eps mirrors the point-cloud member
(``molecule_e3nn``) and, with zero-initialised read-outs, starts at ``eps_hat = 0`` (loss 1 per
degree of freedom). ``prediction="x0"`` predicts the clean molecule (the JODO / MiDi choice) as
the input plus a learned correction, so it starts at ``x0_hat = x_t``. One measurement (synthetic
zig-zag chains of 3–9 atoms, default config, batch 64, Adam 1e-3, one seed, held-out
``denoising_loss``): eps 1.00 -> 0.124 / 0.091 / 0.081 after 100 / 200 / 300 steps; x0 0.30 ->
0.178 / 0.230 / 0.103, i.e. x0 starts lower but trains less steadily under this loss (its own error
is weighted by ``α_t² / σ_t²``). Not yet measured on QM9.

Conditioning (optional): ``cond`` (batch, k) or (1, k) property targets in physical units, NaN =
no condition (learned null embedding, classifier-free dropout), as in ``molecule_e3nn``.

Speed (``bench/molecule_graph_net_speed.py``, measured 2026-12-07, 1 thread, torch 2.13 CPU, load
average ~4 on 2 cores, so read the CPU column): forward + backward + Adam of ``denoising_loss`` at
batch 64, N = 9 heavy atoms all real, 4 types, 4 bond channels; the nets timed in turns::

    net (width/pair_width/layers)   params  ms/step wall  ms/step CPU
    egnn 64/32/4 (default)          148780         133.2         88.4
    egnn 32/16/3                     30347          66.5         44.5
    egnn 128/64/6                   852686         469.5        307.4
    e3nn 32/8/1/3 (point cloud)      27896         121.0         81.0
    e3nn 64/16/1/4 (qm9_uncond's)   137808         292.7        187.9

At equal parameter count the EGNN step costs about half the e3nn one, although it also carries
the N² pair features; the cost is in the dense (batch, N, N, width) message and pair MLPs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from molfuse.nets.conditions import PropertyEmbedding, centres_fit, time_and_condition
from molfuse.pairs import unpack
from molfuse.spaces import MoleculeGraph

__all__ = ["GraphScoreNet", "GRAPH_PREDICTIONS"]

GRAPH_PREDICTIONS = ("eps", "x0")


def _mlp(d_in: int, width: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), nn.SiLU(), nn.Linear(width, d_out))


class _Layer(nn.Module):
    """One EGNN layer on node features ``h`` (B, N, H), pair features ``e`` (B, N, N, E) and
    positions ``x`` (B, N, 3)."""

    def __init__(self, width: int, pair_width: int, radial_basis: int):
        super().__init__()
        self.norm_h, self.norm_e = nn.LayerNorm(width), nn.LayerNorm(pair_width)
        self.dst, self.src = nn.Linear(width, width), nn.Linear(width, width, bias=False)
        self.pair, self.radial = nn.Linear(pair_width, width, bias=False), nn.Linear(radial_basis, width, bias=False)
        self.message = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.node = _mlp(3 * width, width, width)
        self.pair_hidden = nn.Sequential(nn.Linear(width, pair_width), nn.SiLU())  # shared by φ_e and φ_x
        self.edge, self.coord = nn.Linear(pair_width, pair_width), nn.Linear(pair_width, 1)
        nn.init.zeros_(self.coord.weight)  # positions start unchanged
        nn.init.zeros_(self.coord.bias)

    def forward(self, h: Tensor, e: Tensor, x: Tensor, c: Tensor, rbf: Tensor, dist: Tensor,
                weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``c`` (B, H) conditioning, ``rbf`` (B, N, N, R), ``dist`` (B, N, N) Å, ``weight`` (B, N, N):
        1 / (n − 1) on pairs of distinct real atoms, 0 elsewhere (so sums over j are means)."""
        hn = self.norm_h(h)
        m = self.message(self.dst(hn)[:, :, None] + self.src(hn)[:, None] + self.pair(self.norm_e(e))
                         + self.radial(rbf))  # m[:, i, j]: message j -> i
        s = m + m.transpose(1, 2)  # symmetric in (i, j), exactly
        agg = (m * weight[..., None]).sum(2)
        h = h + self.node(torch.cat([hn, agg, c[:, None].expand_as(hn)], -1))
        u = self.pair_hidden(s)
        e = e + self.edge(u)
        rel = (x[:, :, None] - x[:, None]) / (dist[..., None] + 1.0)  # x_i − x_j, bounded
        x = x + (rel * (self.coord(u) * weight[..., None])).sum(2)
        return h, e, x


class GraphScoreNet(nn.Module):
    """E(3)-equivariant EGNN for molecule graphs (architecture ``"molecule_graph_egnn"``).

    Args:
        node_channels: F, node channels of the state, the 3 positions included (3 + atom types).
        pair_channels: B, bond channels per pair (none / single / double / triple ...).
        width: H, node feature width (also the message width).
        pair_width: E, pair feature width.
        layers: message-passing layers.
        time_dim: width of the sinusoidal time features (and per-property embedding width).
        num_properties: k, property targets accepted as ``cond`` (0: unconditional).
        property_mean, property_std: per-property normalisation (default 0 / 1).
        radial_basis: Gaussians on [0, max_radius] Å featurising each layer's distances.
        max_radius: Å, range of the radial basis (the graph itself is fully connected).
        prediction: ``"eps"`` or ``"x0"`` (see the module docstring).
        property_centres: k lists of increasing values (physical units) at which each property
            also gets a Gaussian-bump embedding (:class:`~molfuse.nets.conditions.PropertyEmbedding`),
            e.g. ``[[0, 1, 2, 3, 4, 5, 6]]`` for a ring count; None: the linear embedding only.
    """

    def __init__(self, node_channels: int = 7, pair_channels: int = 4, width: int = 64, pair_width: int = 32,
                 layers: int = 4, time_dim: int = 32, num_properties: int = 0,
                 property_mean: list[float] | None = None, property_std: list[float] | None = None,
                 radial_basis: int = 16, max_radius: float = 6.0, prediction: str = "eps",
                 property_centres: list[list[float]] | None = None):
        super().__init__()
        mean = [float(v) for v in (property_mean if property_mean is not None else [0.0] * num_properties)]
        std = [float(v) for v in (property_std if property_std is not None else [1.0] * num_properties)]
        cfg = {"node_channels": node_channels, "pair_channels": pair_channels, "width": width,
               "pair_width": pair_width, "layers": layers, "time_dim": time_dim, "num_properties": num_properties,
               "property_mean": mean, "property_std": std, "radial_basis": radial_basis,
               "max_radius": max_radius, "prediction": prediction}
        if property_centres is not None:  # recorded only when used: older cards stay as they were
            cfg["property_centres"] = property_centres
        _check_config(cfg)
        cfg["max_radius"] = float(max_radius)
        self.architecture = {"name": "molecule_graph_egnn", "config": cfg}
        self.space = MoleculeGraph(node_channels, pair_channels, centred=3)
        self.prediction = prediction
        self.num_properties = num_properties
        self.null_cond = float("nan") if num_properties else None
        self.time_dim, self.radial_basis, self.max_radius = time_dim, radial_basis, float(max_radius)
        self.type_emb = nn.Linear(node_channels - 3, width)
        self.pair_emb = nn.Linear(pair_channels, pair_width)
        self.time_emb = _mlp(time_dim, width, width)
        self.prop_emb = (PropertyEmbedding(num_properties, time_dim, width, mean, std, property_centres)
                         if num_properties else None)
        self.layers = nn.ModuleList(_Layer(width, pair_width, radial_basis) for _ in range(layers))
        self.type_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, node_channels - 3))
        self.pair_out = nn.Sequential(nn.LayerNorm(pair_width), nn.Linear(pair_width, pair_channels))
        for head in (self.type_out[1], self.pair_out[1]):  # eps_hat = 0 (or x0_hat = x_t) at the start
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        """Prediction (batch, N, F + N·B) for states ``x`` (batch, N, F + N·B), ``t`` (batch,) in
        [0, 1], ``cond`` None or property targets (batch, k) / (1, k) (NaN = no condition) and
        ``mask`` (batch, N) bool (None: every atom real). On the space: centred, zero off the
        free entries."""
        batch, n = self._check_input(x, mask)
        mask = torch.ones(batch, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device)
        f, nb = self.space.node_channels, self.space.pair_channels
        pos, types, pairs = unpack(x, f, nb, 3, mask)  # padding, diagonal and lower triangle never read
        c = self._conditioning(t, cond, batch, x)
        weight = _pair_weights(mask, x.dtype)
        h = self.type_emb(types) + c[:, None]
        e = self.pair_emb(pairs)
        y = pos
        for layer in self.layers:
            dist = (y[:, :, None] - y[:, None]).pow(2).sum(-1).add(1e-12).sqrt()  # finite gradient at 0
            h, e, y = layer(h, e, y, c, self._radial(dist), dist, weight)
        out = torch.cat([y - pos, self.type_out(h), self.pair_out(e).flatten(2)], -1)
        if self.prediction == "x0":
            out = out + torch.cat([pos, types, pairs.flatten(2)], -1)  # the upper triangle survives the projection
        return self.space.project(out, mask)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> tuple[int, int]:
        f, nb = self.space.node_channels, self.space.pair_channels
        if x.dim() != 3 or x.shape[-1] != f + x.shape[1] * nb:
            raise ValueError(f"x must be molecule-graph states (batch, N, F + N·B) with F = {f}, B = {nb}; "
                             f"got shape {tuple(x.shape)}")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2])):
            raise ValueError(f"mask must be bool (batch, N) = {tuple(x.shape[:2])}; got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        return x.shape[0], x.shape[1]

    def _conditioning(self, t: Tensor, cond: Any, batch: int, like: Tensor) -> Tensor:
        """(batch, H): time embedding plus the property embedding of ``cond``."""
        return time_and_condition(t, cond, batch, like, self.time_emb, self.time_dim, self.prop_emb, self.num_properties,
                                  type(self).__name__)

    def _radial(self, dist: Tensor) -> Tensor:
        """Gaussian basis (..., R) of distances (...) in Å on [0, max_radius]."""
        centres = torch.linspace(0.0, self.max_radius, self.radial_basis, dtype=dist.dtype, device=dist.device)
        spread = self.max_radius / (self.radial_basis - 1)
        return torch.exp(-((dist[..., None] - centres) / spread) ** 2)


def _pair_weights(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(batch, N, N): 1 / (n − 1) where i != j are both real atoms of an n-atom molecule, else 0."""
    n = mask.shape[1]
    both = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=mask.device)
    others = (mask.sum(1) - 1).clamp(min=1).to(dtype)
    return both.to(dtype) / others[:, None, None]


def _check_config(cfg: dict) -> None:
    """Raise ValueError naming each field of a ``molecule_graph_egnn`` config that is out of range."""
    ints = {"node_channels": 4, "pair_channels": 1, "width": 1, "pair_width": 1, "layers": 1, "time_dim": 2,
            "num_properties": 0, "radial_basis": 2}
    bad = [f"{k}={cfg[k]!r} (an int >= {lo})" for k, lo in ints.items()
           if isinstance(cfg[k], bool) or not isinstance(cfg[k], int) or cfg[k] < lo]
    if not bad and cfg["time_dim"] % 2:
        bad.append(f"time_dim={cfg['time_dim']} (even)")
    r = cfg["max_radius"]
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and r > 0):
        bad.append(f"max_radius={r!r} (Å, > 0)")
    if cfg["prediction"] not in GRAPH_PREDICTIONS:
        bad.append(f"prediction={cfg['prediction']!r} (one of {', '.join(GRAPH_PREDICTIONS)})")
    k = cfg["num_properties"] if not any(b.startswith("num_properties=") for b in bad) else None
    for name, positive in (("property_mean", False), ("property_std", True)):
        v = cfg[name]
        if k is not None and (len(v) != k or not all(math.isfinite(u) and (u > 0 or not positive) for u in v)):
            bad.append(f"{name}={v} ({k} finite values{', > 0' if positive else ''})")
    c = cfg.get("property_centres")
    if c is not None and k is not None and not centres_fit(c, k):
        bad.append(f"property_centres={c!r} ({k} lists of at least 2 increasing finite values)")
    if bad:
        raise ValueError("molecule_graph_egnn config: " + "; ".join(bad) + " (node_channels counts the 3 positions)")
