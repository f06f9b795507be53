"""How large a molecule may be before RDKit sees it: a molecule too large is a reason, never a crash.

RDKit writes SMILES recursively: a chain of about 20,000 atoms overflows the 8 MB main stack
and kills the process (SIGSEGV; about 4,000 atoms in a thread with 1 MB of stack), and the
distance rule's (n, n) tables grow with n². Every public entry that takes SMILES, SDF
records or atom lists counts the atoms first, from the text or the array, and refuses more
than :data:`MAX_INPUT_ATOMS`: a row with :func:`too_many` as its reason where the function
returns rows, a ValueError naming the argument where it returns one number.
"""

from __future__ import annotations

import re

__all__ = ["MAX_INPUT_ATOMS", "smiles_atoms", "sdf_atoms", "too_many"]

MAX_INPUT_ATOMS = 1000  # QM9: at most 29 atoms (9 heavy); drug-like molecules stay below 200 with hydrogens

# an atom of a SMILES: a bracket atom, the capital of an element symbol (Cl, Br count once), an
# aromatic organic atom, a wildcard; anything RDKit would read as an atom is counted (at least) once
_SMILES_ATOM = re.compile(r"\[[^\]]*\]|[A-Z]|[bcnops]|\*")
_V3000_COUNTS = re.compile(r"^M\s+V30\s+COUNTS\s+(\d+)", re.MULTILINE)


def smiles_atoms(smiles: str) -> int:
    """Atoms written in a SMILES string (an upper bound on the atoms RDKit would make), without RDKit."""
    return len(_SMILES_ATOM.findall(smiles))


def sdf_atoms(block: str) -> int | None:
    """Atoms an SDF record declares (its V3000 ``COUNTS`` line, else the V2000 counts line:
    the first 3 characters of line 4), without RDKit; None when neither is readable."""
    m = _V3000_COUNTS.search(block)
    if m:
        return int(m.group(1))
    lines = block.splitlines()
    try:
        return int(lines[3][:3]) if len(lines) > 3 else None
    except ValueError:
        return None


def too_many(n: int, what: str = "molecule") -> str:
    """The reason a ``what`` of ``n`` atoms is refused ("" when ``n`` is within the limit)."""
    if n <= MAX_INPUT_ATOMS:
        return ""
    return (f"{what} of {n:,} atoms is above the limit of {MAX_INPUT_ATOMS:,} atoms "
            "(molfuse.modalities.molecules.limits.MAX_INPUT_ATOMS); not handed to RDKit")
