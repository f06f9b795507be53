"""Symmetries, masking, conditioning and trainability of the EGNN for molecule graphs (bonds in the state)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("e3nn")  # the molecules modality needs it at import

from molfuse import MoleculeGraph, VPSchedule  # noqa: E402
from molfuse.losses import denoising_loss  # noqa: E402
from molfuse.nets import build  # noqa: E402
from molfuse.modalities.molecules.graph_net import GraphScoreNet  # noqa: E402
from molfuse.pairs import pack, unpack  # noqa: E402

F64 = torch.float64
TYPES, BONDS = 4, 4
SIZES = (6, 4, 2)  # real atoms per molecule; padded to N = 6
SPACE = MoleculeGraph(3 + TYPES, BONDS)


def make_net(prediction: str = "eps", num_properties: int = 0, seed: int = 0, dtype: torch.dtype = F64,
             trained_look: bool = True) -> GraphScoreNet:
    """A small net; ``trained_look`` replaces the zero-initialised heads by random ones so outputs are not 0."""
    torch.manual_seed(seed)
    net = GraphScoreNet(node_channels=3 + TYPES, pair_channels=BONDS, width=16, pair_width=8, layers=2,
                        time_dim=16, num_properties=num_properties, property_mean=[1.0] * num_properties,
                        property_std=[2.0] * num_properties, radial_basis=8, prediction=prediction)
    if trained_look:
        with torch.no_grad():
            for p in net.parameters():
                if p.abs().max() == 0:
                    p.normal_(0.0, 0.3)
    return net.to(dtype)


def parts(sizes: tuple[int, ...] = SIZES, seed: int = 0, dtype: torch.dtype = F64):
    """(positions, types, symmetric pairs, mask) of noisy molecules padded to max(sizes)."""
    g = torch.Generator().manual_seed(seed)
    b, n = len(sizes), max(sizes)
    mask = torch.arange(n)[None, :] < torch.tensor(sizes)[:, None]
    pos = 1.5 * torch.randn(b, n, 3, generator=g, dtype=dtype)
    types = 0.25 * torch.nn.functional.one_hot(torch.randint(TYPES, (b, n), generator=g), TYPES).to(dtype)
    types = types + 0.3 * torch.randn(types.shape, generator=g, dtype=dtype)
    pairs = torch.randn(b, n, n, BONDS, generator=g, dtype=dtype)
    return pos, types, pairs + pairs.transpose(1, 2), mask


def make_batch(sizes: tuple[int, ...] = SIZES, seed: int = 0, dtype: torch.dtype = F64):
    """x (batch, N, F + N·B) on the space, t (batch,), mask (batch, N)."""
    pos, types, pairs, mask = parts(sizes, seed, dtype)
    x = SPACE.project(pack(pos, types, pairs, mask), mask)
    return x, torch.rand(len(sizes), generator=torch.Generator().manual_seed(seed + 1), dtype=dtype), mask


def moved(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """x with its positions mapped by ``p -> p matrixᵀ + shift`` (other channels untouched)."""
    pos = x[..., :3] @ matrix.T + (0.0 if shift is None else shift)
    return torch.cat([pos, x[..., 3:]], -1)


def orthogonal(seed: int, improper: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != improper:
        q = q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))
    return q


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_output_lies_on_the_space(prediction):
    net, (x, t, mask) = make_net(prediction), make_batch()
    with torch.no_grad():
        out = net(x, t, mask=mask)
    torch.testing.assert_close(SPACE.project(out, mask), out, atol=1e-12, rtol=0)  # centred, zero off free pairs
    torch.testing.assert_close(out[..., :3].sum(1), torch.zeros(len(SIZES), 3, dtype=F64), atol=1e-12, rtol=0)
    assert torch.equal(out * ~SPACE.entries(out.shape, mask), torch.zeros_like(out))
    entries = SPACE.entries(out.shape, mask)
    pairs = out[..., 7:][entries[..., 7:]]
    assert out[..., :3][mask].abs().min() > 0 and out[..., 3:7][mask].abs().min() > 0 and pairs.abs().min() > 0


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_e3_equivariance_positions_rotate_types_and_pairs_invariant(improper, prediction):
    net, (x, t, mask) = make_net(prediction), make_batch()
    q = orthogonal(3, improper)
    shift = torch.tensor([[[3.0, -7.5, 20.0]], [[0.1, 0.2, 0.3]], [[-5.0, 0.0, 1.0]]], dtype=F64)
    with torch.no_grad():
        out = net(x, t, mask=mask)
        out_moved = net(SPACE.project(moved(x, q, shift), mask), t, mask=mask)
        out_uncentred = net(moved(x, q, shift), t, mask=mask)  # the net does not rely on centred input
    assert out[..., :3].abs().max() > 1e-3
    torch.testing.assert_close(out_moved, moved(out, q), atol=1e-10, rtol=0)
    torch.testing.assert_close(out_uncentred, moved(out, q), atol=1e-10, rtol=0)


def test_permutation_of_real_atoms_permutes_nodes_and_the_pair_matrix():
    net, (x, t, mask) = make_net(), make_batch()
    perm = torch.tensor([4, 1, 5, 0, 3, 2])  # mixes real and padding atoms of the smaller molecules
    pos, types, pairs = unpack(x, 7, BONDS, 3, mask)
    pmask = mask[:, perm]
    x_perm = pack(pos[:, perm], types[:, perm], pairs[:, perm][:, :, perm], pmask)
    assert not torch.equal(x_perm[..., 7:], x[:, perm][..., 7:])  # storage itself is not a row permutation
    with torch.no_grad():
        out, out_perm = net(x, t, mask=mask), net(x_perm, t, mask=pmask)
    for a, b in zip(unpack(out, 7, BONDS, 3, mask), unpack(out_perm, 7, BONDS, 3, pmask)):
        other = a[:, perm] if a.dim() == 3 else a[:, perm][:, :, perm]
        torch.testing.assert_close(b, other, atol=1e-12, rtol=0)


def test_pair_output_is_symmetric_before_it_is_stored():
    net, (x, t, mask) = make_net(), make_batch()
    seen = []
    net.pair_out.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        net(x, t, mask=mask)
    full = seen[0]  # (batch, N, N, B) before the projection keeps the upper triangle
    both = (mask[:, :, None] & mask[:, None, :])[..., None]
    assert torch.equal(torch.where(both, full, 0.0), torch.where(both, full.transpose(1, 2), 0.0))


def test_padding_lower_triangle_and_diagonal_are_never_read():
    net, (x, t, mask) = make_net(), make_batch()
    wild = x.clone()
    garbage = torch.tensor([1e30, -1e30, float("inf"), float("nan")], dtype=F64)
    wild[~mask] = garbage.repeat(wild.shape[-1] // 4 + 1)[: wild.shape[-1]]  # padding rows
    off = ~SPACE.entries(x.shape, mask)
    off[..., :7] = False
    wild[off] = float("nan")  # lower triangle, diagonal, pairs with padding partners
    with torch.no_grad():
        out, out_wild = net(x, t, mask=mask), net(wild, t, mask=mask)
    assert torch.equal(out_wild, out)
    xg = wild.clone().nan_to_num(0.0, 0.0, 0.0).requires_grad_()
    net(xg, t, mask=mask).pow(2).sum().backward()
    assert torch.equal(xg.grad * off.logical_or(~mask[..., None]), torch.zeros_like(xg))
    assert xg.grad[SPACE.entries(x.shape, mask)].abs().min() > 0


def test_each_molecule_in_a_ragged_batch_equals_it_alone_and_ignores_its_batch_mates():
    net, (x, t, mask) = make_net(num_properties=1), make_batch()
    cond = torch.tensor([[0.5], [float("nan")], [2.0]], dtype=F64)
    other, _, _ = make_batch(seed=9)
    with torch.no_grad():
        out = net(x, t, cond, mask)
        mixed = net(torch.cat([x[:1], other[1:]]), t, cond, mask)
        for b, n in enumerate(SIZES):
            alone = net(x[b:b + 1, :n, :7 + n * BONDS], t[b:b + 1], cond[b:b + 1])  # partners j < n, no mask
            pos, types, pairs = unpack(out[b:b + 1], 7, BONDS, 3, mask[b:b + 1])
            small = pack(pos[:, :n], types[:, :n], pairs[:, :n, :n])
            torch.testing.assert_close(alone, small, atol=1e-12, rtol=0)
    torch.testing.assert_close(mixed[0], out[0], atol=0, rtol=0)


def test_conditioning_null_broadcast_and_refusal():
    net, (x, t, mask) = make_net(num_properties=2), make_batch()
    nan = torch.full((3, 2), float("nan"), dtype=F64)
    target = torch.tensor([[0.5, -1.0]], dtype=F64)
    with torch.no_grad():
        null, none = net(x, t, nan, mask), net(x, t, None, mask)
        one, many = net(x, t, target, mask), net(x, t, target.expand(3, 2), mask)
    assert net.null_cond != net.null_cond  # NaN: classifier-free "no condition"
    torch.testing.assert_close(none, null, atol=0, rtol=0)
    torch.testing.assert_close(one, many, atol=0, rtol=0)
    assert (one - null).abs().max() > 1e-6
    with pytest.raises(ValueError, match="cond must be"):
        net(x, t, torch.zeros(2, 2, dtype=F64), mask)
    with pytest.raises(ValueError, match="unconditional"):
        make_net()(x, t, torch.zeros(3, 1, dtype=F64), mask)


@pytest.mark.parametrize("field, value, named", [
    ("node_channels", 3, "node_channels=3"), ("pair_channels", 0, "pair_channels=0"), ("width", 0, "width=0"),
    ("layers", 1.5, "layers=1.5"), ("time_dim", 7, "time_dim=7"), ("radial_basis", 1, "radial_basis=1"),
    ("max_radius", 0.0, "max_radius=0.0"), ("prediction", "v", "prediction='v'"),
    ("property_std", [0.0], r"property_std=\[0.0\]"),
    ("property_centres", [[0, 1], [2, 3]], r"property_centres=\[\[0, 1\], \[2, 3\]\] \(1 lists"),
    ("property_centres", [[1, 1, 2]], r"property_centres=.*increasing"), ("property_centres", [[3]], "at least 2")])
def test_bad_config_names_the_field(field, value, named):
    cfg = {"num_properties": 1, field: value}
    with pytest.raises(ValueError, match=f"molecule_graph_egnn config: .*{named}"):
        GraphScoreNet(**cfg)


def test_count_bumps_start_as_the_unconditional_parent_and_then_tell_each_count_apart():
    """``property_centres``: with the parent's weights and a fresh embedding the net is the
    unconditional parent exactly, for every target; once the embedding's weights move, 2, 3 and
    4 give three different outputs, and the learned null stays the parent's "no condition"."""
    parent, (x, t, mask) = make_net(), make_batch()
    torch.manual_seed(1)
    child = GraphScoreNet(node_channels=3 + TYPES, pair_channels=BONDS, width=16, pair_width=8, layers=2,
                          time_dim=16, num_properties=1, property_mean=[1.75], property_std=[1.22], radial_basis=8,
                          property_centres=[[0, 1, 2, 3, 4, 5, 6]]).to(F64)
    assert child.architecture["config"]["property_centres"] == [[0, 1, 2, 3, 4, 5, 6]]
    assert "property_centres" not in parent.architecture["config"]  # older cards unchanged
    missing = child.load_state_dict(parent.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("prop_emb.") for k in missing)
    with torch.no_grad():
        base = parent(x, t, None, mask)
        for c in (0.0, 3.0, 4.5, float("nan")):
            torch.testing.assert_close(child(x, t, torch.tensor([[c]], dtype=F64), mask), base, atol=0, rtol=0)
        for p in child.prop_emb.mlp[-1].parameters():
            p.normal_(0.0, 0.3)
        out = [child(x, t, torch.tensor([[c]], dtype=F64), mask) for c in (2.0, 3.0, 4.0)]
    assert min((a - b).abs().max() for a, b in [(out[0], out[1]), (out[1], out[2]), (out[0], out[2])]) > 1e-6
    # the bumps alone separate counts: with the linear term zeroed, 3 still differs from 2 and 4
    with torch.no_grad():
        child.prop_emb.weight.zero_()
        z = [child.prop_emb(torch.tensor([[c]], dtype=F64)) for c in (2.0, 3.0, 4.0)]
    assert (z[0] - z[1]).abs().max() > 1e-6 and (z[2] - z[1]).abs().max() > 1e-6


