"""Internal coordinates of Cα traces: conversions, the angle state, its data kind and its network."""

import math

import numpy as np
import pytest
import torch

import molfuse as mf
from molfuse.errors import ConventionError
from molfuse.modalities.proteins import geometry
from molfuse.modalities.proteins.angle_data import angle_data, piece_windows
from molfuse.modalities.proteins.angle_net import AngleTransformer
from molfuse.modalities.proteins.angles import (BOND_LENGTH, CHANNEL_MEAN, CHANNEL_STD, angle_space, angles_to_state,
                                                chain_angles, channel_stats, decode_angles, encode_angles, nerf,
                                                state_to_angles)
from molfuse.modalities.proteins.data import decode, load_backbones


@pytest.fixture(scope="module")
def real():
    """Every shipped fragment (64 and 128 residues, all splits) as float64 tensors."""
    d = load_backbones()
    return d, torch.as_tensor(d.ca, dtype=torch.float64), torch.as_tensor(d.mask)


def _wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


def _kabsch_rmsd(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    s[-1] *= np.sign(np.linalg.det(u @ vt))
    return math.sqrt(max(((a ** 2).sum() + (b ** 2).sum() - 2 * s.sum()) / len(a), 0.0))


def test_angles_agree_with_the_geometry_module(real):
    d, ca, mask = real
    theta, tau = chain_angles(ca[:50], mask[:50])
    for i in range(50):
        n = int(d.length[i])
        assert np.allclose(np.degrees(theta[i, 1:n - 1].numpy()), geometry.bond_angles(d.ca[i, :n]), atol=1e-9)
        assert np.allclose(np.degrees(tau[i, 1:n - 2].numpy()), geometry.virtual_dihedrals(d.ca[i, :n]), atol=1e-9)
        assert not theta[i, [0, n - 1]].any() and not tau[i, [0, n - 2, n - 1]].any()  # no angle there


def test_angles_to_coordinates_to_angles_is_exact_on_every_real_fragment(real):
    _, ca, mask = real
    theta, tau = chain_angles(ca, mask)
    rebuilt = nerf(theta, tau, mask)
    theta2, tau2 = chain_angles(rebuilt, mask)
    assert float((theta2 - theta).abs().max()) < 1e-9
    assert float(_wrap(tau2 - tau).abs().max()) < 1e-9
    bonds = (rebuilt[:, 1:] - rebuilt[:, :-1]).norm(dim=-1)[mask[:, 1:]]
    assert float((bonds - BOND_LENGTH).abs().max()) < 1e-9
    assert float(rebuilt[~mask].abs().max()) == 0.0
    centre = (rebuilt * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert float(centre.abs().max()) < 1e-9


def test_coordinates_to_angles_to_coordinates_costs_what_fixing_the_bonds_costs(real):
    d, ca, mask = real
    rebuilt = nerf(*chain_angles(ca, mask), mask)
    rmsd = np.array([_kabsch_rmsd(ca[i][mask[i]].numpy(), rebuilt[i][mask[i]].numpy()) for i in range(0, len(d), 3)])
    # Measured on the 1,571 shipped fragments (every third here): real Cα–Cα distances are 3.80 ± 0.03 Å (cis
    # peptides near 2.9 Å), and the small length errors add up along the chain: median 0.12 Å,
    # 95th percentile about 0.3 Å, largest 0.45 Å after superposition.
    assert np.median(rmsd) < 0.2 and np.quantile(rmsd, 0.95) < 0.4 and rmsd.max() < 0.6
    with_exact_bonds = nerf(*chain_angles(rebuilt, mask), mask)  # a trace with 3.80 Å bonds comes back exactly
    assert float((with_exact_bonds - rebuilt).abs().max()) < 1e-9


def test_a_mirror_image_flips_every_dihedral_and_the_rebuild_keeps_the_hand(real):
    d, ca, mask = real
    theta, tau = chain_angles(ca[:40], mask[:40])
    mirrored = ca[:40] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    theta_m, tau_m = chain_angles(mirrored, mask[:40])
    assert float((theta_m - theta).abs().max()) < 1e-12 and float((tau_m + tau).abs().max()) < 1e-12
    rebuilt = nerf(theta, tau, mask[:40]).numpy()
    helix = [i for i in range(40) if d.sse_fraction[i, 0] > 0.5][:4]
    assert helix, "the first fragments should include helices"
    for i in helix:  # right-handed α-helices (+50°) stay right-handed after the rebuild
        n = int(d.length[i])
        codes = geometry.sse_codes(rebuilt[i, :n])
        assert geometry.helical_dihedral(rebuilt[i, :n], codes) > 30.0


def test_rotations_and_translations_leave_the_angles_unchanged(real):
    _, ca, mask = real
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.linalg.det(q))  # a proper rotation
    moved = ca[:20] @ q.T + torch.tensor([5.0, -3.0, 12.0], dtype=torch.float64)
    for a, b in zip(chain_angles(ca[:20], mask[:20]), chain_angles(moved, mask[:20])):
        assert float(_wrap(a - b).abs().max()) < 1e-9


def test_state_round_trip_masks_and_the_shipped_standardisation(real):
    d, ca, mask = real
    train = d.split == 0
    theta, tau = chain_angles(ca[train], mask[train])
    mean, std = channel_stats(theta, tau, mask[train])
    assert np.allclose(mean, CHANNEL_MEAN, atol=6e-5) and np.allclose(std, CHANNEL_STD, atol=6e-5)
    x = angles_to_state(theta, tau, mask[train], CHANNEL_MEAN, CHANNEL_STD)
    entries = angle_space().entries(x.shape, mask[train])
    assert float(x[~entries].abs().max()) == 0.0
    theta2, tau2 = state_to_angles(x, mask[train], CHANNEL_MEAN, CHANNEL_STD)
    assert float((theta2 - theta).abs().max()) < 1e-9 and float(_wrap(tau2 - tau).abs().max()) < 1e-9
    # the modality's decoder rebuilds Å traces with 3.80 Å bonds from float32 states
    xs, m = encode_angles(d.ca[:8], d.mask[:8])
    pos, m2 = decode(xs, m, mf.plugins.modality("proteins").data_kinds["protein_angles"].build(
        {"length": 64, "n": 1}).normalisation)
    assert (m2 == d.mask[:8]).all()
    assert np.allclose(np.linalg.norm(np.diff(pos[0][m2[0]], axis=0), axis=-1), BOND_LENGTH, atol=1e-5)
    direct, _ = decode_angles(xs, m, {"channel_mean": list(CHANNEL_MEAN), "channel_std": list(CHANNEL_STD)})
    assert np.allclose(pos, direct)


def test_chain_space_degrees_of_freedom_and_refusals():
    space = angle_space()
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6], [4]])
    assert space.dof((3, 10, 4), mask).tolist() == [30.0, 14.0, 6.0]  # 2(n − 2) + 2(n − 3)
    assert space == mf.spaces.space_from_config(space.config()) and hash(space) == hash(angle_space())
    with pytest.raises(ConventionError, match="prefix"):
        space.check((1, 10, 4), torch.tensor([[True] * 4 + [False] + [True] * 5]))
    with pytest.raises(ConventionError, match="shorter than 4"):
        space.check((1, 10, 4), torch.arange(10)[None, :] < 3)


