"""Pair features stored once per unordered pair (MATH §6): pack / unpack between a molecule-graph
state and its parts, exact both ways on real entries, asymmetric pairs refused."""

import pytest
import torch

from molfuse.errors import ConventionError
from molfuse.pairs import free_pairs, pack, unpack
from molfuse.spaces import MoleculeGraph

SPACE = MoleculeGraph(node_channels=5, pair_channels=4)  # positions, 2 atom-type channels, 4 bond orders


def _mask(sizes, n_max):
    return torch.arange(n_max)[None, :] < torch.as_tensor(sizes)[:, None]


def _parts(sizes, n_max=6, seed=0):
    """Parts on the subspace: centred positions, zero padding, symmetric pairs with a zero diagonal."""
    g = torch.Generator().manual_seed(seed)
    mask = _mask(sizes, n_max)
    m = mask[..., None].double()
    pos = torch.randn(len(sizes), n_max, 3, generator=g, dtype=torch.float64) * m
    pos = (pos - pos.sum(1, keepdim=True) / m.sum(1, keepdim=True)) * m
    feat = torch.randn(len(sizes), n_max, 2, generator=g, dtype=torch.float64) * m
    upper = torch.randn(len(sizes), n_max, n_max, 4, generator=g, dtype=torch.float64) * free_pairs(mask)[..., None]
    return pos, feat, upper + upper.transpose(1, 2), mask


def test_pack_lays_out_the_upper_triangle_and_unpack_mirrors_it():
    pos, feat, pairs, mask = _parts([2, 4, 6])
    x = SPACE.pack(pos, feat, pairs, mask)
    assert x.shape == (3, 6, 5 + 6 * 4)
    assert torch.equal(x[1, 0, 5 + 3 * 4:5 + 4 * 4], pairs[1, 0, 3])  # pair (0, 3) in row 0 at partner 3
    assert torch.equal(x[1, 3, 5:5 + 4], torch.zeros(4, dtype=torch.float64))  # (3, 0): the lower copy is not stored
    assert torch.allclose(SPACE.project(x, mask), x, atol=1e-15)  # on the subspace already
    p2, f2, q2 = SPACE.unpack(x, mask)
    assert torch.equal(p2, pos) and torch.equal(f2, feat) and torch.equal(q2, pairs)  # exact round trip
    assert torch.equal(SPACE.pack(p2, f2, q2, mask), x)
    # each unordered pair once: the state's plain norm is the parts' norm with each pair counted once
    parts = (pos**2).sum((1, 2)) + (feat**2).sum((1, 2)) + (pairs**2).sum((1, 2, 3)) / 2
    assert torch.allclose(SPACE.sqnorm(x, mask), parts)


def test_unpack_of_any_state_is_symmetric_and_ignores_what_is_not_state():
    mask = _mask([3, 5], 5)
    x = torch.randn(2, 5, SPACE.width(5), dtype=torch.float64)  # junk off the subspace too
    pos, feat, pairs = unpack(x, 5, 4, 3, mask)
    assert torch.equal(pairs, pairs.transpose(1, 2)) and torch.equal(pairs.diagonal(0, 1, 2), torch.zeros(2, 4, 5))
    assert torch.equal(pairs[0, 3:], torch.zeros(2, 5, 4)) and torch.equal(pos[0, 3:], torch.zeros(2, 3))
    y = pack(pos, feat, pairs, mask)  # the parts back as a state: the projection of x, not yet centred
    assert torch.equal(y[..., 3:], SPACE.project(x, mask)[..., 3:])
    assert torch.equal(y[..., :3], x[..., :3] * mask[..., None])
    assert torch.equal(pairs[1, 4, 1], x[1, 1, 5 + 4 * 4:5 + 5 * 4])  # the lower entry is the stored upper one


def test_pack_refuses_asymmetric_pairs_naming_the_pair_and_drops_the_diagonal_and_padding():
    pos, feat, pairs, mask = _parts([3, 4], n_max=4)
    bad = pairs.clone()
    bad[1, 2, 0, 3] += 0.5
    with pytest.raises(ConventionError, match=r"symmetric .* sample 1, pair \(0, 2\) differs by 0.5.*"
                                              r"\(p \+ p.transpose\(1, 2\)\) / 2"):
        SPACE.pack(pos, feat, bad, mask)
    odd = pairs.clone()
    odd[0, 3, 1] = 7.0  # a pair touching the padding node of sample 0: not state, dropped
    odd[:, 1, 1] = 1.0  # the diagonal ("no bond" to itself): not state, dropped
    assert torch.equal(SPACE.pack(pos, feat, odd, mask), SPACE.pack(pos, feat, pairs, mask))
    with pytest.raises(ConventionError, match=r"pairs \(batch, N, N, 4\); got \(2, 4, 3\), \(2, 4, 2\)"):
        SPACE.pack(pos, feat, pairs[..., :3], mask)
    with pytest.raises(ConventionError, match="one batch and N"):
        pack(pos, feat[:, :3], pairs)
    with pytest.raises(ConventionError, match=r"\(batch, N, F \+ N·B\) with F = 5, B = 4; got \(2, 4, 20\)"):
        unpack(torch.zeros(2, 4, 20), 5, 4)
