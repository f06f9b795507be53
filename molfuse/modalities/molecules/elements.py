"""Atom types, bond lengths and valences of QM9 chemistry (H, C, N, O, F).

Bond orders from 3-D distances follow the EDM protocol (Hoogeboom et al. 2022, their
``bond_analyze``): a pair is bonded when its distance is below the tabulated single-bond
length plus 10 pm, double when below the double-bond length plus 5 pm, triple when below
the triple-bond length plus 3 pm. The lengths (pm) are the standard covalent bond lengths
the EDM protocol uses; the margins are arguments, recorded with every result, each in
:data:`MARGIN_RANGE` (0 to 50 pm: a negative margin removes bonds that are there, so every atom
sanitises alone; past 50 pm the C–C single-bond threshold, 2.04 Å, nears the 2.5 Å between
the ends of a bond angle, so angles start to close into rings).
"""

from __future__ import annotations

from typing import Any

__all__ = ["HEAVY", "WITH_H", "VALENCE", "SINGLE", "DOUBLE", "TRIPLE", "MARGINS", "MARGIN_RANGE", "ATOMIC_NUMBER",
           "length", "check_margins"]

HEAVY = ("C", "N", "O", "F")          # implicit hydrogens (default, 2-core CPU training)
WITH_H = ("H", "C", "N", "O", "F")    # explicit hydrogens (the EDM protocol)
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
ATOMIC_NUMBER = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
MARGINS = (10.0, 5.0, 3.0)           # pm added to the single / double / triple lengths
MARGIN_RANGE = (0.0, 50.0)           # pm: the physical range of each margin


def _symmetric(table: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    out = dict(table)
    out.update({(b, a): v for (a, b), v in table.items()})
    return out


SINGLE = _symmetric({("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
                     ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135, ("N", "N"): 145,
                     ("N", "O"): 140, ("N", "F"): 136, ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142})
DOUBLE = _symmetric({("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121,
                     ("O", "O"): 121})
TRIPLE = _symmetric({("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110})


def length(order: int, a: str, b: str) -> float | None:
    """Tabulated bond length in pm of an order-``order`` bond between elements a and b (None if none)."""
    return {1: SINGLE, 2: DOUBLE, 3: TRIPLE}[order].get((a, b))


def check_margins(margins: Any) -> tuple[float, float, float]:
    """The three margins (pm) as floats, or a ValueError naming ``margins`` (three numbers, each
    in :data:`MARGIN_RANGE`)."""
    lo, hi = MARGIN_RANGE
    try:
        values = None if isinstance(margins, (str, bytes)) else tuple(float(m) for m in margins)
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != 3:
        raise ValueError(f"margins: expected 3 numbers (pm added to the single, double, triple lengths); "
                         f"got {margins!r}")
    if not all(lo <= m <= hi for m in values):
        raise ValueError(f"margins: each must be a number in [{lo:g}, {hi:g}] pm; got {list(values)}")
    return values
