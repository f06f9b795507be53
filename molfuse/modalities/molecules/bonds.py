"""From 3-D atoms to molecules: bond orders from distances, stability, RDKit molecules.

- :func:`bond_orders`: the EDM distance rule (:mod:`.elements`), vectorised per molecule.
- :func:`stability`: an atom is stable when its bond orders sum to its valence (H 1, C 4,
  N 3, O 2, F 1); a molecule when all its atoms are. Meaningful with explicit hydrogens only.
- :func:`to_molecule`: an RDKit molecule from types, positions and bonds, sanitised (RDKit
  adds implicit hydrogens where valences are open, so with implicit hydrogens only
  over-bonded atoms fail). Bonds come from ``method="edm"`` (the distance rule) or
  ``"rdkit"`` (``rdDetermineBonds.DetermineBonds``, explicit hydrogens, charge 0).
  Valid = the whole molecule sanitises; its SMILES is that of the largest fragment
  (canonical, without stereo), as in the EDM protocol. A molecule that cannot be made (no
  atoms, more than :data:`~.limits.MAX_INPUT_ATOMS`, an element RDKit does not know,
  non-finite coordinates, RDKit's refusal) is a reason string, never an exception; an
  argument of the wrong shape or kind (positions not (n, 3), an unknown method, margins out
  of :data:`~.elements.MARGIN_RANGE`) is a ValueError naming the argument.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from .elements import DOUBLE, MARGINS, SINGLE, TRIPLE, VALENCE, check_margins
from .limits import MAX_INPUT_ATOMS, too_many

__all__ = ["bond_orders", "stability", "to_molecule", "MoleculeResult", "METHODS", "as_positions", "atoms_problem", "embedded"]

METHODS = ("edm", "rdkit")


def _table(symbols: Sequence[str], lengths: dict, margin: float) -> np.ndarray:
    """(n, n) thresholds in pm (length + margin; -inf where the pair has no such bond)."""
    n = len(symbols)
    out = np.full((n, n), -np.inf)
    for i, a in enumerate(symbols):
        for j, b in enumerate(symbols):
            if (a, b) in lengths:
                out[i, j] = lengths[(a, b)] + margin
    return out


def bond_orders(positions: np.ndarray, symbols: Sequence[str], margins: Sequence[float] = MARGINS) -> np.ndarray:
    """(n, n) int bond orders (0-3) of one molecule from positions (n, 3) in Å (EDM rule).

    Raises:
        ValueError: an element outside the table, mismatched shapes, more than
            :data:`~.limits.MAX_INPUT_ATOMS` atoms, margins out of range.
    """
    positions = as_positions(positions, len(symbols))
    if too_many(len(symbols)):
        raise ValueError(f"symbols: {too_many(len(symbols))}")
    unknown = sorted(set(symbols) - set(VALENCE), key=str)
    if unknown:
        raise ValueError(f"unknown elements {unknown}; known: {sorted(VALENCE)}")
    m1, m2, m3 = check_margins(margins)
    d = 100.0 * np.linalg.norm(positions[:, None] - positions[None], axis=-1)  # pm
    order = (d < _table(symbols, SINGLE, m1)).astype(np.int64)
    order += (order > 0) & (d < _table(symbols, DOUBLE, m2))
    order += (order > 1) & (d < _table(symbols, TRIPLE, m3))
    np.fill_diagonal(order, 0)
    return order


def stability(orders: np.ndarray, symbols: Sequence[str]) -> tuple[int, bool]:
    """(number of atoms whose bond orders sum to their valence, whether all do)."""
    used = np.asarray(orders).sum(1)
    stable = np.array([used[i] == VALENCE[s] for i, s in enumerate(symbols)])
    return int(stable.sum()), bool(stable.all())


def as_positions(positions: Any, n: int) -> np.ndarray:
    """``positions`` as an (n, 3) float64 array in Å, or a ValueError naming the argument."""
    try:
        p = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"positions: expected an (n, 3) array of numbers in Å; got {type(positions).__name__} "
                         f"{str(positions)[:80]}") from None
    if p.shape != (n, 3):
        raise ValueError(f"positions: expected shape ({n}, 3) (x, y, z in Å for each of the {n} symbols); "
                         f"got {p.shape}")
    return p


@lru_cache(maxsize=1)
def _elements() -> frozenset[str]:
    """Element symbols RDKit knows (H to Og; not the dummy ``*``)."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    return frozenset(table.GetElementSymbol(z) for z in range(1, 119))