def test_windows_reproduce_the_shipped_fragments_they_contain(real):
    d = load_backbones().select("train", 64)
    win = piece_windows(d, 64, 1)
    assert len(win["theta"]) > 10 * len(d)  # every residue offset, not every 16th
    key = {(int(p), int(s)): i for i, (p, s) in enumerate(zip(win["piece"], win["start"]))}
    theta, tau = chain_angles(torch.as_tensor(d.ca[:, :64], dtype=torch.float64), torch.as_tensor(d.mask[:, :64]))
    sse_diff = []
    for f in range(len(d)):
        i = key[(int(d.piece[f]), int(d.start[f]))]
        assert np.allclose(win["theta"][i], theta[f].numpy(), atol=1e-5)  # float32 fragments, centred apart
        assert np.allclose(_wrap(win["tau"][i] - tau[f].numpy()), 0.0, atol=1e-5)
        sse_diff.append(np.abs(win["sse_fraction"][i] - d.sse_fraction[f]).max())
    # P-SEA codes near a fragment's ends depend on the cut: a re-cut window keeps each residue's
    # code from the fragment it is deepest in. Measured: mean largest difference 0.032 (2 of 64
    # residues), 99th percentile 0.14, largest 0.17.
    assert np.mean(sse_diff) < 0.05 and np.max(sse_diff) < 0.25


