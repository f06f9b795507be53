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

__all__ = ["Backbones", "load_backbones", "check_backbones", "encode", "decode", "point_clouds", "population",
           "backbone_data", "DATA_KIND", "NORMALISATION", "ANGSTROM_PER_UNIT", "POPULATIONS", "SHIPPED", "SSE_COLUMNS",
           "lengths_of"]

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
    indices into ``protein_name`` / families; ``start`` (n,) first residue in its chain piece ``piece`` (n,);
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
    piece: np.ndarray
    sse: np.ndarray
    sse_fraction: np.ndarray
    aa: np.ndarray
    protein_name: np.ndarray
    protein_file: np.ndarray
    amino: np.ndarray
    record: dict

    PER_FRAGMENT = ("ca", "mask", "length", "split", "protein", "family", "start", "piece", "sse", "sse_fraction",
                    "aa")

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
    """The fragments of a ``backbones.npz`` (default: the shipped ``data/proteins/backbones.npz``),
    checked as they are read (:func:`check_backbones`); arrays are never unpickled.

    Raises:
        FileNotFoundError: no file at ``path`` (or a folder).
        ValueError: naming the file and the array: one missing, stored as Python objects, of the
            wrong shape, a mask that disagrees with ``length``, non-finite coordinates.
    """
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"{path}: {what}; the shipped backbones are rebuilt with "
                                "python -m molfuse.modalities.proteins.build_data --out data/proteins")
    arrays = load_npz(path, "backbones file", require=(*ARRAYS, "record", "split_names"))  # never unpickled
    record = _record(arrays["record"], path)
    record["splits"] = [str(s) for s in arrays["split_names"]]
    data = Backbones(**{k: arrays[k] for k in ARRAYS}, record=record)
    check_backbones(data, path)
    return data


ARRAYS = tuple(f.name for f in fields(Backbones) if f.name != "record")


def _record(value: np.ndarray, path: Path) -> dict:
    """The build settings stored as a JSON string in ``record``."""
    try:
        record = json.loads(str(value))
    except ValueError as e:
        raise ValueError(f"{path}: 'record' is not the JSON settings record of a build ({e})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: 'record' must be a JSON object; got {type(record).__name__}")
    return record


def _expect_shape(data: Backbones, key: str, shape: tuple[int, ...], what: str, path: Path) -> None:
    got = getattr(data, key).shape
    if got != shape:
        raise ValueError(f"{path}: {key!r} has shape {got}; expected {shape} ({what})")


def check_backbones(data: Backbones, path: str | Path = "backbones") -> None:
    """Raise a ValueError naming ``path`` and the array when ``data`` is not a set of fragments:
    ``ca`` (n, N, 3) finite numbers, ``mask`` (n, N) bool marking ``length`` residues (at least one)
    per fragment, every per-fragment array of n rows (``sse_fraction`` (n, 3); ``sse``, ``aa`` (n, N))."""
    ca = data.ca
    if ca.ndim != 3 or ca.shape[-1] != 3:
        raise ValueError(f"{path}: 'ca' has shape {ca.shape}; expected (fragments, residues, 3) Cα positions in Å")
    if ca.dtype.kind not in "fiu":
        raise ValueError(f"{path}: 'ca' has dtype {ca.dtype}; expected numbers (Cα positions in Å)")
    n, width = ca.shape[:2]
    _expect_shape(data, "mask", (n, width), "one bool per residue", path)
    for key in ("length", "split", "protein", "family", "start"):
        _expect_shape(data, key, (n,), "one per fragment", path)
    _expect_shape(data, "sse_fraction", (n, 3), "helix, strand, coil per fragment", path)
    for key in ("sse", "aa"):
        _expect_shape(data, key, (n, width), "one per residue", path)
    if data.mask.dtype != bool:
        raise ValueError(f"{path}: 'mask' has dtype {data.mask.dtype}; expected bool (True on real residues)")
    _check_masks(data, path)
    _check_finite(ca, path)


def _first(idx: np.ndarray, k: int = 5) -> str:
    return ", ".join(str(int(i)) for i in idx[:k]) + (", ..." if len(idx) > k else "")


def _check_masks(data: Backbones, path: str | Path) -> None:
    """Every fragment has real residues, as many as its ``length`` says."""
    counts = data.mask.sum(1)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise ValueError(f"{path}: 'mask' marks no residue in {len(empty)} of {len(counts)} fragments "
                         f"(fragments {_first(empty)})")
    off = np.flatnonzero(counts != data.length)
    if len(off):
        i = off[0]
        raise ValueError(f"{path}: 'mask' marks {int(counts[i])} residues where 'length' says {int(data.length[i])} "
                         f"in {len(off)} of {len(counts)} fragments (fragments {_first(off)})")


