"""Bond graphs of QM9 molecules: heavy atoms with Kekulé bond orders, read once per set and cached.

:func:`bond_graphs` reads each molecule's heavy-atom bonds with :func:`~.graphs.heavy_graph`
(RDKit ``DetermineBonds`` on the full xyz, hydrogens included; Kekulé orders) and keeps the
molecules whose graph, with implicit hydrogens, is the molecule QM9 stores (its canonical
SMILES). The others are dropped and counted by reason (:data:`REASONS`). On the shipped
subset about 1 ms a molecule; the result is cached beside the parsed QM9
(:func:`~.qm9.cache_dir`), keyed by a hash of the atoms, so the full set is read once.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

from ...base.io import atomic_write, load_npz
from ...errors import DataError
from .elements import WITH_H
from .graphs import graph_molecule, heavy_graph
from .qm9 import QM9, cache_dir
from .validation import canonical

__all__ = ["BondGraphs", "bond_graphs", "REASONS", "MAX_HEAVY"]

MAX_HEAVY = 9
# status code -> why a molecule is dropped (0 = kept)
REASONS = {1: "bonds not determined", 2: "formal charges", 3: "graph differs from the QM9 SMILES"}
_VERSION = "graphs_v1"


@dataclass
class BondGraphs:
    """The kept molecules of a QM9 set, heavy atoms only, and what was dropped.

    Attributes:
        data: the kept molecules (:class:`~.qm9.QM9`, hydrogens included, stored SMILES).
        types: (n, 9) int8 indices into :data:`~.elements.HEAVY` (-1 padding).
        positions: (n, 9, 3) float32 Å (zero on padding), not centred.
        orders: (n, 9, 9) int8 Kekulé bond orders 0-3, symmetric, zero on padding.
        total: molecules read.
        dropped: ``{reason: count}`` over :data:`REASONS` (zero counts included).
    """

    data: QM9
    types: np.ndarray
    positions: np.ndarray
    orders: np.ndarray
    total: int
    dropped: dict

    def __len__(self) -> int:
        return len(self.data)

    @property
    def kept_share(self) -> float:
        return len(self) / self.total if self.total else float("nan")

    def take(self, idx: np.ndarray) -> "BondGraphs":
        """The molecules ``idx`` (the drop counts describe the set they came from)."""
        return BondGraphs(self.data.take(idx), self.types[idx], self.positions[idx], self.orders[idx], self.total,
                          dict(self.dropped))


def _read_one(symbols: list[str], positions: np.ndarray, smiles: str) -> tuple[int, np.ndarray | None]:
    """(status, heavy orders) of one molecule: status 0 kept, else a key of :data:`REASONS`."""
    orders, reason = heavy_graph(symbols, positions)
    if orders is None:
        return (2 if reason.startswith("formal charges") else 1), None
    heavy = [s for s in symbols if s != "H"]
    made = graph_molecule(heavy, orders)
    if made.reason or made.fragments != 1 or made.smiles != canonical(smiles):
        return 3, None
    return 0, orders


def _read(data: QM9) -> tuple[np.ndarray, np.ndarray]:
    """(status (n,) int8, orders (n, 9, 9) int8) of every molecule of ``data``."""
    from rdkit import RDLogger

    status = np.zeros(len(data), dtype=np.int8)
    orders = np.zeros((len(data), MAX_HEAVY, MAX_HEAVY), dtype=np.int8)
    RDLogger.DisableLog("rdApp.*")  # each failure is a counted reason, not a line on stderr
    try:
        for i in range(len(data)):
            n = int(data.n_atoms[i])
            symbols = [WITH_H[int(k)] for k in data.types[i, :n]]
            status[i], o = _read_one(symbols, data.positions[i, :n], str(data.smiles[i]))
            if o is not None:
                orders[i, :len(o), :len(o)] = o
    finally:
        RDLogger.EnableLog("rdApp.*")
    return status, orders


def _key(data: QM9) -> str:
    from rdkit import __version__ as rdkit_version

    h = hashlib.sha256(f"{_VERSION} rdkit {rdkit_version}".encode())
    for a in (data.index, data.n_atoms, data.types, data.positions):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(map(str, data.smiles)).encode())
    return h.hexdigest()


def _cached_read(data: QM9, cache: bool) -> tuple[np.ndarray, np.ndarray]:
    if not cache:
        return _read(data)
    path = cache_dir() / f"qm9_{_VERSION}_{_key(data)[:24]}.npz"
    if path.is_file():
        try:
            z = load_npz(path, "QM9 bond-graph cache", require=("status", "orders"))
            if z["status"].shape == (len(data),) and z["orders"].shape == (len(data), MAX_HEAVY, MAX_HEAVY):
                return z["status"], z["orders"]
            warnings.warn(f"QM9 bond-graph cache {path} does not fit {len(data)} molecules; reading again", stacklevel=3)
        except DataError as e:  # damaged: read again and replace it
            warnings.warn(f"{e}; reading the bond graphs again", stacklevel=3)
    status, orders = _read(data)
    atomic_write(path, lambda fh: np.savez_compressed(fh, status=status, orders=orders))
    return status, orders


def bond_graphs(data: QM9, cache: bool = True) -> BondGraphs:
    """The heavy-atom Kekulé bond graphs of ``data``; molecules without one are dropped and counted.

    A molecule is kept when RDKit determines its bonds without formal charges and the heavy
    graph, with implicit hydrogens, is one fragment whose canonical SMILES is the stored one.

    Args:
        data: QM9 molecules with explicit hydrogens (:func:`~.qm9.load_small`, :func:`~.qm9.load_qm9`).
        cache: read / write the result under :func:`~.qm9.cache_dir` (keyed by the atoms and RDKit's version).

    Raises:
        DataError: a molecule with more than 9 heavy atoms (not QM9), naming its QM9 index.
    """
    heavy_counts = (data.types > 0).sum(1)
    if len(data) and heavy_counts.max() > MAX_HEAVY:
        i = int(np.argmax(heavy_counts))
        raise DataError(f"molecule {int(data.index[i])} has {int(heavy_counts[i])} heavy atoms; QM9 bond graphs take "
                        f"at most {MAX_HEAVY}")
    status, orders = _cached_read(data, cache)
    keep = np.flatnonzero(status == 0)
    kept = data.take(keep)
    types, positions, _ = kept.heavy()
    dropped = {reason: int((status == code).sum()) for code, reason in REASONS.items()}
    return BondGraphs(kept, types, positions, orders[keep], len(data), dropped)
