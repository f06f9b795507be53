"""Properties RDKit computes exactly from a molecule, for conditioning targets and hit rates.

Each is a pure function of the molecular graph, so a generated molecule's property error and
hit rate are exact (no learned predictor in the loop). NaN for an invalid molecule.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["PROPERTIES", "compute_properties", "property_of", "hit_rate"]


def _funcs() -> dict[str, tuple[Callable[[Any], float], str]]:
    from rdkit.Chem import QED, Crippen, rdMolDescriptors

    return {
        "logp": (Crippen.MolLogP, "Crippen logP"),
        "tpsa": (rdMolDescriptors.CalcTPSA, "topological polar surface area, Å²"),
        "qed": (QED.qed, "quantitative estimate of drug-likeness"),
        "rings": (rdMolDescriptors.CalcNumRings, "number of rings (SSSR)"),
        "heteroatoms": (rdMolDescriptors.CalcNumHeteroatoms, "number of atoms other than C and H"),
        "heavy_atoms": (lambda m: m.GetNumHeavyAtoms(), "number of heavy atoms"),
    }


PROPERTIES = ("logp", "tpsa", "qed", "rings", "heteroatoms", "heavy_atoms")


def property_of(mol: Any, name: str) -> float:
    """One property of one RDKit molecule (NaN for None)."""
    if mol is None:
        return float("nan")
    try:
        return float(_funcs()[name][0](mol))
    except KeyError:
        raise ValueError(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}") from None


def compute_properties(mols: Iterable[Any], names: Sequence[str] | str = PROPERTIES) -> pd.DataFrame:
    """One row per molecule, one column per property (NaN where the molecule is None); ``names``
    is a list of :data:`PROPERTIES` or one name (``"rings"`` is ``["rings"]``)."""
    names = [names] if isinstance(names, str) else list(names)
    funcs = _funcs()
    unknown = [n for n in names if n not in funcs]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(PROPERTIES)}")
    rows = [{n: (float(funcs[n][0](m)) if m is not None else np.nan) for n in names} for m in mols]
    return pd.DataFrame(rows, columns=list(names))


def hit_rate(values: np.ndarray, target: float, tolerance: float) -> float:
    """Share of molecules within ``tolerance`` of ``target`` (invalid ones count as misses)."""
    v = np.asarray(values, dtype=float)
    return float((np.abs(v - target) <= tolerance).sum() / len(v)) if len(v) else float("nan")
