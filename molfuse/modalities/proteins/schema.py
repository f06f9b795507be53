"""The backbone evaluator's ``evaluation:`` settings in a workflow: its YAML schema, checked.

::

    evaluation?:
      reference?:                    # the real fragments histograms and Rg are compared with
        {split: train | valid | test = train, population: all | helix_rich | strand_rich = all,
         where: {helix: [lo, hi], strand: [lo, hi], coil: [lo, hi]} = null}
                                     # (always of the same lengths as the samples)
      target_sse?: {helix: [lo, hi], strand: [lo, hi]}   # sse_hit: share of backbones that are
                                     # valid and inside every range (the data kind's `where` syntax)
      thresholds?: {bond: 3.8, bond_tol: 0.2, break: 4.2, clash: 3.0, clash_separation: 3,
                    angle_lo: 70, angle_hi: 160}         # geometry.THRESHOLDS overrides (Å, degrees)
      formats?: [pdb, cif]           # sample files: samples/<method>/<id>.pdb and .cif
      pictures?: {traces: 4, methods: 12}   # samples per method and methods drawn in traces.png
      by_length?: true               # with several lengths: validity_L<n>, helix_L<n>, ... columns
      <hook>?: ...                   # a registered metric hook's key and settings (.hooks)
                                     # shipped (null = off): diversity (.diversity_hook),
                                     # designability_proxy and designability (.designability_hook)

Every default is filled in and recorded in ``config.yaml`` (they all change numbers).
"""

from __future__ import annotations

from typing import Any, Mapping

from ...base.checks import as_bool, as_choice, as_float, as_int, fail, fields
from .data import POPULATIONS, SSE_COLUMNS
from .geometry import THRESHOLDS
from .hooks import metric_hooks

__all__ = ["parse_evaluation", "DEFAULTS", "FORMATS", "SPLITS"]

FORMATS = ("pdb", "cif")
SPLITS = ("train", "valid", "test")
DEFAULTS = {"reference": None, "target_sse": None, "thresholds": None, "formats": list(FORMATS), "pictures": None,
            "by_length": True}
REFERENCE = {"split": "train", "population": "all", "where": None}
PICTURES = {"traces": 4, "methods": 12}


def parse_ranges(d: Any, path: str) -> dict[str, list[float]]:
    """``{helix|strand|coil: [lo, hi]}`` with 0 <= lo <= hi <= 1 (SSE fractions)."""
    if not isinstance(d, Mapping) or not d:
        fail(path, f"expected {{helix|strand|coil: [lo, hi]}}; got {d!r}")
    out = {}
    for key, r in d.items():
        p = f"{path}.{key}"
        if key not in SSE_COLUMNS:
            fail(p, f"unknown SSE fraction; known: {', '.join(SSE_COLUMNS)}")
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            fail(p, f"expected [lo, hi]; got {r!r}")
        lo, hi = as_float(r[0], f"{p}[0]", 0.0, 1.0), as_float(r[1], f"{p}[1]", 0.0, 1.0)
        if lo > hi:
            fail(p, f"lo must not exceed hi; got [{lo}, {hi}]")
        out[str(key)] = [lo, hi]
    return out


def _reference(d: Any, path: str) -> dict:
    f = fields(d or {}, path, REFERENCE)
    return {"split": as_choice(f["split"], f"{path}.split", SPLITS),
            "population": as_choice(f["population"], f"{path}.population", tuple(POPULATIONS)),
            "where": None if f["where"] is None else parse_ranges(f["where"], f"{path}.where")}


def _thresholds(d: Any, path: str) -> dict:
    f = fields(d or {}, path, THRESHOLDS)
    out = {k: as_float(v, f"{path}.{k}", 0.0) for k, v in f.items()}
    out["clash_separation"] = as_int(f["clash_separation"], f"{path}.clash_separation", 1)
    if out["angle_lo"] >= out["angle_hi"]:
        fail(f"{path}.angle_lo", f"must be below angle_hi ({out['angle_hi']}); got {out['angle_lo']}")
    return out


def _formats(v: Any, path: str) -> list[str]:
    if not isinstance(v, list) or any(f not in FORMATS for f in v) or len(set(v)) < len(v):
        fail(path, f"expected a list of distinct formats among {', '.join(FORMATS)}; got {v!r}")
    return list(v)


def _pictures(d: Any, path: str) -> dict:
    f = fields(d or {}, path, PICTURES)
    return {"traces": as_int(f["traces"], f"{path}.traces", 0), "methods": as_int(f["methods"], f"{path}.methods", 1)}


def parse_evaluation(d: Any, path: str = "evaluation") -> dict:
    """The checked settings, every default filled in; registered metric hooks' keys included."""
    hooks = metric_hooks()
    shadowing = [h.key for h in hooks if h.key in DEFAULTS]
    if shadowing:
        raise ValueError(f"metric hook key(s) {shadowing} are built-in settings of the backbone evaluator")
    f = fields(d or {}, path, {**DEFAULTS, **{h.key: h.default for h in hooks}})
    out = {"reference": _reference(f["reference"], f"{path}.reference"),
           "target_sse": None if f["target_sse"] is None else parse_ranges(f["target_sse"], f"{path}.target_sse"),
           "thresholds": _thresholds(f["thresholds"], f"{path}.thresholds"),
           "formats": _formats(f["formats"], f"{path}.formats"),
           "pictures": _pictures(f["pictures"], f"{path}.pictures"),
           "by_length": as_bool(f["by_length"], f"{path}.by_length")}
    for h in hooks:  # null is off; any other value (the default included) is the hook's to check
        out[h.key] = None if f[h.key] is None else h.parse(f[h.key], f"{path}.{h.key}")
    return out
