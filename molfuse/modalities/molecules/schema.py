"""The molecule evaluator's ``evaluation:`` settings in a workflow: its YAML schema, checked.

::

    evaluation?:
      bonds?: edm | rdkit = edm          # bond inference (rdkit: DetermineBonds, explicit H only)
      margins?: [10, 5, 3]               # pm added to single / double / triple lengths (EDM)
      novelty?: true                     # against the training split's SMILES (of `reference_source`)
      reference_source?: auto | qm9 | small = auto   # real molecules: novelty, FCD, property plots
      targets?: {rings: {value: 2, tolerance: 0}, logp: {value: 1.5, tolerance: 0.5}}
                                         # property hit rates (RDKit properties, exact)
      properties?: [logp, qed, rings, heteroatoms]   # computed per molecule and plotted
      fcd?: false                        # Fréchet ChemNet distance to the test split (needs fcd_torch)
"""

from __future__ import annotations

from typing import Any, Mapping

from ...base.checks import as_bool, as_choice, as_float, as_floats, fail, fields
from .bonds import METHODS
from .elements import MARGINS
from .properties import PROPERTIES

__all__ = ["parse_evaluation", "DEFAULTS"]

DEFAULTS = {"bonds": "edm", "margins": list(MARGINS), "novelty": True, "reference_source": "auto", "targets": None,
            "properties": ["logp", "qed", "rings", "heteroatoms"], "fcd": False}


def parse_evaluation(d: Any, path: str = "evaluation") -> dict:
    """The checked settings, every default filled in (they all change numbers, so all are recorded)."""
    f = fields(d or {}, path, DEFAULTS)
    out = {"bonds": as_choice(f["bonds"], f"{path}.bonds", METHODS),
           "margins": as_floats(f["margins"], f"{path}.margins", 3),
           "novelty": as_bool(f["novelty"], f"{path}.novelty"),
           "reference_source": as_choice(f["reference_source"], f"{path}.reference_source", ("auto", "qm9", "small")),
           "fcd": as_bool(f["fcd"], f"{path}.fcd")}
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
