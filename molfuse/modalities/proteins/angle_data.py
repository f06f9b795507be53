"""Backbone fragments as internal coordinates: the data kind ``protein_angles``.

The same real fragments as ``protein_backbones`` (:mod:`.data`), as angle states
(:mod:`.angles`): rows ``(cos θ_i, sin θ_i, cos τ_i, sin τ_i)`` standardised per channel, on the
:class:`~molfuse.spaces.Chain` space, with the residue count part of each sample.

Windows. ``stride: null`` takes the shipped fragments as they are (64- and 128-residue windows
cut every 16 / 32 residues). A whole-number ``stride`` re-cuts every window of each ``length``
that fits the stretch of a chain piece the shipped fragments cover, every ``stride`` residues:
angles are invariant to rigid motions, so each residue's angles are read from any fragment that
holds its neighbours, and a window's SSE fractions are the mean of its residues' P-SEA codes
(annotated on the shipped fragments; where fragments overlap, a residue keeps the code of the one
it sits deepest in, so a re-cut window's fractions can differ from a shipped fragment's by a few
residues at P-SEA's unreliable ends). Windows of one protein overlap and are not independent
samples (count proteins, not windows); the card records both counts.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np
import torch

from ... import plugins
from .angles import CHANNEL_MEAN, CHANNEL_STD, angle_normalisation, angles_to_state, angle_space, chain_angles
from .data import FIELDS as TRACE_FIELDS
from .data import SSE_COLUMNS, Backbones, lengths_of, load_backbones, population

__all__ = ["angle_data", "piece_windows", "ANGLE_DATA_KIND", "ANGLE_FIELDS"]

ANGLE_FIELDS = {**TRACE_FIELDS, "stride": None}
_SSE_CODE = {1: 0, 2: 1, 0: 2}  # stored sse ints (0 coil, 1 helix, 2 strand) -> SSE_COLUMNS index
_COLUMNS = {"theta": 0.0, "tau": 0.0, "has_theta": False, "has_tau": False, "sse": -1, "depth": -1}


def _piece_tables(data: Backbones) -> dict[int, dict[str, np.ndarray]]:
    """Per chain piece: angles and SSE per residue gathered from its fragments (float64 radians;
    ``has_theta`` / ``has_tau`` where some fragment holds the residue's neighbours; ``sse`` from
    the fragment where the residue is deepest inside, ``depth`` residues from the nearer end)."""
    theta, tau = chain_angles(torch.as_tensor(data.ca, dtype=torch.float64), torch.as_tensor(data.mask))
    theta, tau = theta.numpy(), tau.numpy()
    out: dict[int, dict[str, np.ndarray]] = {}
    for f in range(len(data)):
        p, s, n = int(data.piece[f]), int(data.start[f]), int(data.length[f])
        size = s + n
        t = out.setdefault(p, {k: np.zeros(0) for k in _COLUMNS})
        if len(t["theta"]) < size:
            grow = size - len(t["theta"])
            for k, fill in _COLUMNS.items():
                t[k] = np.concatenate([t[k], np.full(grow, fill)])
        t["theta"][s + 1:s + n - 1] = theta[f, 1:n - 1]
        t["has_theta"][s + 1:s + n - 1] = True
        t["tau"][s + 1:s + n - 2] = tau[f, 1:n - 2]
        t["has_tau"][s + 1:s + n - 2] = True
        # P-SEA is least reliable near a fragment's ends: each residue keeps the code of the
        # fragment in which it sits farthest from both ends
        depth = np.minimum(np.arange(n), n - 1 - np.arange(n))
        better = depth > t["depth"][s:s + n]
        t["sse"][s:s + n] = np.where(better, data.sse[f, :n], t["sse"][s:s + n])
        t["depth"][s:s + n] = np.maximum(depth, t["depth"][s:s + n])
        t["protein"] = np.array([data.protein[f]])
    return out


def piece_windows(data: Backbones, length: int, stride: int) -> dict[str, np.ndarray]:
    """Every window of ``length`` residues, every ``stride`` residues, inside the stretches of the
    chain pieces that ``data``'s fragments cover.

    Returns:
        ``theta``, ``tau`` (n, length) radians (zero where a chain has no such angle),
        ``sse_fraction`` (n, 3) helix / strand / coil, ``protein`` (n,), ``piece`` (n,),
        ``start`` (n,).
    """
    rows: dict[str, list] = {k: [] for k in ("theta", "tau", "sse_fraction", "protein", "piece", "start")}
    for p, t in sorted(_piece_tables(data).items()):
        for w in range(0, len(t["theta"]) - length + 1, stride):
            if not (t["has_theta"][w + 1:w + length - 1].all() and t["has_tau"][w + 1:w + length - 2].all()):
                continue
            codes = t["sse"][w:w + length]
            if (codes < 0).any():
                continue
            th, ta = np.zeros(length), np.zeros(length)
            th[1:length - 1], ta[1:length - 2] = t["theta"][w + 1:w + length - 1], t["tau"][w + 1:w + length - 2]
            rows["theta"].append(th)
            rows["tau"].append(ta)
            frac = np.zeros(3)
            for code, col in _SSE_CODE.items():
                frac[col] = float((codes == code).mean())
            rows["sse_fraction"].append(frac)
            rows["protein"].append(int(t["protein"][0]))
            rows["piece"].append(p)
            rows["start"].append(w)
    if not rows["theta"]:
        return {"theta": np.zeros((0, length)), "tau": np.zeros((0, length)), "sse_fraction": np.zeros((0, 3)),
                "protein": np.zeros(0, int), "piece": np.zeros(0, int), "start": np.zeros(0, int)}
    return {k: np.asarray(v) for k, v in rows.items()}


def _fragments(data: Backbones, lengths: list[int] | None) -> dict[str, np.ndarray]:
    """The shipped fragments as they are, in the :func:`piece_windows` layout (padded to the longest)."""
    if lengths is not None:
        data = data.take(np.flatnonzero(np.isin(data.length, lengths)))
    width = int(data.length.max()) if len(data) else 0
    theta, tau = chain_angles(torch.as_tensor(data.ca[:, :width], dtype=torch.float64),
                              torch.as_tensor(data.mask[:, :width]))
    return {"theta": theta.numpy(), "tau": tau.numpy(), "sse_fraction": data.sse_fraction.astype(np.float64),
            "protein": data.protein, "length": data.length.astype(int)}


def _windows(data: Backbones, lengths: list[int] | None, stride: int | None) -> dict[str, np.ndarray]:
    """Windows of every requested length, padded to the longest, with a ``length`` column."""
    if stride is None:
        return _fragments(data, lengths)
    wanted = lengths if lengths is not None else sorted({int(v) for v in np.unique(data.length)})
    parts = [piece_windows(data, n, stride) for n in wanted]
    width = max(wanted)
    out: dict[str, list] = {"theta": [], "tau": [], "sse_fraction": [], "protein": [], "length": []}
    for n, part in zip(wanted, parts):
        pad = ((0, 0), (0, width - n))
        out["theta"].append(np.pad(part["theta"], pad))
        out["tau"].append(np.pad(part["tau"], pad))
        out["sse_fraction"].append(part["sse_fraction"])
        out["protein"].append(part["protein"])
        out["length"].append(np.full(len(part["theta"]), n))
    return {k: np.concatenate(v) for k, v in out.items()}


def _check_spec(spec: Mapping[str, Any]) -> None:
    unknown = [p for p in spec["properties"] if p not in SSE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(SSE_COLUMNS)}")
    lengths_of(spec["length"])
    for key in ("stride", "pad_to"):
        v = spec[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{key} must be a whole number >= 1 or null; got {v!r}")


def _population_mask(frac: np.ndarray, name: str, where: Mapping[str, Any] | None) -> np.ndarray:
    """Windows whose SSE fractions lie in population ``name``'s ranges and ``where`` (as :func:`.data.population`)."""
    from .data import POPULATIONS

    if name not in POPULATIONS:
        raise ValueError(f"population must be one of {', '.join(POPULATIONS)}; got {name!r}")
    keep = np.ones(len(frac), dtype=bool)
    for key, (lo, hi) in {**POPULATIONS[name], **(where or {})}.items():
        if key not in SSE_COLUMNS:
            raise ValueError(f"unknown SSE columns ['{key}']; known: {', '.join(SSE_COLUMNS)}")
        col = frac[:, SSE_COLUMNS.index(key)]
        keep &= (col >= float(lo)) & (col <= float(hi))
    return keep