def _check_finite(ca: np.ndarray, path: str | Path) -> None:
    """Every coordinate finite, padding included (padding is zero)."""
    bad = ~np.isfinite(ca).all(-1)
    if bad.any():
        frags = np.flatnonzero(bad.any(1))
        kinds = "/".join(k for k, f in (("NaN", np.isnan), ("inf", np.isinf)) if f(ca).any())
        raise ValueError(f"{path}: 'ca' has {kinds} at {int(bad.sum())} residues of {len(frags)} fragments "
                         f"(fragments {_first(frags)}); coordinates must be finite Å")


def _same_mask(x: np.ndarray, mask: np.ndarray) -> None:
    if x.ndim < 2 or mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be (n, N) = {x.shape[:2]}; got shape {mask.shape}")


def encode(ca: np.ndarray, mask: np.ndarray, angstrom_per_unit: float = ANGSTROM_PER_UNIT
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded Å traces (n, N, 3) and masks (n, N) -> model-space states (n, N, 3) float32, centred
    over the real residues, zero on padding, and the bool masks."""
    ca, mask = np.asarray(ca), np.asarray(mask, dtype=bool)
    if ca.ndim != 3 or ca.shape[2] != 3:
        raise ValueError(f"Cα positions must be (n, N, 3); got shape {ca.shape}")
    _same_mask(ca, mask)
    mask_t = torch.as_tensor(mask)
    x = torch.as_tensor(np.asarray(ca, dtype=np.float32) / np.float32(angstrom_per_unit))
    return PointCloud(3).project(x * mask_t[..., None], mask_t), mask_t


def decode(x: Any, mask: Any, normalisation: Mapping[str, Any] = NORMALISATION) -> tuple[np.ndarray, np.ndarray]:
    """Model-space states -> (Cα positions (n, N, 3) Å, zero on padding; masks (n, N) bool).

    Cα-trace states are scaled back; angle states (``representation: ca_angles``) are rebuilt by
    NeRF (:func:`.angles.decode_angles`)."""
    if normalisation.get("representation") == "ca_angles":
        from .angles import decode_angles

        return decode_angles(x, mask, normalisation)
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    mask = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    _same_mask(x, mask)
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
    if spec["source"] is not None and not isinstance(spec["source"], (str, Path)):
        raise ValueError(f"source must be a path to a backbones .npz or null; got {spec['source']!r}")
    pad = spec["pad_to"]
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 4):
        raise ValueError(f"pad_to must be a residue count >= 4 or null; got {pad!r}")


def _source(source: str | Path | None) -> Backbones:
    """The fragments of ``source`` (None: the shipped file); a missing or malformed file is a
    ValueError that starts ``source <path>`` (the data kind's field)."""
    path = str(SHIPPED if source is None else source)
    try:
        return load_backbones(source)
    except (OSError, ValueError) as e:
        msg = str(e)
        if msg.startswith(f"backbones file {path}"):  # load_npz's own prefix: name the file once
            msg = msg[len("backbones file "):]
        raise ValueError(f"source {msg}" if msg.startswith(path) else f"source {path}: {msg}") from None


def backbone_data(spec: dict) -> plugins.TrainingData:
    """Data kind ``protein_backbones``: one split of the fragments of one length or several
    (``length: 64``, ``[64, 128]`` or ``null`` = all; padded to the longest, or to ``pad_to``
    residues), a population and / or ``where`` ranges, ``n`` fragments drawn with ``seed``, and
    optional SSE-fraction conditions (``properties: [helix, strand]``). The residue count is part
    of each sample: ``node_counts`` is the histogram of the chosen fragments' lengths."""
    spec = {**FIELDS, **spec}
    _check_spec(spec)
    lengths = lengths_of(spec["length"])
    data = _source(spec["source"]).select(spec["split"])
    if lengths is not None:
        data = data.take(np.flatnonzero(np.isin(data.length, lengths)))
    data = population(data, spec["population"], spec["where"])
    if not len(data):
        where = f" where {spec['where']}" if spec["where"] else ""
        raise ValueError(f"no fragment of split {spec['split']!r}, length {spec['length']}, population "
                         f"{spec['population']!r}{where} in source {spec['source'] or SHIPPED}")
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
