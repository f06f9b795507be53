"""Small molecules (QM9 chemistry: H, C, N, O, F): 3-D equivariant score models, fused and judged.

``register()`` adds modality ``molecules``: architectures ``molecule_e3nn`` (:mod:`.net`, an
E(3)-equivariant e3nn network over positions and types) and ``molecule_graph_egnn``
(:mod:`.graph_net`, an EGNN over positions, types and bond channels), data kind ``qm9`` (:mod:`.data`:
padded, centred atoms with implicit or explicit hydrogens, optional RDKit property
conditions), data kind ``qm9_graphs`` (:mod:`.graph_data`: heavy atoms with Kekulé bond
orders on atom pairs in the state, on a molecule-graph space), the evaluator (:mod:`.evaluate`: validity, uniqueness, novelty, stability,
diversity, property hit rates, FCD; its ``evaluation:`` schema in :mod:`.schema`), the report
``reference`` (real test molecules scored alike, beside the EDM paper's rows), the
``.sdf`` / ``.smi`` / ``.png`` sample writers, and ``set_distance`` (:mod:`.fidelity`: property
Wasserstein-1 distances between two methods' molecules, for the campaign's ``fidelity``
report). Data: QM9 from the ``qm9pack`` wheel, or the shipped subset
``data/molecules/qm9_small.npz`` (:mod:`.qm9`). Bond inference and its check on real
molecules: :mod:`.bonds`, :mod:`.validation`; bond graphs of QM9 and molecules built from bonds:
:mod:`.qm9_graphs`, :mod:`.graphs`.
Needs ``pip install 'molfuse[molecules]'`` (rdkit, e3nn, safetensors).
"""

from __future__ import annotations

import importlib.util as _ilu
from typing import Any, Mapping

REQUIRES = ("rdkit", "e3nn", "safetensors")
EXTRA = "molecules"
_missing = [m for m in REQUIRES if _ilu.find_spec(m) is None]
if _missing:
    raise ImportError(f"molfuse.modalities.molecules needs {', '.join(_missing)}: pip install 'molfuse[{EXTRA}]'")

from ... import plugins  # noqa: E402
from ...errors import CheckpointError  # noqa: E402
from .bonds import bond_orders, stability, to_molecule  # noqa: E402
from .data import DATA_KIND, decode, encode, normalisation_for  # noqa: E402
from .graph_data import DATA_KIND as GRAPH_DATA_KIND  # noqa: E402
from .graph_data import graph_summary, graph_table  # noqa: E402
from .graphs import geometry_agrees, graph_molecule  # noqa: E402
from .qm9_graphs import bond_graphs  # noqa: E402
from .elements import HEAVY, WITH_H  # noqa: E402
from .evaluate import EVALUATOR, write_grid, write_sdf_samples, write_smiles_samples  # noqa: E402
from .files import FILES, judge_file  # noqa: E402
from .io import parse_smiles, read_sdf, read_smiles, write_sdf, write_smiles  # noqa: E402
from .metrics import fcd, internal_diversity, molecule_table, summary  # noqa: E402
from .properties import PROPERTIES, compute_properties  # noqa: E402
from .qm9 import QM9, load_qm9, load_small, split  # noqa: E402
from .reports import REFERENCE, reference_metrics  # noqa: E402
from .fidelity import set_distance  # noqa: E402

__all__ = ["MODALITY", "register", "bond_orders", "stability", "to_molecule", "decode", "encode",
           "normalisation_for", "graph_table", "graph_summary", "geometry_agrees", "graph_molecule", "bond_graphs",
           "HEAVY", "WITH_H", "parse_smiles", "read_sdf", "read_smiles", "write_sdf", "write_smiles", "fcd", "internal_diversity", "molecule_table", "summary", "PROPERTIES",
           "compute_properties", "QM9", "load_qm9", "load_small", "split", "reference_metrics", "set_distance", "judge_file"]


def _net(**config: Any):
    """Architecture ``molecule_e3nn`` (imported on first use)."""
    from .net import MoleculeScoreNet

    return MoleculeScoreNet(**config)


