"""The shipped backbone fragments as training data: padded, centred Cα point clouds in model space.

A fragment of L residues is the state ``x`` (N, 3) with N the longest fragment length (128):
rows 0..L−1 are Cα positions in model units, ``Å / angstrom_per_unit`` (10 Å per unit, so
positions are in nm), centred over the real residues; padding rows are zero and the mask marks
real residues (MATH §6: ``D = 3 (L − 1)``). :data:`NORMALISATION` records this map (the card's
``normalisation``), :func:`decode` inverts it.

Populations by P-SEA secondary structure (fractions measured on each fragment's Cα trace,
:data:`POPULATIONS`): ``helix_rich`` (helix ≥ 0.5) and ``strand_rich`` (strand ≥ 0.25); on the
shipped set of 64-residue fragments the helix share has median 0.33 (upper quartile 0.48) and
the strand share median 0.11 (upper quartile 0.22), so these keep about the top quarter and the
top sixth. ``where`` takes any other ranges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ... import plugins
from ...base.io import load_npz
from ...base.provenance import REPO_ROOT
from ...spaces import PointCloud

__all__ = ["Backbones", "load_backbones", "encode", "decode", "point_clouds", "population", "backbone_data",
           "DATA_KIND", "NORMALISATION", "ANGSTROM_PER_UNIT", "POPULATIONS", "SHIPPED", "SSE_COLUMNS", "lengths_of"]

SHIPPED = REPO_ROOT / "data" / "proteins" / "backbones.npz"
ANGSTROM_PER_UNIT = 10.0
NORMALISATION = {"representation": "ca_trace", "position_unit": "angstrom", "angstrom_per_unit": ANGSTROM_PER_UNIT,
                 "centred": True}
SSE_COLUMNS = ("helix", "strand", "coil")
POPULATIONS: dict[str, dict[str, tuple[float, float]]] = {
    "all": {}, "helix_rich": {"helix": (0.5, 1.0)}, "strand_rich": {"strand": (0.25, 1.0)}}
FIELDS = {"source": None, "split": "train", "length": 64, "population": "all", "where": None, "n": None, "seed": 0,
          "properties": [], "pad_to": None}


@dataclass
class Backbones:
    """Fragments as padded arrays (a view of ``backbones.npz``).

    Attributes: ``ca`` (n, N, 3) float32 Å, centred per fragment; ``mask`` (n, N) bool;
    ``length`` (n,); ``split`` (n,) 0 train, 1 valid, 2 test; ``protein`` / ``family`` (n,)
    indices into ``protein_name`` / families; ``start`` (n,) first residue in its piece;
    ``sse`` (n, N) int8 0 coil, 1 helix, 2 strand, −1 padding; ``sse_fraction`` (n, 3)
    helix, strand, coil; ``aa`` (n, N) int8 indices into ``amino`` (−1 padding);
    ``protein_name`` / ``protein_file`` (P,) ``source:path:chain`` / ``source:path``.
    """

    ca: np.ndarray
    mask: np.ndarray
    length: np.ndarray
    split: np.ndarray
    protein: np.ndarray
    family: np.ndarray
    start: np.ndarray
    sse: np.ndarray
    sse_fraction: np.ndarray
    aa: np.ndarray
    protein_name: np.ndarray
    protein_file: np.ndarray
    amino: np.ndarray
    record: dict

    PER_FRAGMENT = ("ca", "mask", "length", "split", "protein", "family", "start", "sse", "sse_fraction", "aa")

    def __len__(self) -> int:
        return len(self.length)

    def take(self, idx: np.ndarray) -> "Backbones":
        """The fragments ``idx`` (index or bool array); per-protein tables are kept whole."""
        return Backbones(**{f.name: getattr(self, f.name)[idx] if f.name in self.PER_FRAGMENT else getattr(self, f.name)
                            for f in fields(self)})

    def select(self, split: str | None = None, length: int | None = None) -> "Backbones":
        """Fragments of one split (``train``/``valid``/``test``) and / or one length."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            names = self.record.get("splits", ["train", "valid", "test"])
            if split not in names:
                raise ValueError(f"split must be one of {names}; got {split!r}")
            keep &= self.split == names.index(split)
        if length is not None:
            keep &= self.length == int(length)
        return self.take(np.flatnonzero(keep))

    def traces(self) -> list[np.ndarray]:
        """The fragments as a list of (L_i, 3) Å arrays."""
        return [self.ca[i][self.mask[i]] for i in range(len(self))]


def load_backbones(path: str | Path | None = None) -> Backbones:
    """The fragments of a ``backbones.npz`` (default: the shipped ``data/proteins/backbones.npz``)."""
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no backbones file; rebuild it with "
                                "python -m molfuse.modalities.proteins.build_data --out data/proteins")
    z = load_npz(path, "backbones file")  # arrays only, never unpickled (DataError naming the file)
    record = json.loads(str(z["record"]))
    record["splits"] = [str(s) for s in z["split_names"]]
    keys = [f.name for f in fields(Backbones) if f.name != "record"]
    return Backbones(**{k: z[k] for k in keys}, record=record)