def test_bad_inputs_name_the_expected_shape():
    net, (x, t, mask) = make_net(), make_batch()
    with pytest.raises(ValueError, match=r"F \+ N·B\) with F = 7, B = 4"):
        net(x[..., :-1], t, mask=mask)
    with pytest.raises(ValueError, match="mask must be bool"):
        net(x, t, mask=mask.to(F64))


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_a_few_adam_steps_reduce_a_fixed_denoising_loss(prediction):
    net, (x, _, mask) = make_net(prediction, seed=1, dtype=torch.float32, trained_look=False), make_batch(dtype=torch.float32)
    schedule, g = VPSchedule(), torch.Generator().manual_seed(7)
    t = torch.tensor([0.2, 0.5, 0.8])
    eps = SPACE.noise(x.shape, mask, g, dtype=x.dtype)

    def loss() -> torch.Tensor:
        return denoising_loss(net, x, schedule, t=t, eps=eps, mask=mask, space=SPACE).mean()

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_architecture_card_round_trip_and_registration():
    net, (x, t, mask) = make_net(num_properties=2, dtype=torch.float32), make_batch(dtype=torch.float32)
    arch = json.loads(json.dumps(net.architecture))
    assert arch["name"] == "molecule_graph_egnn" and net.space == SPACE and net.prediction == "eps"
    copy = build(arch["name"], arch["config"])  # registered by the molecules modality
    copy.load_state_dict(net.state_dict())
    cond = torch.tensor([[1.0, float("nan")]])
    with torch.no_grad():
        torch.testing.assert_close(copy(x, t, cond, mask), net(x, t, cond, mask), atol=0, rtol=0)