def atoms_problem(symbols: Sequence[Any]) -> str:
    """Why atoms cannot become a molecule before RDKit is asked ("" if they can): none, more than
    :data:`~.limits.MAX_INPUT_ATOMS`, or a symbol that is not an element."""
    if len(symbols) == 0:
        return "no atoms"
    if len(symbols) > MAX_INPUT_ATOMS:
        return too_many(len(symbols))
    known = _elements()
    for i, s in enumerate(symbols):
        if not isinstance(s, str) or s not in known:
            return f"unknown element {s!r} (atom {i}); expected an element symbol such as C, N, O"
    return ""


class MoleculeResult:
    """``mol`` (RDKit, sanitised) or None, ``smiles`` of the largest fragment ("" if invalid),
    ``reason`` ("" if valid), ``fragments`` (count), ``orders`` (n, n) used."""

    __slots__ = ("mol", "smiles", "reason", "fragments", "orders")

    def __init__(self, mol, smiles: str, reason: str, fragments: int, orders: np.ndarray | None):
        self.mol, self.smiles, self.reason, self.fragments, self.orders = mol, smiles, reason, fragments, orders


def _orders_of(mol) -> np.ndarray:
    """(n, n) bond orders of an RDKit molecule (aromatic bonds count 1.5)."""
    n = mol.GetNumAtoms()
    out = np.zeros((n, n))
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        out[i, j] = out[j, i] = b.GetBondTypeAsDouble()
    return out


def embedded(symbols: Sequence[str], positions: np.ndarray):
    """An RDKit RWMol of ``symbols`` with one conformer at ``positions`` (Å), no bonds."""
    from rdkit import Chem

    rw = Chem.RWMol()
    for s in symbols:
        rw.AddAtom(Chem.Atom(str(s)))
    conf = Chem.Conformer(len(symbols))
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, [float(c) for c in p])
    rw.AddConformer(conf, assignId=True)
    return rw


def to_molecule(symbols: Sequence[str], positions: np.ndarray, method: str = "edm",
                margins: Sequence[float] = MARGINS) -> MoleculeResult:
    """An RDKit molecule (with a 3-D conformer) from atoms, or the reason it is not one.

    Args:
        symbols: n element symbols (``"C"``, ``"Cl"``; the EDM rule knows H, C, N, O, F).
        positions: (n, 3) Å.
        method: ``"edm"`` (distance rule) or ``"rdkit"`` (DetermineBonds, explicit H only).
        margins: pm added to the single / double / triple lengths (EDM rule).

    Raises:
        ValueError: positions not (n, 3) numbers, an unknown method, margins out of range.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    positions = as_positions(positions, len(symbols))
    margins = check_margins(margins)
    problem = atoms_problem(symbols)
    if problem:
        return MoleculeResult(None, "", problem, 0, None)
    if not np.isfinite(positions).all():
        return MoleculeResult(None, "", "non-finite coordinates", 0, None)
    rw = embedded(symbols, positions)
    orders = None
    try:
        if method == "edm":
            orders = bond_orders(positions, symbols, margins)
            kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
            for i, j in zip(*np.nonzero(np.triu(orders))):
                rw.AddBond(int(i), int(j), kinds[int(orders[i, j])])
        else:
            rdDetermineBonds.DetermineBonds(rw, charge=0)
            orders = _orders_of(rw)
        mol = rw.GetMol()
        Chem.SanitizeMol(mol)
    except Exception as e:  # noqa: BLE001 - RDKit raises many kinds; each is a reason
        return MoleculeResult(None, "", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}", 0, orders)
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    smiles = Chem.MolToSmiles(Chem.RemoveHs(largest, sanitize=False), isomericSmiles=False)
    return MoleculeResult(mol, smiles, "", len(frags), orders)
