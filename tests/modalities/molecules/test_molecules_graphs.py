"""QM9 bond graphs in the state (data kind ``qm9_graphs``): real molecules round trip, states on
the space, dropped molecules counted, bad inputs refused, geometry against bonds (RDKit; no net)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from molfuse import plugins  # noqa: E402
from molfuse.errors import DataError  # noqa: E402
from molfuse.modalities.molecules import graph_data as gd  # noqa: E402
from molfuse.modalities.molecules import register  # noqa: E402
from molfuse.modalities.molecules.elements import HEAVY  # noqa: E402
from molfuse.modalities.molecules.graphs import geometry_agrees, graph_molecule, guard_valence, heavy_graph  # noqa: E402
from molfuse.modalities.molecules.elements import VALENCE  # noqa: E402
from molfuse.modalities.molecules.qm9 import load_small  # noqa: E402
from molfuse.modalities.molecules.qm9_graphs import REASONS, bond_graphs  # noqa: E402
from molfuse.modalities.molecules.validation import canonical  # noqa: E402
from molfuse.pairs import free_pairs, pair_block  # noqa: E402


@pytest.fixture(scope="module")
def test_set():
    return load_small()["test"]


@pytest.fixture(scope="module")
def graphs(test_set):
    return bond_graphs(test_set, cache=False)  # the 1,000 shipped test molecules, about 2 s


def _symbols(g, i):
    real = g.types[i] >= 0
    return [HEAVY[k] for k in g.types[i][real]], g.positions[i][real], g.orders[i][np.ix_(real, real)]


def test_real_molecules_round_trip_to_their_own_smiles(graphs):
    x, mask = gd.encode(graphs.types, graphs.positions, graphs.orders)
    types, pos, orders = gd.decode(x.numpy(), mask.numpy(), gd.normalisation_for())
    table, mols = gd.graph_table(types, pos, orders)
    ref = np.array([canonical(s) for s in graphs.data.smiles])
    assert table["valid"].all() and (table["fragments"] == 1).all(), table[~table["valid"]]
    assert (table["smiles"].to_numpy() == ref).all(), table[table["smiles"].to_numpy() != ref]
    assert (orders == graphs.orders).all() and (types == graphs.types).all()
    assert all(m is not None and m.GetNumConformers() == 1 for m in mols)


def test_states_lie_on_the_space_with_one_hot_pairs(graphs):
    x, mask = gd.encode(graphs.types, graphs.positions, graphs.orders, type_scale=0.25, bond_scale=1.0)
    space = gd.space_for()
    assert x.shape == (len(graphs), 9, 7 + 9 * 4) and space.config()["pair_channels"] == 4
    assert (space.project(x, mask) - x).abs().max() < 1e-6  # centring again moves float32 positions by ~1e-8 Å
    assert torch.equal(space.project(x, mask)[..., 3:], x[..., 3:])
    assert torch.equal(mask.sum(1), torch.as_tensor((graphs.types >= 0).sum(1)))
    assert x[..., :3][mask].sum(0).abs().max() < 1e-3 * len(graphs)  # centred per molecule
    assert (x.masked_select(~mask[..., None]) == 0).all()
    pairs, free = pair_block(x, 7, 4), free_pairs(mask)
    assert torch.equal(pairs[free].sum(-1), torch.ones(int(free.sum()))) and torch.equal(pairs[free].amax(-1),
                                                                                        torch.ones(int(free.sum())))
    assert (pairs[~free] == 0).all()
    assert torch.equal(x[..., 3:7][mask].sum(-1), torch.full((int(mask.sum()),), 0.25))
    order_of = pairs[free].argmax(-1).numpy()
    assert np.array_equal(np.bincount(order_of, minlength=4), np.bincount(
        np.concatenate([np.triu(o, 1)[np.triu_indices(9, 1)][_upper_real(t)] for o, t in zip(graphs.orders, graphs.types)]),
        minlength=4))


def _upper_real(types):
    real = types >= 0
    return (real[:, None] & real[None, :])[np.triu_indices(9, 1)]


def test_dropped_molecules_are_counted_by_reason(graphs, test_set):
    assert graphs.total == len(test_set) == len(graphs) + sum(graphs.dropped.values())
    assert set(graphs.dropped) == set(REASONS.values())
    # measured on the shipped test set: 931 kept, 60 without bonds, 8 charged, 1 other graph
    assert 0.9 < graphs.kept_share < 0.97 and graphs.dropped["bonds not determined"] > 0
    assert graphs.dropped["formal charges"] > 0
    tiny = test_set.take(np.flatnonzero(np.isin(test_set.index, graphs.data.index))[:3])
    tiny.smiles = tiny.smiles.copy()
    tiny.smiles[1] = "CC"  # a stored SMILES the geometry does not give
    tiny.positions = tiny.positions.copy()
    tiny.positions[2] *= 1.6  # stretched: RDKit finds no bonds that fit
    few = bond_graphs(tiny, cache=False)
    assert len(few) == 1 and few.data.index[0] == tiny.index[0]
    assert few.dropped == {"bonds not determined": 1, "formal charges": 0, "graph differs from the QM9 SMILES": 1}


def test_a_zwitterion_is_dropped_for_its_charges():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("[NH3+]CC(=O)[O-]"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    orders, reason = heavy_graph([a.GetSymbol() for a in mol.GetAtoms()], mol.GetConformer().GetPositions())
    assert orders is None and reason.startswith("formal charges on atoms")


def test_bond_graphs_are_cached_and_a_damaged_cache_is_read_again(test_set, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLFUSE_CACHE", str(tmp_path))
    part = test_set.take(np.arange(40))
    first = bond_graphs(part)
    (path,) = tmp_path.glob("qm9_graphs_v1_*.npz")
    again = bond_graphs(part)
    assert np.array_equal(first.orders, again.orders) and first.dropped == again.dropped
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="bond-graph cache"):
        third = bond_graphs(part)
    assert np.array_equal(third.orders, first.orders) and path.stat().st_size > 100


def test_geometry_agrees_with_real_bonds_and_not_with_shuffled_ones(graphs):
    rng = np.random.default_rng(0)
    real, shuffled = [], []
    for i in range(len(graphs)):
        symbols, pos, orders = _symbols(graphs, i)
        real.append(geometry_agrees(symbols, pos, orders))
        perm = rng.permutation(len(symbols))
        shuffled.append(geometry_agrees(symbols, pos, orders[np.ix_(perm, perm)]))
    real, shuffled = np.array(real).mean(0), np.array(shuffled).mean(0)
    # measured: real 0.958 (orders) / 0.991 (connectivity); bonds relabelled at random 0.04 / 0.05
    assert real[0] > 0.9 and real[1] > 0.97, real
    assert shuffled[0] < 0.2 and shuffled[1] < 0.2, shuffled


def test_judging_gives_a_reason_per_bad_sample():
    ok = np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]])  # C-C=O
    pos = np.array([[0.0, 0, 0], [1.5, 0, 0], [2.2, 1.0, 0]])
    types = np.array([[0, 0, 2], [0, 0, 2], [0, 0, -2], [0, -1, -1]])
    orders = np.stack([ok, ok, ok, np.zeros((3, 3), int)])
    orders[1] = [[0, 3, 0], [3, 0, 2], [0, 2, 0]]  # a five-valent carbon
    orders[0, 0, 2] = orders[0, 2, 0] = -1  # an unreadable pair
    table, mols = gd.graph_table(types, np.stack([pos] * 4), orders)
    assert list(table["valid"]) == [False, False, False, True]
    assert "pair (0, 2)" in table["reason"][0] and "valence" in table["reason"][1].lower()
    assert "atom type -2" in table["reason"][2] and mols[3] is not None and table["smiles"][3] == "C"
    assert np.isnan(table["geometry_agrees"][:3].astype(float)).all()
    two = graph_molecule(["C", "O"], np.zeros((2, 2)))
    assert two.reason == "" and two.fragments == 2 and two.smiles in ("C", "O")
    s = gd.graph_summary(table)
    assert s["validity"] == 0.25 and s["geometry_agrees"] == 1.0


def test_the_valence_guard_lowers_the_least_certain_bond_until_no_atom_is_over_valent():
    sym = ["C", "C", "C", "C", "C", "O"]  # a carbon with four C-C singles and C=O: valence 6
    o = np.zeros((6, 6), int)
    o[0, 1:5] = o[1:5, 0] = 1
    o[0, 5] = o[5, 0] = 2
    sc = np.zeros((6, 6, 4))
    sc[0, 1:5, 1] = 5.0  # sure of the singles
    sc[0, 5, 2], sc[0, 5, 1] = 1.0, 0.9  # barely prefers the double bond over a single
    g, lowered = guard_valence(sym, o, sc)
    assert lowered == 2 and g[0].tolist() == [0, 1, 1, 1, 1, 0] and (g == g.T).all()  # C=O, then C-O, go
    sc[0, 5, 0] = -10.0  # now sure the C-O pair is bonded: a C-C single goes instead
    sc[0, 2, 1] = 4.0
    g, lowered = guard_valence(sym, o, sc)
    assert lowered == 2 and g[0].tolist() == [0, 1, 0, 1, 1, 1]
    assert graph_molecule(sym, g).reason == ""
    rng = np.random.default_rng(0)  # random graphs: bonds only ever go down, no atom ends above its valence
    for _ in range(50):
        n = int(rng.integers(2, 10))
        sym = [HEAVY[k] for k in rng.integers(0, 4, n)]
        up = np.triu(rng.integers(0, 4, (n, n)), 1)
        o = up + up.T
        g, lowered = guard_valence(sym, o, rng.normal(size=(n, n, 4)))
        assert (g <= o).all() and (g == g.T).all() and int((o - g).sum()) == 2 * lowered
        assert all(g[i].sum() <= VALENCE[s] for i, s in enumerate(sym))
    valid = np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]])  # C-C=O is left alone
    assert guard_valence(["C", "C", "O"], valid, rng.normal(size=(3, 3, 4)))[1] == 0
    with pytest.raises(ValueError, match=r"scores: expected \(3, 3, 4\)"):
        guard_valence(["C", "C", "O"], valid, np.zeros((3, 3, 3)))


def test_guarded_columns_sit_beside_the_unguarded_ones(graphs):
    x, mask = gd.encode(graphs.types[:20], graphs.positions[:20], graphs.orders[:20])
    x = x.clone()
    norm = gd.normalisation_for()
    plain, _ = gd.judge_states(x.numpy(), mask.numpy(), norm)
    table, _ = gd.judge_states(x.numpy(), mask.numpy(), norm, valence_guard=True)
    assert (table["bonds_lowered"] == 0).all() and table["valid_guarded"].all()  # real molecules need no guard
    assert (table["smiles_guarded"] == table["smiles"]).all()
    assert plain.equals(table[plain.columns])  # the unguarded columns do not change
    pairs = x[0, :, 7:].reshape(9, 9, 4)  # molecule 0: make atom 0 bond triply to every real partner
    real = int(mask[0].sum())
    for j in range(1, real):
        pairs[0, j] = pairs[j, 0] = torch.tensor([0.0, 0.4, 0.45, 0.5])
    table, _ = gd.judge_states(x.numpy(), mask.numpy(), norm, valence_guard=True)
    row = table.iloc[0]
    assert not row["valid"] and row["bonds_lowered"] > 0 and row["valid_guarded"], row


def test_bad_inputs_are_refused_naming_the_entry(graphs):
    t, p, o = graphs.types[:2], graphs.positions[:2], graphs.orders[:2].astype(int)
    asym = o.copy()
    asym[1, 0, 1] = 3 - asym[1, 1, 0]
    with pytest.raises(ValueError, match=r"orders\[1, 0, 1\]"):
        gd.encode(t, p, asym)
    pad = o.copy()
    last = int((t[0] >= 0).sum())
    if last < 9:
        pad[0, 0, last] = pad[0, last, 0] = 1
        with pytest.raises(ValueError, match="padding"):
            gd.encode(t, p, pad)
    with pytest.raises(ValueError, match="bond order 0-3"):
        gd.encode(t, p, np.full_like(o, 4) * (1 - np.eye(9, dtype=int)))
    with pytest.raises(ValueError, match=r"orders: expected shape \(2, 9, 9\)"):
        gd.encode(t, p, o[:, :8, :8])
    with pytest.raises(ValueError, match="not -1"):
        gd.encode(np.where(t == 0, 7, t), p, o)
    with pytest.raises(ValueError, match=r"x: expected shape \(n, N, 3 \+ 4 \+ 4·N\)"):
        gd.decode(np.zeros((2, 9, 7)), np.ones((2, 9), bool), gd.normalisation_for())
    with pytest.raises(ValueError, match="orders"):
        graph_molecule(["C", "C"], np.array([[0, 1], [2, 0]]))
    many = load_small()["test"].take(np.arange(1))
    many.types = np.where(many.types[:, :10] >= 0, 1, -1).astype(np.int8)
    many.types = np.pad(many.types, ((0, 0), (0, 19)), constant_values=-1)
    many.types[0, :10] = 1
    with pytest.raises(DataError, match="10 heavy atoms"):
        bond_graphs(many, cache=False)


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory):
    """The data kind's bond graphs cached in a folder of this module's own (built once, then read)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLFUSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _build(**spec):
    register()
    kind = plugins.data_kind("qm9_graphs")
    return kind.build({**kind.fields, "source": "small", "split": "test", **spec})