def test_a_fresh_net_starts_at_eps_zero_or_at_x0_equal_to_its_input():
    (x, t, mask) = make_batch()
    with torch.no_grad():
        eps = make_net("eps", trained_look=False)(x, t, mask=mask)
        x0 = make_net("x0", trained_look=False)(x, t, mask=mask)
    assert torch.equal(eps, torch.zeros_like(eps))
    torch.testing.assert_close(x0, x, atol=1e-12, rtol=0)


def test_a_tiny_graph_member_trains_through_molfuse_train_and_loads(tmp_path):
    """The data kind qm9_graphs, the net molecule_graph_egnn and the card check, end to end."""
    from molfuse.training import load_model, train_from_workflow

    wf = {"name": "tiny_graph", "seed": 0, "output": str(tmp_path / "train"),
          "architecture": {"name": "molecule_graph_egnn",
                           "config": {"node_channels": 7, "pair_channels": 4, "width": 16, "pair_width": 8,
                                      "layers": 1}},
          "data": {"kind": "qm9_graphs", "n": 32},
          "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "threads": 1}}
    res = train_from_workflow(wf, progress=False, verbose=False)
    model = load_model(res.checkpoint)
    assert model.space.config()["kind"] == "molecule_graph" and res.card["shape"] == [9, 7 + 4 * 9]
