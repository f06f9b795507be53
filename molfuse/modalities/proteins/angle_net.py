"""``protein_angles``: a residue-sequence transformer that predicts the noise of angle states.

A state is ``x`` (batch, N, 4): per residue the standardised ``(cos θ, sin θ, cos τ, sin τ)`` of
its virtual bond angle and dihedral (:mod:`.angles`), on the :class:`~molfuse.spaces.Chain` space
with a residue mask (batch, N) whose real residues are a prefix. The output is ``eps`` (MATH §1)
of the same shape, exactly zero where the chain has no such angle. Angles are invariant to
rotations and translations, so the network needs no equivariance; it must not be reflection
invariant either (a mirror image flips the sign of every ``sin τ``), and a plain network on these
features is not.

Architecture (the choice of angle-space backbone models such as FoldingDiff: a transformer over
residue positions with relative position information):

- input: the 4 channels, 4 flags (which channels are real at this residue), the position along
  the chain from each end (``i / 128``, ``(n − 1 − i) / 128``) and ``log n``, through a linear map;
- ``layers`` pre-norm blocks, each modulated by the time (and condition) embedding ``c``
  (adaptive layer norm: ``LN(h) (1 + scale(c)) + shift(c)``, residual gates ``gate(c)``
  zero-initialised, so each block starts as the identity):
  self-attention over the real residues with a learned per-head bias for the signed sequence
  separation ``j − i`` (clipped to ``±max_separation``), then a depthwise convolution along the
  chain (``kernel`` residues: local secondary-structure patterns), then an MLP (``2 width`` hidden);
- read-out: layer norm, linear to 4 channels (zero-initialised: ``eps_hat = 0`` at the start),
  projected on the chain space.

Conditioning (optional): ``cond`` (batch, k) or (1, k) numeric targets (helix / strand
fractions), normalised with ``property_mean`` / ``property_std``; NaN = no condition (a learned
null embedding, classifier-free dropout), as :class:`~molfuse.nets.conditions.PropertyEmbedding`.

Padding residues are never attended to and get zero output; a chain's output does not depend on
the other chains in the batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from molfuse.nets.conditions import PropertyEmbedding, time_and_condition

from .angles import CHANNEL_MEAN, CHANNEL_STD, angle_space, nerf, state_to_angles

__all__ = ["AngleTransformer"]

INPUT_FEATURES = 11  # 4 channels, 4 flags, 2 end distances, log n
POSITION_SCALE = 128.0


class _Block(nn.Module):
    """Attention with a sequence-separation bias, a depthwise convolution and an MLP, each
    adaptively normalised by ``c`` and gated (zero-initialised gates)."""

    def __init__(self, width: int, heads: int, kernel: int, max_separation: int):
        super().__init__()
        self.heads, self.max_separation = heads, max_separation
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False) for _ in range(3))
        self.modulation = nn.Linear(width, 9 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.separation = nn.Parameter(torch.zeros(heads, 2 * max_separation + 1))
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h: Tensor, c: Tensor, keep: Tensor, bias_index: Tensor, pair: Tensor | None = None) -> Tensor:
        """``h`` (B, N, W), ``c`` (B, W), ``keep`` (B, N, 1) 1 on real residues, ``bias_index`` (N, N),
        ``pair`` None or an extra attention bias (B, H, N, N)."""
        batch, n, width = h.shape
        mods = self.modulation(F.silu(c))[:, None, :].chunk(9, -1)
        attn_mask = self.separation[:, bias_index][None]  # (1, H, N, N)
        if pair is not None:
            attn_mask = attn_mask + pair
        pad = keep[..., 0] <= 0  # (B, N): padding keys are never attended to
        attn_mask = attn_mask.masked_fill(pad[:, None, None, :], float("-inf"))
        y = self.norms[0](h) * (1 + mods[1]) + mods[0]
        q, k, v = self.qkv(y).reshape(batch, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        h = h + mods[2] * self.out(a.transpose(1, 2).reshape(batch, n, width)) * keep
        y = (self.norms[1](h) * (1 + mods[4]) + mods[3]) * keep
        h = h + mods[5] * self.conv(y.transpose(1, 2)).transpose(1, 2) * keep
        y = self.norms[2](h) * (1 + mods[7]) + mods[6]
        return h + mods[8] * self.mlp(y) * keep


class AngleTransformer(nn.Module):
    """eps-network for angle states (architecture ``"protein_angles"``).

    Args:
        width: channels per residue.
        layers: number of blocks.
        heads: attention heads (``width`` must be a multiple).
        kernel: odd width of the depthwise convolution, in residues.
        max_separation: sequence separations ``|j − i|`` above it share one attention bias per sign.
        time_dim: width of the sinusoidal time features (and per-property embedding width).
        num_properties: k, numeric conditions accepted as ``cond`` (0: unconditional).
        property_mean, property_std: per-property normalisation (default 0 / 1).
        distance_bins: 0 (off) or the number of Gaussians on [0, ``max_distance``] Å that featurise
            the Cα–Cα distances of the trace the current state decodes to (NeRF, differentiable);
            each layer turns them into a per-head attention bias, scaled by a learned function of t.
        max_distance: Å, the range of those Gaussians.
    """

    prediction = "eps"

    def __init__(self, width: int = 128, layers: int = 4, heads: int = 4, kernel: int = 5, max_separation: int = 32,
                 time_dim: int = 64, num_properties: int = 0, property_mean: list[float] | None = None,
                 property_std: list[float] | None = None, distance_bins: int = 0, max_distance: float = 24.0):
        super().__init__()
        mean = [float(v) for v in (property_mean if property_mean is not None else [0.0] * num_properties)]
        std = [float(v) for v in (property_std if property_std is not None else [1.0] * num_properties)]
        cfg = {"width": width, "layers": layers, "heads": heads, "kernel": kernel, "max_separation": max_separation,
               "time_dim": time_dim, "num_properties": num_properties, "property_mean": mean, "property_std": std}
        if distance_bins:  # recorded only when on, so cards of nets without it read as before
            cfg.update(distance_bins=int(distance_bins), max_distance=float(max_distance))
        _check_config(cfg)
        self.architecture = {"name": "protein_angles", "config": cfg}
        self.space = angle_space()
        self.num_properties = num_properties
        self.null_cond = float("nan") if num_properties else None
        self.time_dim = time_dim
        self.embed = nn.Linear(INPUT_FEATURES, width)
        self.time_emb = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_emb = PropertyEmbedding(num_properties, time_dim, width, mean, std) if num_properties else None
        self.blocks = nn.ModuleList(_Block(width, heads, kernel, max_separation) for _ in range(layers))
        if distance_bins:
            self.distance = nn.Linear(distance_bins, heads * layers)
            self.distance_scale = nn.Linear(width, heads * layers)  # a function of t (and the condition)
            nn.init.zeros_(self.distance_scale.weight)
            nn.init.ones_(self.distance_scale.bias)
        self.final_norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, 4)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        """eps prediction (batch, N, 4) for angle states ``x`` (batch, N, 4), ``t`` (batch,) in
        [0, 1], ``cond`` None or targets (batch, k) / (1, k) (NaN = no condition) and ``mask``
        (batch, N) bool, real residues a prefix (None: every residue real)."""
        batch, width = self._check_input(x, mask)
        mask = torch.ones(batch, width, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device)
        n = max(int(mask.sum(1).max()), 1) if batch else width  # the padding beyond every chain is never computed
        x, mask = x[:, :n], mask[:, :n]
        entries = self.space.entries(x.shape, mask, x.device)
        x = torch.where(entries, x, torch.zeros((), dtype=x.dtype, device=x.device))  # padding never read
        keep = mask[..., None].to(x.dtype)
        h = self.embed(self._features(x, entries, mask)) * keep
        c = self._conditioning(t, cond, batch, x)
        idx = torch.arange(n, device=x.device)
        m = self.architecture["config"]["max_separation"]
        bias_index = (idx[None, :] - idx[:, None]).clamp(-m, m) + m
        pairs = self._distance_bias(x, mask, c)
        for i, block in enumerate(self.blocks):
            h = block(h, c, keep, bias_index, None if pairs is None else pairs[:, i])
        out = self.readout(self.final_norm(h))
        out = torch.where(entries, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return F.pad(out, (0, 0, 0, width - n)) if n < width else out

    def _check_input(self, x: Tensor, mask: Tensor | None) -> tuple[int, int]:
        if x.dim() != 3 or x.shape[-1] != 4:
            raise ValueError(f"x must be angle states (batch, residues, 4); got shape {tuple(x.shape)}")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2])):
            raise ValueError(f"mask must be bool (batch, residues) = {tuple(x.shape[:2])}; got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        return x.shape[0], x.shape[1]

    def _features(self, x: Tensor, entries: Tensor, mask: Tensor) -> Tensor:
        """(batch, N, 11) per-residue inputs: channels, channel flags, distances to both ends, log n."""
        n = mask.sum(1, keepdim=True).to(x.dtype)  # (batch, 1)
        i = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[None, :]
        ends = torch.stack([i.expand_as(n - i), (n - 1 - i).clamp_min(0)], -1) / POSITION_SCALE
        size = (n.clamp_min(1).log() / math.log(POSITION_SCALE))[..., None].expand(-1, x.shape[1], 1)
        return torch.cat([x, entries.to(x.dtype), ends, size], -1)

    def _distance_bias(self, x: Tensor, mask: Tensor, c: Tensor) -> Tensor | None:
        """(B, layers, H, N, N) attention biases from the Cα distances of the trace ``x`` decodes to
        (None when ``distance_bins`` is 0). Differentiable in ``x``: the exact AND correction and
        likelihoods see the whole network."""
        cfg = self.architecture["config"]
        bins = cfg.get("distance_bins", 0)
        if not bins:
            return None
        theta, tau = state_to_angles(x, mask, CHANNEL_MEAN, CHANNEL_STD)
        ca = nerf(theta, tau, mask)  # Å, centred
        d = (ca[:, :, None, :] - ca[:, None, :, :]).pow(2).sum(-1).add(1e-8).sqrt()  # (B, N, N)
        centres = torch.linspace(0.0, cfg["max_distance"], bins, device=x.device, dtype=x.dtype)
        width = cfg["max_distance"] / max(bins - 1, 1)
        rbf = torch.exp(-((d[..., None] - centres) / width) ** 2)  # (B, N, N, bins)
        bias = self.distance(rbf) * self.distance_scale(F.silu(c))[:, None, None, :]  # (B, N, N, L·H)
        layers, heads = cfg["layers"], cfg["heads"]
        return bias.reshape(*d.shape, layers, heads).permute(0, 3, 4, 1, 2)

    def _conditioning(self, t: Tensor, cond: Any, batch: int, like: Tensor) -> Tensor:
        """(batch, H): time embedding plus the property embedding of ``cond``."""
        return time_and_condition(t, cond, batch, like, self.time_emb, self.time_dim, self.cond_emb, self.num_properties,
                                  type(self).__name__)


def _check_config(cfg: dict[str, Any]) -> None:
    """Raise ValueError naming every bad entry of an AngleTransformer config."""
    bad = [f"{k}={cfg[k]} (needs >= 1)" for k in ("width", "layers", "heads", "max_separation") if cfg[k] < 1]
    if cfg["heads"] >= 1 and cfg["width"] % cfg["heads"]:
        bad.append(f"width={cfg['width']} is not a multiple of heads={cfg['heads']}")
    if cfg["kernel"] < 1 or cfg["kernel"] % 2 == 0:
        bad.append(f"kernel={cfg['kernel']} (needs an odd value >= 1)")
    if cfg["time_dim"] < 2 or cfg["time_dim"] % 2:
        bad.append(f"time_dim={cfg['time_dim']} (needs an even value >= 2)")
    if cfg.get("distance_bins", 0) < 0 or ("distance_bins" in cfg and not cfg.get("max_distance", 0) > 0):
        bad.append(f"distance_bins={cfg.get('distance_bins')} (needs >= 0) with max_distance > 0 Å; "
                   f"got max_distance={cfg.get('max_distance')}")
    k, mean, std = cfg["num_properties"], cfg["property_mean"], cfg["property_std"]
    if k < 0:
        bad.append(f"num_properties={k} (needs >= 0)")
    elif len(mean) != k or len(std) != k or not all(math.isfinite(v) for v in mean) \
            or not all(math.isfinite(s) and s > 0 for s in std):
        bad.append(f"property_mean / property_std must hold {k} finite values (std > 0); got {mean} / {std}")
    if bad:
        raise ValueError("AngleTransformer config: " + "; ".join(bad))
