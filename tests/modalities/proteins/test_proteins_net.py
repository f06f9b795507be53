"""Symmetries (SE(3), not E(3)), chain graph, masking, conditioning and trainability of the protein net."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402

from molfuse import PointCloud, VPSchedule  # noqa: E402
from molfuse.losses import denoising_loss  # noqa: E402
from molfuse.modalities.proteins.net import ProteinScoreNet, chain_features, chain_graph  # noqa: E402

F64 = torch.float64
SIZES = (12, 7, 3)  # real residues per protein; padded to L = 12; 3 residues: fully connected (K = 5)
MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))


def make_net(num_properties: int = 0, seed: int = 0, dtype: torch.dtype = F64) -> ProteinScoreNet:
    torch.manual_seed(seed)
    net = ProteinScoreNet(scalars=12, vectors=4, layers=2, chain_neighbors=1, spatial_neighbors=3, max_separation=4,
                          time_dim=8, num_properties=num_properties, property_mean=[0.3] * num_properties,
                          property_std=[0.2] * num_properties, radial_basis=6)
    return net.to(dtype)


@pytest.fixture(scope="module")
def net() -> ProteinScoreNet:
    return make_net()


def helix(n: int, dtype: torch.dtype = F64, handed: float = 1.0) -> torch.Tensor:
    """Ideal α-helix Cα trace (n, 3) in nm (100° per residue, radius 2.3 Å, rise 1.5 Å); ``handed=-1``: mirror."""
    i = torch.arange(n, dtype=dtype)
    return torch.stack([0.23 * torch.cos(1.745 * i), handed * 0.23 * torch.sin(1.745 * i), 0.15 * i], -1)


def make_batch(sizes: tuple[int, ...] = SIZES, seed: int = 0, dtype: torch.dtype = F64):
    """x (batch, L, 3) in nm: noisy random-walk chains (3.8 Å steps) centred over the real residues,
    t (batch,), mask (batch, L); padding holds noise."""
    g = torch.Generator().manual_seed(seed)
    n = max(sizes)
    mask = torch.arange(n)[None, :] < torch.tensor(sizes)[:, None]
    steps = torch.randn(len(sizes), n, 3, generator=g, dtype=dtype)
    pos = torch.cumsum(0.38 * steps / steps.norm(dim=-1, keepdim=True), 1)
    pos = pos + 0.05 * torch.randn(pos.shape, generator=g, dtype=dtype)
    m = mask[..., None].to(dtype)
    pos = torch.where(mask[..., None], pos - (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True), 3.0 * steps)
    return pos, torch.rand(len(sizes), generator=g, dtype=dtype), mask


def test_declares_the_molfuse_attributes(net):
    assert net.prediction == "eps" and net.space == PointCloud(3) and net.num_properties == 0
    assert net.architecture["name"] == "protein_se3" and net.null_cond is None


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_rotation_equivariance(dtype):
    model, (x, t, mask) = make_net(dtype=dtype), make_batch(dtype=dtype)
    torch.manual_seed(3)
    rot = o3.rand_matrix(dtype=dtype)
    with torch.no_grad():
        out, out_rot = model(x, t, mask=mask), model(x @ rot.T, t, mask=mask)
    assert out[mask].abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(out_rot, out @ rot.T, atol=1e-5, rtol=0)


def test_not_reflection_equivariant_chirality_is_seen(net):
    """A mirrored backbone is not a protein: its output is not the mirror of the original's output."""
    x, t, mask = make_batch()
    torch.manual_seed(4)
    rot = o3.rand_matrix(dtype=F64)
    with torch.no_grad():
        out = net(x, t, mask=mask)
        rot_err = (net(x @ rot.T, t, mask=mask) - out @ rot.T).norm()
        mirror_err = (net(x @ (rot @ MIRROR).T, t, mask=mask) - out @ (rot @ MIRROR).T).norm()
    assert rot_err < 1e-10 * out.norm()
    assert mirror_err > 0.1 * out.norm()  # a clear difference, not rounding


def test_torsion_sign_tells_right_from_left_handed_helices():
    mask = torch.ones(2, 10, dtype=torch.bool)
    right, left = chain_features(torch.stack([helix(10), helix(10, handed=-1.0)]), mask)[0][:, 5, 1:3].unbind(0)
    sin, cos = right  # torsion (i-2, i-1, i, i+1) of a right-handed α-helix: about +50°
    assert 30 < math.degrees(math.atan2(sin, cos)) < 70
    torch.testing.assert_close(left, right * torch.tensor([-1.0, 1.0], dtype=F64))


