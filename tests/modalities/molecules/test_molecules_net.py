"""Symmetries, masking, conditioning and trainability of the e3nn molecule eps-network."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402

from molfuse import PointCloud, VPSchedule  # noqa: E402
from molfuse.losses import denoising_loss  # noqa: E402
from molfuse.modalities.molecules.net import MoleculeScoreNet  # noqa: E402

F64 = torch.float64
SIZES = (6, 4, 2)  # real atoms per molecule; padded to N = 6


def make_net(lmax: int = 1, num_properties: int = 0, seed: int = 0, dtype: torch.dtype = F64) -> MoleculeScoreNet:
    torch.manual_seed(seed)
    net = MoleculeScoreNet(num_types=4, scalars=16, vectors=4, lmax=lmax, layers=2, time_dim=16,
                           num_properties=num_properties, property_mean=[1.0] * num_properties,
                           property_std=[2.0] * num_properties, radial_basis=8)
    return net.to(dtype)


def make_batch(sizes: tuple[int, ...] = SIZES, seed: int = 0, dtype: torch.dtype = F64):
    """x (batch, N, 3 + 4) centred over the real atoms, t (batch,), mask (batch, N); padding is noise."""
    g = torch.Generator().manual_seed(seed)
    n = max(sizes)
    mask = torch.arange(n)[None, :] < torch.tensor(sizes)[:, None]
    pos = 1.5 * torch.randn(len(sizes), n, 3, generator=g, dtype=dtype)
    m = mask[..., None].to(dtype)
    pos = pos - (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
    types = torch.nn.functional.one_hot(torch.randint(4, (len(sizes), n), generator=g), 4).to(dtype)
    types = 0.25 * types + 0.3 * torch.randn(types.shape, generator=g, dtype=dtype)
    return torch.cat([pos, types], -1), torch.rand(len(sizes), generator=g, dtype=dtype), mask


def transform(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 orthogonal ``matrix`` to the position channels of x (batch, N, F)."""
    return torch.cat([x[..., :3] @ matrix.T, x[..., 3:]], -1)


@pytest.mark.parametrize("lmax", [1, 2])
@pytest.mark.parametrize("improper", [False, True])
def test_o3_equivariance(lmax, improper):
    net, (x, t, mask) = make_net(lmax), make_batch()
    torch.manual_seed(3)
    rot = o3.rand_matrix(dtype=F64)
    if improper:  # a reflection: det = -1
        rot = rot @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))
    with torch.no_grad():
        out, out_rot = net(x, t, mask=mask), net(transform(x, rot), t, mask=mask)
    assert out[..., :3].abs().max() > 1e-4  # not trivially zero
    torch.testing.assert_close(out_rot, transform(out, rot), atol=1e-5, rtol=0)


def test_translation_invariance():
    net, (x, t, mask) = make_net(), make_batch()
    shift = torch.tensor([[[3.0, -7.5, 20.0]], [[0.1, 0.2, 0.3]], [[-5.0, 0.0, 1.0]]], dtype=F64)
    moved = torch.cat([x[..., :3] + shift, x[..., 3:]], -1)
    with torch.no_grad():
        torch.testing.assert_close(net(moved, t, mask=mask), net(x, t, mask=mask), atol=1e-9, rtol=0)


