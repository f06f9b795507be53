"""Rebuild data/examples/: small real held-out inputs for `molfuse evaluate` (README, part 3).

    .venv/bin/python data/examples/build.py [--out data/examples]

Writes qm9_test.smi (the first 200 molecules of the shipped qm9_small test split), backbones/
(one real 64-residue test fragment of each of the first 8 test proteins of
data/proteins/backbones.npz, as Cα-only PDB and mmCIF files, 4 each) and digits_test.npy (64 held-out MNIST test digits, uint8, the first 6 or 7
of each class in order). Deterministic: the same files every time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent))
    out = Path(p.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)

    from molfuse.modalities.molecules.evaluate import reference

    smiles = list(reference("small", "test"))[:200]
    (out / "qm9_test.smi").write_text("# 200 real QM9 test molecules (qm9_small test split, canonical SMILES)\n"
                                      + "\n".join(smiles) + "\n")

    from molfuse.modalities.proteins.data import load_backbones
    from molfuse.modalities.proteins.io import write_mmcif, write_pdb

    folder = out / "backbones"
    folder.mkdir(exist_ok=True)
    data = load_backbones().select("test", 64)
    first = [int(np.flatnonzero(data.protein == p)[0]) for p in dict.fromkeys(data.protein.tolist())][:8]
    traces = data.traces()
    for i, k in enumerate(first):  # one fragment of each of the first 8 test proteins
        _, file, chain = str(data.protein_name[data.protein[k]]).split(":")
        name, trace = f"test_{i:02d}_{Path(file).name.split('.')[0]}_{chain}", traces[k]
        if i % 2:
            write_mmcif(folder / f"{name}.cif", trace)
        else:
            write_pdb(folder / f"{name}.pdb", trace)

    from molfuse.modalities.images.data import load_mnist

    images, labels = load_mnist("test")
    pick = np.concatenate([np.flatnonzero(labels == k)[: 7 if k < 4 else 6] for k in range(10)])
    np.save(out / "digits_test.npy", np.ascontiguousarray(images[pick], dtype=np.uint8))
    print(f"wrote {out}: qm9_test.smi ({len(smiles)}), backbones/ (8), digits_test.npy ({len(pick)})")


if __name__ == "__main__":
    main()