def encode(ca: np.ndarray, mask: np.ndarray, angstrom_per_unit: float = ANGSTROM_PER_UNIT
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded Å traces (n, N, 3) and masks (n, N) -> model-space states (n, N, 3) float32, centred
    over the real residues, zero on padding, and the bool masks."""
    mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
    x = torch.as_tensor(np.asarray(ca, dtype=np.float32) / np.float32(angstrom_per_unit))
    return PointCloud(3).project(x * mask_t[..., None], mask_t), mask_t


def decode(x: Any, mask: Any, normalisation: Mapping[str, Any] = NORMALISATION) -> tuple[np.ndarray, np.ndarray]:
    """Model-space states -> (Cα positions (n, N, 3) Å, zero on padding; masks (n, N) bool)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    mask = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    return x * float(normalisation["angstrom_per_unit"]) * mask[..., None], mask


def point_clouds(data: Backbones, angstrom_per_unit: float = ANGSTROM_PER_UNIT,
                 trim: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (n, N, 3) centred model-space states and ``mask`` (n, N) of some fragments (:func:`encode`);
    ``trim`` cuts the padding to the longest fragment among them (N = 64 for 64-residue fragments)."""
    width = int(data.length.max()) if trim and len(data) else data.ca.shape[1]
    return encode(data.ca[:, :width], data.mask[:, :width], angstrom_per_unit)


def population(data: Backbones, name: str = "all",
               where: Mapping[str, Sequence[float]] | None = None) -> Backbones:
    """The fragments whose SSE fractions lie in the ranges of population ``name`` and of ``where``
    (``{"helix": [lo, hi], ...}``, inclusive; keys among helix, strand, coil)."""
    if name not in POPULATIONS:
        raise ValueError(f"population must be one of {', '.join(POPULATIONS)}; got {name!r}")
    ranges = {**POPULATIONS[name], **(where or {})}
    unknown = [k for k in ranges if k not in SSE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown SSE columns {unknown}; known: {', '.join(SSE_COLUMNS)}")
    keep = np.ones(len(data), dtype=bool)
    for key, (lo, hi) in ranges.items():
        col = data.sse_fraction[:, SSE_COLUMNS.index(key)]
        keep &= (col >= float(lo)) & (col <= float(hi))
    return data.take(np.flatnonzero(keep))


def lengths_of(value: Any) -> list[int] | None:
    """``length`` of the data kind as a sorted list of residue counts (None: every length).

    Raises:
        ValueError: not an integer >= 4, a non-empty list of them, or null.
    """
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 4 for v in values):
        raise ValueError(f"length must be a residue count >= 4, a list of them or null; got {value!r}")
    return sorted({int(v) for v in values})


def _check_spec(spec: Mapping[str, Any]) -> None:
    unknown = [p for p in spec["properties"] if p not in SSE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(SSE_COLUMNS)}")
    lengths_of(spec["length"])
    pad = spec["pad_to"]
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 4):
        raise ValueError(f"pad_to must be a residue count >= 4 or null; got {pad!r}")


def backbone_data(spec: dict) -> plugins.TrainingData:
    """Data kind ``protein_backbones``: one split of the fragments of one length or several
    (``length: 64``, ``[64, 128]`` or ``null`` = all; padded to the longest, or to ``pad_to``
    residues), a population and / or ``where`` ranges, ``n`` fragments drawn with ``seed``, and
    optional SSE-fraction conditions (``properties: [helix, strand]``). The residue count is part
    of each sample: ``node_counts`` is the histogram of the chosen fragments' lengths."""
    spec = {**FIELDS, **spec}
    _check_spec(spec)
    lengths = lengths_of(spec["length"])
    data = load_backbones(spec["source"]).select(spec["split"])
    if lengths is not None:
        data = data.take(np.flatnonzero(np.isin(data.length, lengths)))
    data = population(data, spec["population"], spec["where"])
    n = len(data) if spec["n"] is None else int(spec["n"])
    if not 1 <= n <= len(data):
        raise ValueError(f"n = {n} but the population has {len(data)} fragments")
    idx = np.sort(np.random.default_rng(int(spec["seed"])).choice(len(data), n, replace=False))
    chosen = data.take(idx)
    x, mask = point_clouds(chosen)
    if spec["pad_to"] is not None:
        x, mask = _padded(x, mask, int(spec["pad_to"]))
    counts = {int(k): int(v) for k, v in zip(*np.unique(chosen.length, return_counts=True))}
    cols = [SSE_COLUMNS.index(p) for p in spec["properties"]]
    cond = torch.as_tensor(chosen.sse_fraction[:, cols].copy()) if cols else None
    desc = {"kind": "protein_backbones", "source": str(spec["source"] or "shipped"), "split": spec["split"],
            "length": spec["length"], "pad_to": spec["pad_to"], "population": spec["population"],
            "where": dict(spec["where"] or {}),
            "population_size": len(data), "n": n, "seed": int(spec["seed"]), "properties": list(spec["properties"]),
            "node_counts": counts, "proteins": int(len(np.unique(chosen.protein))),
            "fragment_sha256": hashlib.sha256(np.ascontiguousarray(chosen.ca).tobytes()).hexdigest(),
            "property_mean": None if cond is None else cond.mean(0).tolist(),
            "property_std": None if cond is None else cond.std(0).tolist()}
    return plugins.TrainingData(x, desc, dict(NORMALISATION), mask=mask, cond=cond,
                                condition="properties" if cond is not None else "none",
                                space={"kind": "point_cloud", "centred": 3}, node_counts=counts)


def _padded(x: torch.Tensor, mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States (n, N, 3) and masks (n, N) zero-padded to ``width`` residues (``width >= N``)."""
    if width < x.shape[1]:
        raise ValueError(f"pad_to = {width} is shorter than the longest chosen fragment ({x.shape[1]} residues)")
    extra = width - x.shape[1]
    return (torch.nn.functional.pad(x, (0, 0, 0, extra)),
            torch.nn.functional.pad(mask, (0, extra), value=False))


DATA_KIND = plugins.DataKind(backbone_data, FIELDS)