def test_data_kind_records_scales_counts_and_drops(graph_cache):
    td = _build(n=64, seed=3, bond_scale=0.5, properties=["rings"])
    assert td.x.shape == (64, 9, 43) and td.mask.shape == (64, 9) and td.cond.shape == (64, 1)
    assert td.space == {"kind": "molecule_graph", "node_channels": 7, "pair_channels": 4, "centred": 3}
    assert td.normalisation["bond_scale"] == 0.5 and td.normalisation["type_scale"] == 0.25
    assert td.normalisation["bond_orders"] == ["none", "single", "double", "triple"]
    free = free_pairs(td.mask)
    assert torch.equal(pair_block(td.x, 7, 4)[free].amax(-1), torch.full((int(free.sum()),), 0.5))
    d = td.description
    assert d["kind"] == "qm9_graphs" and sum(d["node_counts"].values()) == 64 and d["node_counts"] == td.node_counts
    assert d["graphs"]["read"] == 1000 and d["graphs"]["kept"] + sum(d["graphs"]["dropped"].values()) == 1000
    assert d["population_size"] == d["graphs"]["kept"]
    again = _build(n=64, seed=3, bond_scale=0.5, properties=["rings"])
    assert torch.equal(again.x, td.x) and d["qm9_index_sha256"] == again.description["qm9_index_sha256"]
    ringed = _build(where={"rings": [2, 9]}, n=10)
    assert ringed.description["population_size"] < d["graphs"]["kept"] / 2


