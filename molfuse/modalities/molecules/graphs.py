"""Molecules as bond graphs: Kekulé bond orders read from 3-D atoms, molecules built from bonds.

- :func:`heavy_graph`: the heavy-atom bond orders (0 none, 1 single, 2 double, 3 triple;
  Kekulé) of one molecule given with all its atoms, hydrogens included: RDKit
  ``DetermineBonds`` (charge 0) on the full xyz, then ``Kekulize``; the hydrogens are dropped
  afterwards (implicit). A molecule whose bonds RDKit cannot determine, or that it can only
  write with formal charges (zwitterions), is a reason, never an exception.
- :func:`graph_molecule`: an RDKit molecule from heavy atoms and their bond orders (not from
  distances), sanitised (RDKit adds the implicit hydrogens), with the same
  :class:`~.bonds.MoleculeResult` and reasons as :func:`~.bonds.to_molecule`.
- :func:`geometry_agrees`: whether the EDM distance rule (:func:`~.bonds.bond_orders`)
  recovers the bonds from the coordinates (the orders, and the connectivity alone).
- :func:`guard_valence`: the optional valence guard: lowers the least certain bonds of an
  over-valent atom until no atom exceeds its valence (reported beside the unguarded numbers).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .bonds import MoleculeResult, as_positions, atoms_problem, bond_orders, embedded
from .elements import MARGINS, VALENCE

__all__ = ["ORDERS", "heavy_graph", "graph_molecule", "geometry_agrees", "as_orders", "guard_valence"]

ORDERS = ("none", "single", "double", "triple")  # index = bond order; one pair channel each


def heavy_graph(symbols: Sequence[str], positions: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Kekulé bond orders between the heavy atoms of one molecule given with its hydrogens.

    Args:
        symbols: n element symbols, hydrogens included (QM9: H, C, N, O, F).
        positions: (n, 3) Å.

    Returns:
        ``(orders, "")`` with orders (m, m) int8 over the m heavy atoms in their order in
        ``symbols`` (symmetric, zero diagonal), or ``(None, reason)``: ``"bonds not determined:
        ..."`` (RDKit's message) or ``"formal charges on atoms [...]"``.

    Raises:
        ValueError: positions not (n, 3) numbers.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    positions = as_positions(positions, len(symbols))
    problem = atoms_problem(symbols) or ("" if np.isfinite(positions).all() else "non-finite coordinates")
    if problem:
        return None, problem
    rw = embedded(symbols, positions)
    try:
        rdDetermineBonds.DetermineBonds(rw, charge=0)
        mol = rw.GetMol()
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as e:  # noqa: BLE001 - RDKit raises many kinds; each is a reason
        return None, f"bonds not determined: {type(e).__name__}: {str(e).strip().splitlines()[0][:100]}"
    charged = [a.GetIdx() for a in mol.GetAtoms() if a.GetFormalCharge() != 0]
    if charged:
        return None, f"formal charges on atoms {charged}"
    full = np.zeros((len(symbols), len(symbols)), dtype=np.int8)
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        full[i, j] = full[j, i] = int(b.GetBondTypeAsDouble())
    heavy = [i for i, s in enumerate(symbols) if s != "H"]
    return full[np.ix_(heavy, heavy)], ""


def as_orders(orders: Any, n: int) -> np.ndarray:
    """``orders`` as an (n, n) int64 array of bond orders 0-3, symmetric with a zero diagonal, or a
    ValueError naming the first bad entry."""
    try:
        o = np.asarray(orders, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"orders: expected an ({n}, {n}) array of bond orders; got {type(orders).__name__}") from None
    if o.shape != (n, n):
        raise ValueError(f"orders: expected shape ({n}, {n}) (one bond order per pair of the {n} atoms); got {o.shape}")
    bad = ~(np.isfinite(o) & (o == np.round(o)) & (o >= 0) & (o < len(ORDERS)))
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"orders[{i}, {j}] = {o[i, j]:g} is not a bond order 0-{len(ORDERS) - 1} {ORDERS}")
    if (o != o.T).any() or np.diag(o).any():
        i, j = (int(k) for k in np.argwhere((o != o.T) | np.diag(np.diag(o) != 0))[0])
        raise ValueError(f"orders must be symmetric with a zero diagonal; orders[{i}, {j}] = {o[i, j]:g} but "
                         f"orders[{j}, {i}] = {o[j, i]:g}")
    return o.astype(np.int64)


def graph_molecule(symbols: Sequence[str], orders: np.ndarray, positions: np.ndarray | None = None) -> MoleculeResult:
    """An RDKit molecule from atoms and their bond orders (hydrogens implicit), or the reason it is not one.

    Valid = the whole molecule sanitises (an atom above its valence fails; open valences get
    implicit hydrogens); ``smiles`` is the largest fragment's canonical SMILES without stereo,
    as :func:`~.bonds.to_molecule` gives it; ``orders`` are the bonds used.

    Args:
        symbols: n element symbols.
        orders: (n, n) bond orders 0-3 (:data:`ORDERS`), symmetric, zero diagonal.
        positions: (n, 3) Å for the molecule's conformer, or None.

    Raises:
        ValueError: ``orders`` or ``positions`` of the wrong shape, or ``orders`` not bond orders.
    """
    from rdkit import Chem

    orders = as_orders(orders, len(symbols))
    positions = None if positions is None else as_positions(positions, len(symbols))
    problem = atoms_problem(symbols)
    if not problem and positions is not None and not np.isfinite(positions).all():
        problem = "non-finite coordinates"
    if problem:
        return MoleculeResult(None, "", problem, 0, None)
    rw = embedded(symbols, positions) if positions is not None else Chem.RWMol()
    if positions is None:
        for s in symbols:
            rw.AddAtom(Chem.Atom(str(s)))
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for i, j in zip(*np.nonzero(np.triu(orders))):
        rw.AddBond(int(i), int(j), kinds[int(orders[i, j])])
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception as e:  # noqa: BLE001 - RDKit raises many kinds; each is a reason
        return MoleculeResult(None, "", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}", 0, orders)
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    return MoleculeResult(mol, Chem.MolToSmiles(largest, isomericSmiles=False), "", len(frags), orders)


def geometry_agrees(symbols: Sequence[str], positions: np.ndarray, orders: np.ndarray,
                    margins: Sequence[float] = MARGINS) -> tuple[bool, bool]:
    """Whether the EDM distance rule on ``positions`` recovers ``orders`` exactly, and whether it
    recovers which pairs are bonded (orders ignored).

    Args:
        symbols: n element symbols the rule knows (H, C, N, O, F).
        positions: (n, 3) Å.
        orders: (n, n) bond orders 0-3.
        margins: pm added to the single / double / triple lengths.

    Raises:
        ValueError: as :func:`~.bonds.bond_orders` and :func:`as_orders`.
    """
    orders = as_orders(orders, len(symbols))
    rule = bond_orders(positions, symbols, margins)
    return bool((rule == orders).all()), bool(((rule > 0) == (orders > 0)).all())


def guard_valence(symbols: Sequence[str], orders: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Bond orders with no atom above its valence (:data:`~.elements.VALENCE`), and how many bond
    orders were lowered by one to get there.

    While an atom is over-valent (the most over-valent first, the lowest index on ties), the bond
    of that atom whose drawn order the state is least sure of is lowered by one: the smallest
    ``scores[i, j, k] - scores[i, j, k - 1]`` for its order ``k``. Bonds are only ever lowered, so
    the guard ends (at worst with no bonds) and never adds a bond. An atom RDKit does not know
    (anything outside ``VALENCE``) is left as it is.

    Args:
        symbols: n element symbols.
        orders: (n, n) bond orders 0-3, symmetric, zero diagonal.
        scores: (n, n, len(ORDERS)) the state's bond channels of each pair (read from the upper
            triangle, so only ``i < j`` matters).

    Raises:
        ValueError: shapes that do not fit ``symbols``.
    """
    n = len(symbols)
    orders = as_orders(orders, n).astype(np.int64).copy()
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n, n, len(ORDERS)):
        raise ValueError(f"scores: expected ({n}, {n}, {len(ORDERS)}) (one channel per bond order of each pair); "
                         f"got {scores.shape}")
    cap = np.array([VALENCE.get(str(sym), np.iinfo(np.int64).max) for sym in symbols], dtype=np.int64)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    scores = np.where(upper[..., None], scores, np.swapaxes(scores, 0, 1))  # the upper triangle's, mirrored
    lowered = 0
    while True:
        excess = orders.sum(1) - cap
        if n == 0 or excess.max() <= 0:
            return orders, lowered
        i = int(np.argmax(excess))
        partners = np.flatnonzero(orders[i] > 0)
        k = orders[i, partners]
        margin = scores[i, partners, k] - scores[i, partners, k - 1]
        j = int(partners[int(np.argmin(margin))])
        orders[i, j] -= 1
        orders[j, i] -= 1
        lowered += 1
