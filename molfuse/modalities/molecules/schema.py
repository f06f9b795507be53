"""The molecule evaluator's ``evaluation:`` settings in a workflow: its YAML schema, checked.

::

    evaluation?:
      bonds?: edm | rdkit = edm          # bond inference (rdkit: DetermineBonds, explicit H only)
      margins?: [10, 5, 3]               # pm added to single / double / triple lengths (EDM), each in [0, 50]
      novelty?: true                     # against the training split's SMILES (of `reference_source`)
      reference_source?: auto | qm9 | small = auto   # real molecules: novelty, FCD, property plots
                                         # (qm9 needs molfuse[qm9]; auto = qm9 when installed, else small,
                                         #  and summary.md says so in bold)
      targets?: {rings: {value: 2, tolerance: 0}, logp: {value: 1.5, tolerance: 0.5}}
                                         # property hit rates (RDKit properties, exact, of the
                                         #  largest fragment: the molecule written to .smi)
      properties?: [logp, qed, rings, heteroatoms]   # computed per molecule (largest fragment) and plotted
      fcd?: false                        # Fréchet ChemNet distance to the test split (needs molfuse[fcd])
      valence_guard?: false              # molecule-graph members: also judge each sample with its
                                         #  over-valent atoms' least certain bonds lowered, in columns
                                         #  *_guarded beside the unguarded ones (never in their place)

A setting this install cannot honour (``fcd: true`` without fcd_torch, ``reference_source: qm9``
without the qm9pack wheel) is refused here, while the workflow is read, with the install hint.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

from ...base.checks import as_bool, as_choice, as_float, fail, fields
from .bonds import METHODS
from .elements import MARGIN_RANGE, MARGINS
from .properties import PROPERTIES
from .qm9 import QM9_HINT, full_available

__all__ = ["parse_evaluation", "check_reference_source", "DEFAULTS"]

DEFAULTS = {"bonds": "edm", "margins": list(MARGINS), "novelty": True, "reference_source": "auto", "targets": None,
            "properties": ["logp", "qed", "rings", "heteroatoms"], "fcd": False,
            "valence_guard": False}


def parse_evaluation(d: Any, path: str = "evaluation") -> dict:
    """The checked settings, every default filled in (they all change numbers, so all are recorded)."""
    f = fields(d or {}, path, DEFAULTS)
    out = {"bonds": as_choice(f["bonds"], f"{path}.bonds", METHODS),
           "margins": _margins(f["margins"], f"{path}.margins"),
           "novelty": as_bool(f["novelty"], f"{path}.novelty"),
           "reference_source": as_choice(f["reference_source"], f"{path}.reference_source", ("auto", "qm9", "small")),
           "fcd": as_bool(f["fcd"], f"{path}.fcd"), "valence_guard": as_bool(f["valence_guard"], f"{path}.valence_guard")}
    _check_installed(out, path)
    props = f["properties"]
    if not isinstance(props, list) or any(p not in PROPERTIES for p in props):
        fail(f"{path}.properties", f"expected a list of {', '.join(PROPERTIES)}; got {props!r}")
    targets = {}
    if f["targets"] is not None:
        if not isinstance(f["targets"], Mapping) or not f["targets"]:
            fail(f"{path}.targets", f"expected {{property: {{value, tolerance}}}}; got {f['targets']!r}")
        for name, t in f["targets"].items():
            p = f"{path}.targets.{name}"
            if name not in PROPERTIES:
                fail(p, f"unknown property; known: {', '.join(PROPERTIES)}")
            t = fields(t, p, {"value": None, "tolerance": 0.0})
            if t["value"] is None:
                fail(f"{p}.value", "required field is missing")
            targets[name] = {"value": as_float(t["value"], f"{p}.value"),
                             "tolerance": as_float(t["tolerance"], f"{p}.tolerance", 0.0)}
    out["targets"] = targets
    out["properties"] = list(dict.fromkeys([*props, *targets]))
    return out


def _margins(v: Any, path: str) -> list[float]:
    """Three margins in pm (single, double, triple), each in :data:`~.elements.MARGIN_RANGE`."""
    if not isinstance(v, (list, tuple)):
        fail(path, f"expected a list of numbers (pm added to the single, double, triple lengths), got {v!r}")
    if len(v) != 3:
        fail(path, f"expected 3 numbers (single, double, triple), got {len(v)}")
    return [as_float(x, f"{path}[{i}]", *MARGIN_RANGE) for i, x in enumerate(v)]


def check_reference_source(source: str, path: str) -> None:
    """Refuse ``qm9`` where the full set cannot be read (the install hint; small and auto always work)."""
    if source == "qm9" and not full_available():
        fail(path, f"{QM9_HINT}; or use small (the shipped 3,000 / 1,000-molecule subset) or auto (the full set "
                   "when installed, else the subset, said in bold in summary.md)")


def _check_installed(out: Mapping[str, Any], path: str) -> None:
    """Settings this install cannot honour are refused while the workflow is read, not after sampling."""
    check_reference_source(out["reference_source"], f"{path}.reference_source")
    if out["fcd"] and importlib.util.find_spec("fcd_torch") is None:
        fail(f"{path}.fcd", "the Fréchet ChemNet distance needs fcd_torch: pip install 'molfuse[fcd]'; or fcd: false")
