"""QM9 molecules as training data: padded, centred point clouds of positions and scaled one-hot types.

A molecule of n atoms is the state ``x`` (N, 3 + T): channels 0:3 are positions in Å
(zero centre of mass over the real atoms), channels 3: the one-hot atom type times
``type_scale`` (0.25, as in EDM); padding rows are zero and the node mask marks real atoms
(MATH §6: ``D = n (3 + T) − 3``). ``hydrogens: implicit`` (default; heavy atoms C, N, O, F,
N = 9) or ``explicit`` (H, C, N, O, F, N = 29: the EDM protocol, for GPUs). The normalisation
entry records this map, :func:`decode` inverts it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ... import plugins
from ...spaces import PointCloud
from .elements import HEAVY, WITH_H
from .properties import PROPERTIES, compute_properties
from .qm9 import QM9, full_available, load_qm9, load_small, split

__all__ = ["encode", "decode", "qm9_data", "qm9_source", "resolve_source", "DATA_KIND", "TYPE_SCALE", "normalisation_for",
           "population"]

TYPE_SCALE = 0.25
FIELDS = {"source": "auto", "split": "train", "hydrogens": "implicit", "n": None, "seed": 0, "properties": [],
          "where": None}


def normalisation_for(hydrogens: str) -> dict:
    """The card's normalisation of a representation: alphabet, type scale, units."""
    alphabet = HEAVY if hydrogens == "implicit" else WITH_H
    return {"alphabet": list(alphabet), "hydrogens": hydrogens, "type_scale": TYPE_SCALE, "position_unit": "angstrom",
            "max_atoms": 9 if hydrogens == "implicit" else 29}


