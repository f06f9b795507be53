"""QM9 bond graphs as training data: positions, atom types and bond orders in one molecule-graph state.

A molecule of n heavy atoms (implicit hydrogens; C, N, O, F; N = 9 rows) is the state ``x``
(N, F + N·B) on ``MoleculeGraph(node_channels=3 + T, pair_channels=4, centred=3)`` (MATH §6,
pair features): row i holds positions in Å (zero centre of mass over the real atoms), the
one-hot atom type times ``type_scale``, then for each partner j > i the one-hot bond order
(none, single, double, triple: "none" is a channel, so every pair is a one-hot like an atom
type, as in JODO) times ``bond_scale``; only pairs between real atoms in the upper triangle are
state. ``D = 7n − 3 + 4 n (n − 1) / 2``.

Scales (recorded in the card's normalisation; both are data-kind fields):

- ``type_scale`` 0.25, as EDM and the point-cloud kind ``qm9``: types are read late.
- ``bond_scale`` 1.0 (JODO also leaves bond channels unscaled while dividing types by 4): the
  graph leads and the geometry follows. Measured on the shipped test molecules with noise of
  σ/α Å on every channel: at σ/α = 0.3 Å the argmax of a one-hot at scale 1 is right for
  0.98 of pairs, while the distance rule on the equally noisy positions gets 0.86 of pairs'
  bonded-or-not and 0.77 of their orders right; at scale 0.5 the one-hot (0.75) would carry no
  more than the geometry does, at 0.25 (0.50) less, so the bonds would again be inferred from
  the coordinates late, which is what the point-cloud member already does.

:func:`decode` inverts the map (bond orders by argmax of each free pair's channels);
:func:`graph_table` judges decoded samples with RDKit, one row per molecule with its reason.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ... import plugins
from ...spaces import MoleculeGraph
from .data import encode as encode_nodes
from .data import population, qm9_source, resolve_source
from .elements import HEAVY, MARGINS, check_margins
from .graphs import ORDERS, geometry_agrees, graph_molecule, guard_valence
from .properties import PROPERTIES
from .qm9_graphs import bond_graphs

__all__ = ["encode", "decode", "graph_table", "graph_summary", "judge_states", "carries_bonds", "graph_settings",
           "pair_scores",
           "normalisation_for", "space_for", "qm9_graphs_data", "DATA_KIND", "TYPE_SCALE", "BOND_SCALE"]

TYPE_SCALE = 0.25
BOND_SCALE = 1.0


def normalisation_for(type_scale: float = TYPE_SCALE, bond_scale: float = BOND_SCALE) -> dict:
    """The card's normalisation of the graph representation: alphabet, bond orders, scales, units."""
    return {"alphabet": list(HEAVY), "hydrogens": "implicit", "bond_orders": list(ORDERS), "bonds": "kekule",
            "type_scale": float(type_scale), "bond_scale": float(bond_scale), "position_unit": "angstrom",
            "max_atoms": 9}


def space_for(n_types: int = len(HEAVY)) -> MoleculeGraph:
    """The state space: 3 centred positions and ``n_types`` type channels per atom, 4 bond channels per pair."""
    return MoleculeGraph(node_channels=3 + n_types, pair_channels=len(ORDERS), centred=3)