@pytest.mark.parametrize("spec, match", [({"bond_scale": 0}, "bond_scale must be a positive number"),
                                         ({"type_scale": "big"}, "type_scale must be a positive number"),
                                         ({"split": "valid"}, "split must be one of train, test"),
                                         ({"n": 5000}, "n = 5000 but the population has"),
                                         ({"properties": ["mass"]}, "unknown properties")])
def test_data_kind_refuses_bad_fields(spec, match, graph_cache):
    with pytest.raises(ValueError, match=match):
        _build(**spec)


def test_a_graph_card_is_checked_against_its_space(graph_cache):
    from molfuse.errors import CheckpointError
    from molfuse.modalities.molecules import MODALITY

    td = _build(n=8)
    card = {"modality": "molecules", "space": td.space, "normalisation": td.normalisation, "shape": [9, 43]}
    MODALITY.check_card(card)
    for bad, match in [({"shape": [9, 40]}, r"does not fit \(N, 3 \+ 4 \+ 4·N\)"),
                       ({"shape": [10, 47]}, "max_atoms is 9"),
                       ({"space": {**td.space, "pair_channels": 5}}, "4 bond orders per pair"),
                       ({"normalisation": {**td.normalisation, "bond_scale": None}}, "bond_scale"),
                       ({"space": {"kind": "euclidean"}}, "point_cloud or molecule_graph")]:
        with pytest.raises(CheckpointError, match=match):
            MODALITY.check_card({**card, **bad})