def test_the_angle_data_kind_describes_its_windows():
    data = angle_data({"length": 64, "stride": 4, "population": "helix_rich"})
    assert data.x.shape[1:] == (64, 4) and data.space == angle_space().config()
    assert data.description["sse_mean"]["helix"] > 0.6 and data.node_counts == {64: len(data.x)}
    assert data.normalisation["representation"] == "ca_angles"
    with pytest.raises(ValueError, match="stride"):
        angle_data({"length": 64, "stride": 0})


@pytest.fixture(scope="module", params=[0, 8], ids=["sequence_only", "distance_bias"])
def net(request):
    torch.manual_seed(0)
    model = AngleTransformer(width=32, layers=2, heads=4, kernel=3, max_separation=8, time_dim=16,
                             distance_bins=request.param)
    with torch.no_grad():  # leave the zero-initialised read-out and gates: make the output non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


def _states(n_res, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(n_res)[None, :] < torch.as_tensor(lengths)[:, None]
    x = angle_space().noise((len(lengths), n_res, 4), mask, g, dtype=torch.float64)
    return x, mask


def test_net_output_lives_on_the_chain_space_and_ignores_padding(net):
    x, mask = _states(12, [12, 9, 5])
    t = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    out = net(x, t, mask=mask)
    assert float(out[~angle_space().entries(x.shape, mask)].abs().max()) == 0.0
    junk = x + 100.0 * (~angle_space().entries(x.shape, mask)).to(x)  # garbage in padding is never read
    assert torch.allclose(net(junk, t, mask=mask), out, atol=1e-12)
    alone = net(x[1:2, :9], t[1:2], mask=mask[1:2, :9])  # a chain does not see its batch or its padding
    assert torch.allclose(out[1, :9], alone[0], atol=1e-10)


def test_net_tells_a_chain_from_its_mirror_image(net):
    x, mask = _states(10, [10, 10])
    mirror = x.clone()
    raw = x * torch.tensor(CHANNEL_STD, dtype=x.dtype) + torch.tensor(CHANNEL_MEAN, dtype=x.dtype)
    raw[..., 3] = -raw[..., 3]  # sin τ -> −sin τ: every dihedral flipped
    mirror = angle_space().project((raw - torch.tensor(CHANNEL_MEAN, dtype=x.dtype)) / torch.tensor(CHANNEL_STD,
                                   dtype=x.dtype), mask)
    t = torch.full((2,), 0.4, dtype=torch.float64)
    a, b = net(x, t, mask=mask), net(mirror, t, mask=mask)
    assert float((a - b).norm() / a.norm()) > 0.01  # chirality-aware: not a function of |τ| only


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    data = angle_data({"length": 64, "stride": 8, "n": 256, "seed": 1})
    model = AngleTransformer(width=32, layers=2, heads=4, kernel=3, max_separation=8, time_dim=16)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    sched = mf.VPSchedule()
    fixed_t = torch.linspace(0.05, 0.95, 64)
    fixed_eps = angle_space().noise(data.x[:64].shape, data.mask[:64], torch.Generator().manual_seed(1))

    def held():
        with torch.no_grad():
            return float(mf.losses.denoising_loss(model, data.x[:64], sched, t=fixed_t, eps=fixed_eps,
                                                  mask=data.mask[:64]).mean())
    before = held()
    for _ in range(40):
        idx = torch.randint(len(data.x), (32,), generator=g)
        loss = mf.losses.denoising_loss(model, data.x[idx], sched, mask=data.mask[idx], generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.9 and held() < 0.7 * before