def test_translation_invariance(net):
    x, t, mask = make_batch()
    shift = torch.tensor([[[3.0, -7.5, 20.0]], [[0.1, 0.2, 0.3]], [[-5.0, 0.0, 1.0]]], dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(net(x + shift, t, mask=mask), net(x, t, mask=mask), atol=1e-9, rtol=0)


def test_output_is_centred_on_real_residues(net):
    x, t, mask = make_batch()
    with torch.no_grad():
        out = net(x, t, mask=mask)
    torch.testing.assert_close(out.sum(1), torch.zeros(len(SIZES), 3, dtype=F64), atol=1e-12, rtol=0)


def test_padding_is_ignored_and_zero(net):
    x, t, mask = make_batch()
    wild = x.clone()
    wild[~mask] = torch.tensor([float("inf"), float("nan"), -1e30], dtype=F64)
    with torch.no_grad():
        out, out_wild = net(x, t, mask=mask), net(wild, t, mask=mask)
        longer = torch.cat([wild, torch.full((3, 5, 3), float("inf"), dtype=F64)], 1)
        out_longer = net(longer, t, mask=torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1))
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask])) and torch.equal(out_wild, out)
    assert torch.equal(out_longer[:, 12:], torch.zeros(3, 5, 3, dtype=F64))
    torch.testing.assert_close(out_longer[:, :12], out, atol=1e-12, rtol=0)


def test_padding_gets_no_gradient(net):
    x, t, mask = make_batch()
    x = x.requires_grad_()
    net(x, t, mask=mask)[mask].pow(2).sum().backward()
    assert torch.equal(x.grad[~mask], torch.zeros_like(x.grad[~mask])) and x.grad[mask].abs().sum() > 0


def test_each_protein_in_a_ragged_batch_equals_it_alone(net):
    x, t, mask = make_batch()
    with torch.no_grad():
        out = net(x, t, mask=mask)
        other = x.clone()
        other[1:] = other[1:] * 2.0 + 0.3  # change the other proteins only
        torch.testing.assert_close(net(other, t, mask=mask)[0], out[0], atol=0, rtol=0)
        for b, n in enumerate(SIZES):
            alone = net(x[b:b + 1, :n], t[b:b + 1])  # no mask: every residue real
            torch.testing.assert_close(out[b:b + 1, :n], alone, atol=1e-12, rtol=0)


def test_chain_order_matters(net):
    x, t, mask = make_batch((8,))
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 7, 6])
    with torch.no_grad():
        out, out_perm = net(x, t, mask=mask), net(x[:, perm], t, mask=mask)
    assert (out_perm - out[:, perm]).abs().max() > 1e-4  # not a set function: the chain is read


def test_chain_graph_holds_sequence_and_nearest_neighbours():
    x, _, mask = make_batch()
    graph = chain_graph(torch.where(mask[..., None], x, 0.0), mask, chain=1, spatial=3)
    nbr, valid, sep, node = graph["nbr"], graph["valid"], graph["sep"], graph["node"]
    assert nbr.shape == (sum(SIZES), 5) and node.tolist() == mask.reshape(-1).nonzero().squeeze(1).tolist()
    assert valid.sum(1).tolist() == [5] * 19 + [2] * 3  # the 3-residue protein: fully connected
    real = x[mask]  # (M, 3), the real residues in the order of ``node``
    for i in range(12):  # the first protein: chain neighbours, then the nearest others fill the 5 slots
        js, bonded = nbr[i].tolist(), {j for j in (i - 1, i + 1) if 0 <= j < 12}
        assert {j for j, s in zip(js, sep[i].tolist()) if abs(s) == 1} == bonded
        far = [j for j in range(12) if abs(j - i) > 1]
        nearest = sorted(far, key=lambda j: float((real[j] - real[i]).norm()))[:5 - len(bonded)]
        assert set(js) == set(nearest) | bonded
        assert all(js[k] - i == sep[i, k] for k in range(5))


def test_conditioning_null_finite_and_broadcast():
    model, (x, t, mask) = make_net(num_properties=2), make_batch()
    assert model.num_properties == 2 and model.null_cond != model.null_cond  # NaN
    nan = torch.full((3, 2), float("nan"), dtype=F64)
    target = torch.tensor([[0.5, 0.1]], dtype=F64)
    with torch.no_grad():
        null, none, scalar = model(x, t, nan, mask), model(x, t, None, mask), model(x, t, model.null_cond, mask)
        one, many = model(x, t, target, mask), model(x, t, target.expand(3, 2), mask)
        half = model(x, t, torch.tensor([[0.5, float("nan")]], dtype=F64), mask)
    assert torch.equal(none, null) and torch.equal(scalar, null) and torch.equal(one, many)
    assert (one - null)[mask].abs().max() > 1e-6 and (half - one)[mask].abs().max() > 1e-6
    assert torch.isfinite(half).all()
    with pytest.raises(ValueError, match="cond must be"):
        model(x, t, torch.zeros(2, 2, dtype=F64), mask)