def test_permutation_equivariance():
    net, (x, t, mask) = make_net(), make_batch()
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out, out_perm = net(x, t, mask=mask), net(x[:, perm], t, mask=mask[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-10, rtol=0)


def test_position_output_is_centred_on_real_atoms():
    net, (x, t, mask) = make_net(), make_batch()
    with torch.no_grad():
        out = net(x, t, mask=mask)
    torch.testing.assert_close(out[..., :3].sum(1), torch.zeros(len(SIZES), 3, dtype=F64), atol=1e-10, rtol=0)


def test_padding_is_ignored_and_zero():
    net, (x, t, mask) = make_net(), make_batch()
    wild = x.clone()
    wild[~mask] = torch.tensor([1e30, -1e30, float("inf"), float("nan"), 1e6, -3.0, 7.0], dtype=F64)
    with torch.no_grad():
        out, out_wild = net(x, t, mask=mask), net(wild, t, mask=mask)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    assert torch.equal(out_wild[~mask], torch.zeros_like(out_wild[~mask]))
    torch.testing.assert_close(out_wild, out, atol=0, rtol=0)


def test_padding_gets_no_gradient():
    net, (x, t, mask) = make_net(), make_batch()
    x = x.requires_grad_()
    net(x, t, mask=mask)[mask].pow(2).sum().backward()
    assert torch.equal(x.grad[~mask], torch.zeros_like(x.grad[~mask])) and x.grad[mask].abs().sum() > 0


def test_each_molecule_in_a_ragged_batch_equals_it_alone():
    net, (x, t, mask) = make_net(), make_batch()
    with torch.no_grad():
        out = net(x, t, mask=mask)
        for b, n in enumerate(SIZES):
            alone = net(x[b:b + 1, :n], t[b:b + 1])  # no mask: every atom real
            torch.testing.assert_close(out[b:b + 1, :n], alone, atol=1e-10, rtol=0)


def test_conditioning_null_finite_and_broadcast():
    net, (x, t, mask) = make_net(num_properties=2), make_batch()
    assert net.num_properties == 2 and net.null_cond != net.null_cond  # NaN
    nan = torch.full((3, 2), float("nan"), dtype=F64)
    target = torch.tensor([[0.5, -1.0]], dtype=F64)
    with torch.no_grad():
        null, none, scalar = net(x, t, nan, mask), net(x, t, None, mask), net(x, t, net.null_cond, mask)
        one, many = net(x, t, target, mask), net(x, t, target.expand(3, 2), mask)
        half = net(x, t, torch.tensor([[0.5, float("nan")]], dtype=F64), mask)
    torch.testing.assert_close(none, null, atol=0, rtol=0)
    torch.testing.assert_close(scalar, null, atol=0, rtol=0)
    torch.testing.assert_close(one, many, atol=0, rtol=0)
    assert (one - null)[mask].abs().max() > 1e-6 and (half - one)[mask].abs().max() > 1e-6
    assert torch.isfinite(half).all()
    with pytest.raises(ValueError, match="cond must be"):
        net(x, t, torch.zeros(2, 2, dtype=F64), mask)


def test_unconditional_net_refuses_a_condition():
    net, (x, t, mask) = make_net(), make_batch()
    assert net.null_cond is None and net.num_properties == 0
    with pytest.raises(ValueError, match="unconditional"):
        net(x, t, torch.zeros(3, 1, dtype=F64), mask)


def test_bad_inputs_raise():
    net, (x, t, mask) = make_net(), make_batch()
    with pytest.raises(ValueError, match="num_types"):
        net(x[..., :6], t, mask=mask)
    with pytest.raises(ValueError, match="mask"):
        net(x, t, mask=mask.to(F64))
    with pytest.raises(ValueError, match="property_mean"):
        MoleculeScoreNet(num_properties=2, property_mean=[0.0])


def test_a_few_adam_steps_reduce_a_fixed_denoising_loss():
    net, (x, _, mask) = make_net(dtype=torch.float32, seed=1), make_batch(dtype=torch.float32)
    schedule, space, g = VPSchedule(), PointCloud(3), torch.Generator().manual_seed(7)
    t = torch.tensor([0.2, 0.5, 0.8])
    eps = space.noise(x.shape, mask, g, dtype=x.dtype)

    def loss() -> torch.Tensor:
        return denoising_loss(net, x, schedule, t=t, eps=eps, mask=mask, space=space).mean()

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_state_dict_round_trips_through_the_architecture_config():
    net, (x, t, mask) = make_net(num_properties=2, dtype=torch.float32), make_batch(dtype=torch.float32)
    arch = json.loads(json.dumps(net.architecture))
    assert arch["name"] == "molecule_e3nn" and arch["config"]["property_std"] == [2.0, 2.0]
    copy = MoleculeScoreNet(**arch["config"])
    copy.load_state_dict(net.state_dict())
    cond = torch.tensor([[1.0, float("nan")]])
    with torch.no_grad():
        torch.testing.assert_close(copy(x, t, cond, mask), net(x, t, cond, mask), atol=0, rtol=0)