def angle_data(spec: dict) -> plugins.TrainingData:
    """Data kind ``protein_angles``: the fields of ``protein_backbones`` (split, length, population,
    where, n, seed, properties, pad_to, source) plus ``stride`` (null: the shipped fragments;
    k: every window of each length every k residues). States are standardised with the fixed
    :data:`.angles.CHANNEL_MEAN` / ``CHANNEL_STD``, recorded in the card's ``normalisation``."""
    spec = {**ANGLE_FIELDS, **spec}
    _check_spec(spec)
    lengths = lengths_of(spec["length"])
    data = load_backbones(spec["source"]).select(spec["split"])
    win = _windows(data, lengths, spec["stride"])
    keep = _population_mask(win["sse_fraction"], spec["population"], spec["where"])
    win = {k: v[keep] for k, v in win.items()}
    total = len(win["length"])
    n = total if spec["n"] is None else int(spec["n"])
    if not 1 <= n <= total:
        raise ValueError(f"n = {n} but the population has {total} windows")
    idx = np.sort(np.random.default_rng(int(spec["seed"])).choice(total, n, replace=False))
    win = {k: v[idx] for k, v in win.items()}
    width = max(int(win["length"].max()), int(spec["pad_to"] or 0))
    theta = torch.zeros(n, width, dtype=torch.float64)
    tau = torch.zeros(n, width, dtype=torch.float64)
    theta[:, :win["theta"].shape[1]] = torch.as_tensor(win["theta"])
    tau[:, :win["tau"].shape[1]] = torch.as_tensor(win["tau"])
    mask = torch.arange(width)[None, :] < torch.as_tensor(win["length"])[:, None]
    x = angles_to_state(theta, tau, mask, CHANNEL_MEAN, CHANNEL_STD).to(torch.float32)
    counts = {int(k): int(v) for k, v in zip(*np.unique(win["length"], return_counts=True))}
    cols = [SSE_COLUMNS.index(p) for p in spec["properties"]]
    cond = torch.as_tensor(win["sse_fraction"][:, cols].astype(np.float32)) if cols else None
    desc = {"kind": "protein_angles", "source": str(spec["source"] or "shipped"), "split": spec["split"],
            "length": spec["length"], "stride": spec["stride"], "pad_to": spec["pad_to"],
            "population": spec["population"], "where": dict(spec["where"] or {}), "population_size": total, "n": n,
            "seed": int(spec["seed"]), "properties": list(spec["properties"]), "node_counts": counts,
            "proteins": int(len(np.unique(win["protein"]))),
            "sse_mean": {c: float(win["sse_fraction"][:, i].mean()) for i, c in enumerate(SSE_COLUMNS)},
            "angles_sha256": hashlib.sha256(np.ascontiguousarray(x.numpy()).tobytes()).hexdigest(),
            "property_mean": None if cond is None else cond.mean(0).tolist(),
            "property_std": None if cond is None else cond.std(0).tolist()}
    return plugins.TrainingData(x, desc, angle_normalisation(), mask=mask, cond=cond,
                                condition="properties" if cond is not None else "none",
                                space=angle_space().config(), node_counts=counts)


ANGLE_DATA_KIND = plugins.DataKind(angle_data, ANGLE_FIELDS)