def test_unconditional_net_refuses_a_condition(net):
    x, t, mask = make_batch()
    with pytest.raises(ValueError, match="unconditional"):
        net(x, t, torch.zeros(3, 1, dtype=F64), mask)


def test_bad_inputs_raise(net):
    x, t, mask = make_batch()
    with pytest.raises(ValueError, match="x must be"):
        net(torch.cat([x, x[..., :1]], -1), t, mask=mask)
    with pytest.raises(ValueError, match="mask"):
        net(x, t, mask=mask.to(F64))
    with pytest.raises(ValueError, match="t must be"):
        net(x, t[:2], mask=mask)
    with pytest.raises(ValueError, match="property_mean"):
        ProteinScoreNet(num_properties=2, property_mean=[0.0])
    with pytest.raises(ValueError, match="no edges"):
        ProteinScoreNet(chain_neighbors=0, spatial_neighbors=0)
    with pytest.raises(ValueError, match=r"bond_basis=1 \(needs 0 or >= 2\)"):
        ProteinScoreNet(bond_basis=1)
    with pytest.raises(ValueError, match="bond_window"):
        ProteinScoreNet(bond_window=0.0)


def test_a_few_adam_steps_reduce_a_fixed_denoising_loss():
    model, (x, _, mask) = make_net(dtype=torch.float32, seed=1), make_batch(dtype=torch.float32)
    schedule, space, g = VPSchedule(), PointCloud(3), torch.Generator().manual_seed(7)
    t = torch.tensor([0.05, 0.1, 0.2])
    eps = space.noise(x.shape, mask, g, dtype=x.dtype)

    def loss() -> torch.Tensor:
        return denoising_loss(model, x, schedule, t=t, eps=eps, mask=mask, space=space).mean()

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = loss().item()
    for _ in range(25):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_state_dict_round_trips_through_the_architecture_config():
    model, (x, t, mask) = make_net(num_properties=2, dtype=torch.float32), make_batch(dtype=torch.float32)
    arch = json.loads(json.dumps(model.architecture))
    assert arch["config"]["property_std"] == [0.2, 0.2] and arch["config"]["angstrom_per_unit"] == 10.0
    copy = ProteinScoreNet(**arch["config"])
    copy.load_state_dict(model.state_dict())
    cond = torch.tensor([[0.4, float("nan")]])
    with torch.no_grad():
        torch.testing.assert_close(copy(x, t, cond, mask), model(x, t, cond, mask), atol=0, rtol=0)


@pytest.mark.slow
def test_trained_on_right_handed_helices_it_prefers_them_to_their_mirror_images():
    """A net trained on right-handed helices denoises them better than left-handed ones: with the
    noise mirrored along with the helix, an E(3)-equivariant net would score both identically."""
    torch.manual_seed(0)
    model = ProteinScoreNet(scalars=16, vectors=4, layers=2, chain_neighbors=2, spatial_neighbors=4, time_dim=16,
                            radial_basis=8)
    schedule, space, g = VPSchedule(), PointCloud(3), torch.Generator().manual_seed(1)
    right = helix(16, torch.float32)
    right = right - right.mean(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(250):
        x = right @ o3.rand_matrix(32).transpose(1, 2)  # (32, 16, 3): random orientations
        t = 0.02 + 0.3 * torch.rand(32, generator=g)
        opt.zero_grad()
        denoising_loss(model, x, schedule, t=t, generator=g, space=space).mean().backward()
        opt.step()
    x = right @ o3.rand_matrix(256).transpose(1, 2)
    eps, t, mirror = space.noise(x.shape, None, g), torch.full((256,), 0.1), MIRROR.float()
    with torch.no_grad():
        loss_right = denoising_loss(model, x, schedule, t=t, eps=eps, space=space).mean()
        loss_left = denoising_loss(model, x @ mirror, schedule, t=t, eps=eps @ mirror, space=space).mean()
    assert loss_left > 1.15 * loss_right, (loss_left, loss_right)  # measured 0.26 vs 0.19