def _check_orders(orders: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``orders`` (n, N, N) as int64 bond orders, or a ValueError naming the first bad entry."""
    o = np.asarray(orders, dtype=np.float64)
    if o.shape != (*mask.shape, mask.shape[1]):
        raise ValueError(f"orders: expected shape {(*mask.shape, mask.shape[1])} (a bond order per pair of atoms); "
                         f"got {o.shape}")
    both = mask[:, :, None] & mask[:, None, :]
    bad = ~(np.isfinite(o) & (o == np.round(o)) & (o >= 0) & (o < len(ORDERS)))
    bad |= (o != 0) & ~both
    bad |= (o != np.swapaxes(o, 1, 2)) | (np.eye(o.shape[1], dtype=bool) & (o != 0))
    if bad.any():
        m, i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"orders[{m}, {i}, {j}] = {o[m, i, j]:g}: expected a bond order 0-{len(ORDERS) - 1} "
                         f"{ORDERS}, symmetric, zero on the diagonal and on padding atoms")
    return o.astype(np.int64)


def encode(types: np.ndarray, positions: np.ndarray, orders: np.ndarray, n_types: int = len(HEAVY),
           type_scale: float = TYPE_SCALE, bond_scale: float = BOND_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded bond graphs -> states (n, N, 3 + T + 4N) float32 on :func:`space_for` and masks (n, N).

    Args:
        types: (n, N) indices into the alphabet of ``n_types`` atom types, -1 = padding.
        positions: (n, N, 3) Å (centred here).
        orders: (n, N, N) bond orders 0-3, symmetric, zero on the diagonal and on padding.

    Raises:
        ValueError: a bad atom type or bond order, or shapes that disagree (named).
    """
    nodes, mask = encode_nodes(types, positions, n_types, type_scale)
    o = _check_orders(orders, mask.numpy())
    pairs = bond_scale * torch.nn.functional.one_hot(torch.as_tensor(o), len(ORDERS)).float()
    space = space_for(n_types)
    return space.project(space.pack(nodes[..., :3], nodes[..., 3:], pairs, mask), mask), mask


def decode(x: Any, mask: Any, normalisation: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States -> (types (n, N), positions (n, N, 3) Å, orders (n, N, N)).

    Types are the argmax of each real atom's type channels (-1 padding, -2 where a channel is not
    finite); orders the argmax of each free pair's bond channels, mirrored (0 on padding and the
    diagonal, -1 where a channel is not finite).

    Raises:
        ValueError: ``x`` or ``mask`` of the wrong shape (named).
    """
    x, mask = np.asarray(x, dtype=np.float64), np.asarray(mask, dtype=bool)
    t, b = len(normalisation["alphabet"]), len(normalisation["bond_orders"])
    if x.ndim != 3 or x.shape[2] != 3 + t + b * x.shape[1]:
        raise ValueError(f"x: expected shape (n, N, 3 + {t} + {b}·N) (positions, one channel per atom type of "
                         f"{list(normalisation['alphabet'])}, {b} bond channels per partner); got {x.shape}")
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask: expected shape {x.shape[:2]} (one flag per atom of x); got {mask.shape}")
    typ = x[..., 3:3 + t]
    types = np.where(np.isfinite(typ).all(-1), np.argmax(typ, -1), -2)
    types = np.where(mask, types, -1)
    n = x.shape[1]
    pairs = x[..., 3 + t:].reshape(*x.shape[:2], n, b)
    upper = np.where(np.isfinite(pairs).all(-1), np.argmax(pairs, -1), -1)
    free = np.triu(np.ones((n, n), dtype=bool), 1) & mask[:, :, None] & mask[:, None, :]
    upper = np.where(free, upper, 0)
    return types, x[..., :3], upper + np.swapaxes(upper, 1, 2)


def _row(symbols: list[str], positions: np.ndarray, orders: np.ndarray, margins) -> tuple[dict, Any]:
    """(row, RDKit molecule or None) of one decoded molecule."""
    bad = np.argwhere(orders < 0)
    if len(bad):
        i, j = (int(k) for k in bad[0])
        return {"valid": False, "reason": f"non-finite bond channels on pair ({i}, {j})", "smiles": "",
                "fragments": 0}, None
    res = graph_molecule(symbols, orders, positions)
    row = {"valid": res.reason == "", "reason": res.reason, "smiles": res.smiles, "fragments": res.fragments}
    if res.reason == "":
        row["geometry_agrees"], row["connectivity_agrees"] = geometry_agrees(symbols, positions, orders, margins)
    return row, res.mol


def graph_table(types: np.ndarray, positions: np.ndarray, orders: np.ndarray, alphabet: Sequence[str] = HEAVY,
                margins: Sequence[float] = MARGINS, scores: np.ndarray | None = None) -> tuple[pd.DataFrame, list]:
    """Per-molecule rows and RDKit molecules (None if invalid) of decoded bond graphs.

    Columns: ``valid``, ``reason`` ("" if valid), ``smiles`` (largest fragment), ``n_atoms``,
    ``fragments``, and for valid molecules ``geometry_agrees`` (the EDM distance rule on the
    positions recovers every bond order) and ``connectivity_agrees`` (it recovers which pairs are
    bonded); NaN for invalid ones. With ``scores`` (the valence guard, beside the unguarded
    columns, which it never changes): ``bonds_lowered`` (bond orders the guard lowered),
    ``valid_guarded``, ``fragments_guarded`` and ``smiles_guarded`` of the guarded molecule
    (:func:`~.graphs.guard_valence`).

    Args:
        types: (n, N) indices into ``alphabet`` (-1 padding); anything else is the row's reason.
        positions: (n, N, 3) Å.
        orders: (n, N, N) bond orders 0-3 (-1: unreadable, the row's reason).
        scores: (n, N, N, 4) each pair's bond channels (:func:`pair_scores`), or None: no guard.

    Raises:
        ValueError: arrays of the wrong shape, margins out of range.
    """
    from rdkit import RDLogger

    types, positions, orders = np.asarray(types, dtype=np.float64), np.asarray(positions), np.asarray(orders)
    if types.ndim != 2 or positions.shape != (*types.shape, 3) or orders.shape != (*types.shape, types.shape[1]):
        raise ValueError(f"graph_table takes types (n, N), positions (n, N, 3) and orders (n, N, N); got "
                         f"{types.shape}, {positions.shape} and {orders.shape}")
    margins = check_margins(margins)
    if scores is not None and np.shape(scores) != (*orders.shape, len(ORDERS)):
        raise ValueError(f"scores: expected {(*orders.shape, len(ORDERS))} (one channel per bond order of each pair); "
                         f"got {np.shape(scores)}")
    rows, mols = [], []
    RDLogger.DisableLog("rdApp.*")  # each failure is a row's reason, not a line on stderr
    try:
        for k in range(len(types)):
            real = np.flatnonzero(types[k] != -1)
            known = np.isin(types[k][real], np.arange(len(alphabet)))
            if not known.all():
                j = int(real[np.flatnonzero(~known)[0]])
                row, mol = {"valid": False, "reason": f"atom type {types[k][j]:g} at position {j} is not an index "
                            f"0..{len(alphabet) - 1} into {tuple(alphabet)}", "smiles": "", "fragments": 0}, None
            else:
                symbols = [alphabet[int(t)] for t in types[k][real]]
                row, mol = _row(symbols, positions[k][real], orders[k][np.ix_(real, real)], margins)
                if scores is not None:
                    row.update(_guarded(symbols, orders[k][np.ix_(real, real)], scores[k][np.ix_(real, real)], row))
            if scores is not None and "valid_guarded" not in row:  # an unknown atom type: nothing to guard
                row.update(bonds_lowered=0, valid_guarded=False, fragments_guarded=0, smiles_guarded="")
            rows.append({"n_atoms": len(real), "geometry_agrees": math.nan, "connectivity_agrees": math.nan, **row})
            mols.append(mol)
    finally:
        RDLogger.EnableLog("rdApp.*")
    table = pd.DataFrame(rows)
    guard = ["bonds_lowered", "valid_guarded", "fragments_guarded", "smiles_guarded"] if scores is not None else []
    return table[["valid", "reason", "smiles", "n_atoms", "fragments", "geometry_agrees", "connectivity_agrees",
                  *guard]], mols


def _guarded(symbols: list[str], orders: np.ndarray, scores: np.ndarray, row: dict) -> dict:
    """The valence guard's columns for one molecule (the unguarded ``row`` reused when nothing is lowered)."""
    if (orders < 0).any():
        return {"bonds_lowered": 0, "valid_guarded": False, "fragments_guarded": 0, "smiles_guarded": ""}
    guarded, lowered = guard_valence(symbols, orders, scores)
    if lowered == 0:
        return {"bonds_lowered": 0, "valid_guarded": row["valid"], "fragments_guarded": row["fragments"],
                "smiles_guarded": row["smiles"]}
    res = graph_molecule(symbols, guarded)
    return {"bonds_lowered": lowered, "valid_guarded": res.reason == "", "fragments_guarded": res.fragments,
            "smiles_guarded": res.smiles}


def pair_scores(x: Any, mask: Any, normalisation: Mapping[str, Any]) -> np.ndarray:
    """Each pair's bond channels (n, N, N, B) of molecule-graph states (as :func:`decode` reads them)."""
    x = np.asarray(x, dtype=np.float64)
    t, b = len(normalisation["alphabet"]), len(normalisation["bond_orders"])
    decode(x, mask, normalisation)  # the shape checks
    return x[..., 3 + t:].reshape(*x.shape[:2], x.shape[1], b)


def graph_summary(table: pd.DataFrame) -> dict:
    """Validity, single-fragment share, and the share of valid molecules whose geometry agrees with their bonds."""
    n, valid = len(table), table[table["valid"].astype(bool)]
    return {"validity": len(valid) / n if n else math.nan,
            "connected": float((table["fragments"] == 1).mean()) if n else math.nan,
            "geometry_agrees": float(valid["geometry_agrees"].astype(float).mean()) if len(valid) else math.nan,
            "connectivity_agrees": float(valid["connectivity_agrees"].astype(float).mean()) if len(valid) else math.nan}


def carries_bonds(normalisation: Mapping[str, Any]) -> bool:
    """Whether a card's normalisation describes molecule-graph states (bond orders in the state),
    whose samples are judged by the bonds they drew rather than by bonds inferred from distances."""
    return "bond_orders" in normalisation


def judge_states(x: Any, mask: Any, normalisation: Mapping[str, Any],
                 margins: Sequence[float] = MARGINS, valence_guard: bool = False) -> tuple[pd.DataFrame, list]:
    """Molecule-graph states (n, N, 3 + T + B·N) and masks (n, N) -> :func:`graph_table` rows and
    RDKit molecules: bonds read from each free pair's channels (argmax), never from distances;
    ``margins`` (pm) only set the distance rule behind ``geometry_agrees``; ``valence_guard`` adds
    the guarded columns beside the unguarded ones."""
    types, positions, orders = decode(x, mask, normalisation)
    scores = pair_scores(x, mask, normalisation) if valence_guard else None
    return graph_table(types, positions, orders, normalisation["alphabet"], margins, scores)


def graph_settings(margins: Sequence[float], normalisation: Mapping[str, Any], n: int,
                   valence_guard: bool = False) -> dict[str, Any]:
    """The settings that change the numbers of molecule-graph samples, to store beside them."""
    return {"bonds": f"from the state: argmax of each free pair's bond channels {list(normalisation['bond_orders'])}",
            "valence_guard": ("beside the unguarded columns (*_guarded): an over-valent atom's least certain bond "
                              "lowered by one until none is over-valent") if valence_guard else "none",
            "geometry_rule": "edm", "margins_pm": list(margins),
            "alphabet": list(normalisation["alphabet"]), "hydrogens": normalisation.get("hydrogens", "implicit"),
            "n": n, "validity": "the molecule built from the state's bonds sanitises in RDKit (an over-valent atom "
                                "fails); SMILES of the largest fragment"}


FIELDS = {"source": "auto", "split": "train", "n": None, "seed": 0, "properties": [], "where": None,
          "type_scale": TYPE_SCALE, "bond_scale": BOND_SCALE}


def _scale(spec: Mapping[str, Any], name: str) -> float:
    value = spec[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < float(value) < math.inf):
        raise ValueError(f"{name} must be a positive number (the one-hot's height in the state); got {value!r}")
    return float(value)


def qm9_graphs_data(spec: dict) -> plugins.TrainingData:
    """Data kind ``qm9_graphs``: QM9 bond graphs (:func:`~.qm9_graphs.bond_graphs`) of a split
    (``source`` as in kind ``qm9``), optionally a population (``where``), ``n`` molecules drawn
    with ``seed`` from the kept ones, and ``properties`` as conditions. The description counts
    the molecules dropped for want of a graph, by reason."""
    scales = {k: _scale(spec, k) for k in ("type_scale", "bond_scale")}
    unknown = [p for p in [*spec["properties"], *(spec["where"] or {})] if p not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(PROPERTIES)}")
    parts = qm9_source(spec["source"])
    if spec["split"] not in parts:
        raise ValueError(f"split must be one of {', '.join(parts)}; got {spec['split']!r}")
    graphs = bond_graphs(parts[spec["split"]])
    kept, props = population(graphs.data, spec["where"], spec["properties"])
    chosen_pop = np.flatnonzero(np.isin(graphs.data.index, kept.index))
    n = len(chosen_pop) if spec["n"] is None else int(spec["n"])
    if n > len(chosen_pop) or n < 1:
        raise ValueError(f"n = {n} but the population has {len(chosen_pop)} molecules with bond graphs")
    pick = np.sort(np.random.default_rng(int(spec["seed"])).choice(len(chosen_pop), n, replace=False))
    chosen = graphs.take(chosen_pop[pick])
    norm = normalisation_for(**scales)
    x, mask = encode(chosen.types, chosen.positions, chosen.orders, len(HEAVY), **scales)
    counts = {int(k): int(v) for k, v in zip(*np.unique(mask.sum(1).numpy(), return_counts=True))}
    cond = None if not spec["properties"] else torch.as_tensor(
        props.iloc[pick][list(spec["properties"])].to_numpy(np.float32).copy())
    desc = {"kind": "qm9_graphs", "source": resolve_source(spec["source"]), "split": spec["split"],
            "hydrogens": "implicit", "n": n, "population": dict(spec["where"] or {}),
            "population_size": len(chosen_pop), "seed": int(spec["seed"]), "properties": list(spec["properties"]),
            "node_counts": counts, "graphs": {"read": graphs.total, "kept": len(graphs), "kept_share": graphs.kept_share,
                                              "dropped": graphs.dropped},
            "qm9_index_sha256": hashlib.sha256(np.ascontiguousarray(chosen.data.index).tobytes()).hexdigest(),
            "property_mean": None if cond is None else cond.mean(0).tolist(),
            "property_std": None if cond is None else cond.std(0).tolist()}
    return plugins.TrainingData(x, desc, norm, mask=mask, cond=cond,
                                condition="properties" if cond is not None else "none",
                                space=space_for().config(), node_counts=counts)


DATA_KIND = plugins.DataKind(qm9_graphs_data, FIELDS)