def _graph_net(**config: Any):
    """Architecture ``molecule_graph_egnn`` (:mod:`.graph_net`, imported on first use)."""
    from .graph_net import GraphScoreNet

    return GraphScoreNet(**config)


def _check_graph_card(card: Mapping[str, Any]) -> None:
    """Bond-graph cards (kind ``qm9_graphs``): normalisation {alphabet, bond_orders, type_scale,
    bond_scale}, space MoleculeGraph(3 + T, B), shape (N, 3 + T + B·N)."""
    norm, space = card["normalisation"], card["space"]
    scales = [norm.get(k) for k in ("type_scale", "bond_scale")]
    if not isinstance(norm.get("alphabet"), list) or not isinstance(norm.get("bond_orders"), list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scales):
        raise CheckpointError(f"a molecule-graph card needs normalisation {{alphabet, bond_orders, type_scale, "
                              f"bond_scale}}; got {dict(norm)}")
    t, b = len(norm["alphabet"]), len(norm["bond_orders"])
    if space.get("node_channels") != 3 + t or space.get("pair_channels") != b:
        raise CheckpointError(f"space {dict(space)} does not fit 3 positions + {t} types per atom and {b} bond "
                              f"orders per pair")
    n = card["shape"][0] if len(card["shape"]) == 2 else None
    if n is None or list(card["shape"]) != [n, 3 + t + b * n]:
        raise CheckpointError(f"shape {card['shape']} does not fit (N, 3 + {t} + {b}·N): positions, types, then "
                              f"{b} bond channels per partner")
    if isinstance(norm.get("max_atoms"), int) and n > norm["max_atoms"]:
        raise CheckpointError(f"shape {card['shape']}: {n} atoms per molecule, but the normalisation's max_atoms is "
                              f"{norm['max_atoms']}")


def _check_card(card: Mapping[str, Any]) -> None:
    """Molecule cards: point-cloud space, normalisation {alphabet, hydrogens, type_scale}, shape (N, 3 + T);
    or a molecule-graph space (:func:`_check_graph_card`)."""
    norm = card["normalisation"]
    if card.get("space", {}).get("kind") == "molecule_graph":
        return _check_graph_card(card)
    if card.get("space", {}).get("kind") != "point_cloud":
        raise CheckpointError(f"a molecules card lives on a point_cloud or molecule_graph space; got "
                              f"{card.get('space')}")
    if not isinstance(norm.get("alphabet"), list) or norm.get("hydrogens") not in ("implicit", "explicit") \
            or not isinstance(norm.get("type_scale"), (int, float)):
        raise CheckpointError(f"a molecules card needs normalisation {{alphabet, hydrogens, type_scale}}; got {dict(norm)}")
    if list(card["shape"])[1:] != [3 + len(norm["alphabet"])]:
        raise CheckpointError(f"shape {card['shape']} does not fit 3 positions + {len(norm['alphabet'])} types")
    if isinstance(norm.get("max_atoms"), int) and card["shape"][0] > norm["max_atoms"]:
        raise CheckpointError(f"shape {card['shape']}: {card['shape'][0]} atoms per molecule, but the "
                              f"normalisation's max_atoms is {norm['max_atoms']}")


MODALITY = plugins.Modality(
    name="molecules", requires=REQUIRES, extra=EXTRA,
    description="small molecules in 3-D (QM9 chemistry), judged by RDKit",
    architectures={"molecule_e3nn": _net, "molecule_graph_egnn": _graph_net},
    data_kinds={"qm9": DATA_KIND, "qm9_graphs": GRAPH_DATA_KIND}, evaluator=EVALUATOR,
    reports={"reference": REFERENCE},
    writers={"sdf": write_sdf_samples, "smi": write_smiles_samples, "png": write_grid}, check_card=_check_card,
    set_distance=set_distance, files=FILES)


def register() -> None:
    """Register modality ``molecules`` (idempotent); discovery calls it."""
    plugins.register_modality(MODALITY)