def encode(types: np.ndarray, positions: np.ndarray, n_types: int,
           type_scale: float = TYPE_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded atoms -> model-space states (n, N, 3 + T) float32 (centred) and masks (n, N).

    Args:
        types: (n, N) indices into the alphabet of ``n_types`` atom types, -1 = padding.
        positions: (n, N, 3) Å.

    Raises:
        ValueError: an atom type that is not -1 or a whole number in 0..n_types - 1 (named).
    """
    t = np.asarray(types, dtype=np.float64)
    bad = ~(np.isfinite(t) & (t == np.round(t)) & (t >= -1) & (t < n_types))
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        raise ValueError(f"types: atom type {t[tuple(where)]:g} at {where} is not -1 (padding) or an index "
                         f"0..{n_types - 1}")
    mask = torch.as_tensor(t >= 0)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(np.clip(t, 0, None), dtype=torch.long), n_types)
    x = torch.cat([torch.as_tensor(positions, dtype=torch.float32), type_scale * onehot.float()], -1)
    return PointCloud(3).project(x, mask), mask


def decode(x: np.ndarray, mask: np.ndarray, normalisation: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Model-space states -> (types (n, N) indices into the alphabet, -1 padding; positions (n, N, 3) Å).

    Args:
        x: (n, N, 3 + T) states (T = the alphabet's size).
        mask: (n, N) real atoms.

    Raises:
        ValueError: ``x`` or ``mask`` of the wrong shape (named).
    """
    x, mask = np.asarray(x), np.asarray(mask, dtype=bool)
    n_types = len(normalisation["alphabet"])
    if x.ndim != 3 or x.shape[-1] != 3 + n_types:
        raise ValueError(f"x: expected shape (n, N, 3 + {n_types}) (positions, then one channel per atom type of "
                         f"{list(normalisation['alphabet'])}); got {x.shape}")
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask: expected shape {x.shape[:2]} (one flag per atom of x); got {mask.shape}")
    types = np.where(mask, np.argmax(x[..., 3:], axis=-1), -1)
    return types, x[..., :3]


def resolve_source(name: str) -> str:
    """What ``source`` reads here: ``qm9`` (the full set) or ``small`` (the shipped subset);
    ``auto`` is the full set when it can be read (:func:`~.qm9.full_available`), else the subset."""
    if name not in ("auto", "qm9", "small"):
        raise ValueError(f"source must be auto, qm9 or small; got {name!r}")
    return name if name != "auto" else ("qm9" if full_available() else "small")


def qm9_source(name: str) -> dict[str, QM9]:
    """The parts of ``source`` ``name``: ``{train, test}`` of the subset, ``{train, valid, test}`` of the full set."""
    if resolve_source(name) == "small":
        return load_small()
    full = load_qm9()
    return {k: full.take(v) for k, v in split(len(full)).items()}


def population(data: QM9, where: Mapping[str, Sequence[float]] | None, names: Sequence[str]) -> tuple[QM9, Any]:
    """The molecules whose RDKit properties lie in ``where`` (``{prop: [lo, hi]}``, inclusive),
    and their property table (the ``names`` and the filtered properties)."""
    from .io import parse_smiles

    wanted = list(dict.fromkeys([*names, *(where or {})]))
    if not wanted:
        return data, None
    mols, _ = parse_smiles(list(data.smiles))
    props = compute_properties(mols, wanted)
    keep = np.ones(len(data), dtype=bool)
    for prop, (lo, hi) in (where or {}).items():
        keep &= props[prop].between(float(lo), float(hi)).to_numpy()
    keep &= props.notna().all(axis=1).to_numpy()
    return data.take(np.flatnonzero(keep)), props[keep].reset_index(drop=True)


def qm9_data(spec: dict) -> plugins.TrainingData:
    """Data kind ``qm9``: a split of QM9 (``source: auto`` = the full set when qm9pack is installed,
    else the shipped subset), optionally a population (``where: {rings: [1, 9]}``), ``n``
    molecules drawn with ``seed``, and ``properties`` (RDKit, :mod:`.properties`) as conditions."""
    hydro = spec["hydrogens"]
    if hydro not in ("implicit", "explicit"):
        raise ValueError(f"hydrogens must be implicit or explicit; got {hydro!r}")
    unknown = [p for p in [*spec["properties"], *(spec["where"] or {})] if p not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(PROPERTIES)}")
    data = qm9_source(spec["source"])[spec["split"]]
    data, props = population(data, spec["where"], spec["properties"])
    rng = np.random.default_rng(int(spec["seed"]))
    n = len(data) if spec["n"] is None else int(spec["n"])
    if n > len(data) or n < 1:
        raise ValueError(f"n = {n} but the population has {len(data)} molecules")
    idx = np.sort(rng.choice(len(data), n, replace=False))
    chosen = data.take(idx)
    norm = normalisation_for(hydro)
    types, pos = (chosen.heavy()[:2]) if hydro == "implicit" else (chosen.types, chosen.positions)
    x, mask = encode(types, pos, len(norm["alphabet"]))
    counts = {int(k): int(v) for k, v in zip(*np.unique(mask.sum(1).numpy(), return_counts=True))}
    cond = None if not spec["properties"] else torch.as_tensor(
        props.iloc[idx][list(spec["properties"])].to_numpy(np.float32).copy())
    desc = {"kind": "qm9", "source": resolve_source(spec["source"]), "split": spec["split"], "hydrogens": hydro, "n": n,
            "population": dict(spec["where"] or {}), "population_size": len(data), "seed": int(spec["seed"]),
            "properties": list(spec["properties"]), "node_counts": counts,
            "qm9_index_sha256": hashlib.sha256(np.ascontiguousarray(chosen.index).tobytes()).hexdigest(),
            "property_mean": None if cond is None else cond.mean(0).tolist(),
            "property_std": None if cond is None else cond.std(0).tolist()}
    return plugins.TrainingData(x, desc, norm, mask=mask, cond=cond,
                                condition="properties" if cond is not None else "none",
                                space={"kind": "point_cloud", "centred": 3}, node_counts=counts)


DATA_KIND = plugins.DataKind(qm9_data, FIELDS)
