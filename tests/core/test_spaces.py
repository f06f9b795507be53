"""State spaces (MATH §6): projection, noise, degrees of freedom, inner products, conventions."""

import pytest
import torch

import molfuse as mf
from molfuse.errors import ConventionError
from molfuse.spaces import EUCLIDEAN, Chain, Euclidean, PointCloud, resolve_space, space_from_config


def _mask(sizes, n_max):
    return torch.arange(n_max)[None, :] < torch.as_tensor(sizes)[:, None]


def test_euclidean_noise_is_the_plain_draw_and_projection_is_identity():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = EUCLIDEAN.noise((4, 1, 5, 5), None, g1, "cpu", torch.float32)
    assert torch.equal(z, torch.randn((4, 1, 5, 5), generator=g2))
    assert EUCLIDEAN.project(z) is z
    assert EUCLIDEAN.dof((4, 1, 5, 5)).tolist() == [25.0] * 4
    with pytest.raises(ConventionError, match="no node mask"):
        EUCLIDEAN.check((4, 3), torch.ones(4, 3, dtype=torch.bool))


@pytest.mark.parametrize("channels, centred", [(3, 3), (5, 3), (4, 0)])
def test_point_cloud_projection_noise_and_dof(channels, centred):
    space = PointCloud(centred)
    mask = _mask([2, 5, 7], 7)
    v = torch.randn(3, 7, channels, dtype=torch.float64)
    p = space.project(v, mask)
    assert torch.equal(p[~mask], torch.zeros_like(p[~mask]))  # padding is exactly zero
    com = (p[..., :centred] * mask[..., None]).sum(1)
    assert com.numel() == 0 or com.abs().max() < 1e-12  # centred channels have zero centre of mass
    assert torch.allclose(space.project(p, mask), p, atol=1e-15)  # idempotent
    assert torch.allclose((v * p).sum(), (p * p).sum())  # orthogonal projection: <v, Pv> = |Pv|^2
    n = mask.sum(1).double()
    assert torch.equal(space.dof(v.shape, mask), n * channels - centred)
    z = space.noise((20000, 7, channels), _mask([5] * 20000, 7), torch.Generator().manual_seed(0), dtype=torch.float64)
    # unit Gaussian on the subspace: E|z|^2 = D
    assert abs(float((z * z).sum((1, 2)).mean()) - (5 * channels - centred)) < 0.1 * (5 * channels - centred) ** 0.5 * 3


def test_point_cloud_inner_ignores_padding_and_handles_member_axes():
    space = PointCloud(3)
    mask = _mask([2, 3], 4)
    a, b = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    exact = torch.stack([(a[i, :k] * b[i, :k]).sum() for i, k in enumerate([2, 3])]).double()
    assert torch.allclose(space.inner(a, b, mask), exact, atol=1e-6)
    stacked = torch.stack([a, 2 * a], 1)  # (batch, K, N, F)
    assert torch.allclose(space.inner(stacked, stacked, mask, lead=1)[:, 1], 4 * space.sqnorm(a, mask), atol=1e-5)


def test_point_cloud_checks_shapes_and_masks():
    space = PointCloud(3)
    with pytest.raises(ConventionError, match="batch, nodes, channels"):
        space.check((4, 12), None)
    with pytest.raises(ConventionError, match="bool"):
        space.check((2, 4, 3), torch.ones(2, 4))
    with pytest.raises(ConventionError, match="no real node"):
        space.check((2, 4, 3), _mask([0, 2], 4))
    with pytest.raises(ConventionError, match="centred"):
        space.check((2, 4, 2), None)


def test_config_round_trip_and_mismatch_is_refused():
    assert space_from_config(PointCloud(3).config()) == PointCloud(3)
    assert space_from_config(None) == Euclidean()
    with pytest.raises(ConventionError, match="kind"):
        space_from_config({"kind": "torus"})

    class M:
        def __init__(self, space):
            self.space, self.name = space, "m"

    assert resolve_space([M(None), M(PointCloud(3))]) == PointCloud(3)
    with pytest.raises(ConventionError, match="space mismatch"):
        resolve_space([M(PointCloud(3)), M(Euclidean())])


def test_a_cloud_model_fused_with_a_vector_model_names_both_spaces():
    """Superposing a point-cloud model with a plain-vector one is a ConventionError naming both
    models and their spaces (it was a TypeError about 'mask' from inside the vector model); a
    model that declares no space and takes no mask= is named too."""
    from molfuse.fusion import superpose

    cloud = mf.CentredGaussianMixture({3: torch.zeros(1, 3, 3)}, [1.0], name="cloud")
    flat = mf.GaussianMixture([[0.0, 0.0]], [1.0], name="flat")
    mask = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(ConventionError, match=r"space mismatch: 'flat' lives on Euclidean\(\) but 'cloud' on "
                                              r"PointCloud\(centred=3\)"):
        superpose([cloud, flat], cloud.schedule, (4, 3, 3), steps=20, mask=mask)

    class Plain:
        name = "plain"

        def __call__(self, x, t, cond=None):
            return -x

    with pytest.raises(ConventionError, match=r"'plain' declares no space and takes no mask=, so it cannot run on "
                                              r"PointCloud\(centred=3\) \(the space of 'cloud'\)"):
        superpose([cloud, Plain()], cloud.schedule, (4, 3, 3), steps=20, mask=mask)
    with pytest.raises(ConventionError, match=r"'m' lives on Euclidean\(\) but the space passed in on PointCloud"):
        resolve_space([flat.__class__([[0.0]], [1.0], name="m")], PointCloud(3))


def test_masked_score_models_get_the_mask_and_padding_stays_zero():
    from molfuse.evaluation.exactness_clouds import cloud_members, size_masks

    a, _ = cloud_members()
    seen = {}

    class Spy:
        space, prediction, name = a.space, "score", "spy"

        def __call__(self, x, t, cond=None, mask=None):
            seen["mask"] = mask
            return a(x, t, mask=mask)

    mask = size_masks(6, (3, 5, 8), 8)
    r = mf.sample(Spy(), a.schedule, (6, 8, 3), steps=20, generator=torch.Generator().manual_seed(0), mask=mask)
    assert seen["mask"] is not None and torch.equal(seen["mask"], mask)
    assert torch.equal(r.x[~mask], torch.zeros_like(r.x[~mask]))
    with pytest.raises(ConventionError, match="no node mask"):
        mf.sample(mf.GaussianMixture([[0.0, 0.0]], [1.0]), a.schedule, (6, 2), steps=20, mask=mask)


def test_size_histograms_per_whole_number_condition():
    from molfuse.spaces import condition_key, node_counts_by_condition

    mask = torch.arange(5)[None, :] < torch.tensor([[3], [5], [5], [4], [3]])
    cond = torch.tensor([[0.0, 1.0], [2.0, 1.0], [2.0, 1.0], [0.0, 1.0], [2.0, 0.0]])
    by = node_counts_by_condition(mask, cond)
    assert by == {"0,1": {3: 1, 4: 1}, "2,0": {3: 1}, "2,1": {5: 2}}
    assert condition_key([2.0, 1.0]) == "2,1" and condition_key(torch.tensor([[3.0]])) == "3"
    assert condition_key([0.5]) is None and condition_key([float("nan")]) is None
    assert node_counts_by_condition(mask, cond + 0.5) is None  # continuous conditions: marginal only
    assert node_counts_by_condition(mask, torch.arange(5.0)[:, None], max_keys=4) is None


ANGLES = ((1, 1), (1, 1), (1, 2), (1, 2))  # the protein angle state: (cos θ, sin θ, cos τ, sin τ)


def _chain_entries(n: int, n_max: int) -> torch.Tensor:
    """(n_max, 4) bool: residue i carries θ for 1 <= i <= n − 2 and τ for 1 <= i <= n − 3."""
    i = torch.arange(n_max)[:, None]
    tail = torch.tensor([1, 1, 2, 2])
    return (i >= 1) & (i < n - tail)


def test_chain_projection_dof_and_noise_by_length():
    space = Chain(ANGLES)
    sizes = [4, 5, 8, 12]
    mask = _mask(sizes, 12)
    keep = torch.stack([_chain_entries(n, 12) for n in sizes])
    v = torch.randn(4, 12, 4, dtype=torch.float64)
    p = space.project(v, mask)
    assert torch.equal(p, torch.where(keep, v, torch.zeros(())))  # coordinate-aligned: keep or zero
    assert torch.equal(space.project(p, mask), p)
    assert torch.equal(space.dof(v.shape, mask), torch.tensor([4.0 * n - 10 for n in sizes], dtype=torch.float64))
    assert torch.equal(space.dof((2, 6, 4)), torch.tensor([14.0, 14.0], dtype=torch.float64))  # no mask: all real
    members = torch.stack([v, 2 * v], 1)  # (batch, K, N, F): a member axis between batch and residues
    assert torch.equal(space.project(members, mask)[:, 1], 2 * p)
    z = space.noise((20000, 12, 4), _mask([8] * 20000, 12), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(z[:, ~_chain_entries(8, 12)], torch.zeros_like(z[:, ~_chain_entries(8, 12)]))
    assert abs(float((z * z).sum((1, 2)).mean()) - 22) < 3 * (2 * 22 / 20000) ** 0.5  # E|z|^2 = D = 22


def test_chain_inner_runs_over_the_degrees_of_freedom_only():
    space = Chain(ANGLES)
    ones = torch.ones(3, 6, 4, dtype=torch.float64)
    mask = _mask([4, 5, 6], 6)
    assert torch.equal(space.inner(ones, ones, mask), space.dof(ones.shape, mask))
    # without a mask every residue is real, but the trimmed ends are still not degrees of freedom
    assert torch.equal(space.sqnorm(ones), space.dof(ones.shape))
    stacked = torch.stack([ones, 3 * ones], 1)
    assert torch.equal(space.inner(stacked, stacked, mask, lead=1)[:, 1], 9 * space.dof(ones.shape, mask))


def test_chain_checks_shapes_prefix_masks_and_lengths():
    space = Chain(ANGLES)
    assert space.min_length == 4
    with pytest.raises(ConventionError, match=r"\(batch, residues, 4\)"):
        space.check((2, 6, 3), None)
    with pytest.raises(ConventionError, match="bool"):
        space.check((2, 6, 4), torch.ones(2, 6))
    with pytest.raises(ConventionError, match="prefix"):
        space.check((1, 6, 4), torch.tensor([[True, True, False, True, True, True]]))
    with pytest.raises(ConventionError, match="1 chains are shorter than 4 residues"):
        space.check((2, 6, 4), _mask([3, 6], 6))
    with pytest.raises(ConventionError, match="shorter than 4 residues"):
        space.check((2, 3, 4), None)  # no mask: all 3 residues real, still too short
    space.check((2, 6, 4), _mask([4, 6], 6))
    space.check((2, 4, 4), None)
    for bad in ([], [(1,)], [(1, -1)], [(1, True)], "11", [(1.0, 1)]):
        with pytest.raises(ConventionError, match="trims"):
            Chain(bad)


def test_chain_config_round_trip_equality_and_hash():
    space = Chain(ANGLES)
    again = space_from_config(space.config())
    assert again == space and hash(again) == hash(space) and isinstance(again, Chain)
    assert space.config() == {"kind": "chain", "trims": [[1, 1], [1, 1], [1, 2], [1, 2]]}
    assert Chain([[1, 1], [1, 1], [1, 2], [1, 2]]) == space and len({space, again}) == 1
    assert Chain(((1, 1), (1, 1), (1, 2), (2, 1))) != space and space != PointCloud(4) and space != EUCLIDEAN
    with pytest.raises(ConventionError, match="trims"):
        space_from_config({"kind": "chain", "trims": [[1, 1, 1]]})
    with pytest.raises(ConventionError, match="space mismatch"):
        resolve_space([type("M", (), {"space": space, "name": "m"})(), type("M", (), {"space": PointCloud(3)})()])


def test_size_histograms_refuse_negative_counts_and_bad_keys():
    from molfuse.spaces import node_count_distribution, size_histogram

    assert size_histogram({"4": 1, 5: 2.5}, max_nodes=5) == {4: 1.0, 5: 2.5}
    with pytest.raises(ConventionError, match=r"member 1's node_counts\[4\]: expected a finite count >= 0; got -2"):
        node_count_distribution([{4: 1}, {4: -2, 5: 3}])  # was dropped silently
    with pytest.raises(ConventionError, match=r"member 0's node_counts: key 'five' is not a node count"):
        node_count_distribution([{"five": 5}])
    with pytest.raises(ConventionError, match="member 0 has no node counts"):
        node_count_distribution([{}])
    with pytest.raises(ConventionError, match=r"x: node count 6 exceeds the model's 5 nodes"):
        size_histogram({6: 1}, max_nodes=5, what="x")


def _graph_entries(n: int, n_max: int, f: int, b: int) -> torch.Tensor:
    """(n_max, f + n_max b) bool, written out pair by pair: node channels of the n real nodes and
    the b channels of each pair i < j < n, stored in row i at columns f + j b .. f + j b + b − 1."""
    keep = torch.zeros(n_max, f + n_max * b, dtype=torch.bool)
    keep[:n, :f] = True
    for i in range(n):
        for j in range(i + 1, n):
            keep[i, f + j * b:f + (j + 1) * b] = True
    return keep


def test_molecule_graph_projection_dof_and_noise_once_per_pair():
    from molfuse.spaces import MoleculeGraph

    space, f, b = MoleculeGraph(4, 2), 4, 2
    sizes = [3, 5, 8]
    mask = _mask(sizes, 8)
    keep = torch.stack([_graph_entries(n, 8, f, b) for n in sizes])
    v = torch.randn(3, 8, space.width(8), dtype=torch.float64)
    p = space.project(v, mask)
    assert torch.equal(space.entries(v.shape, mask), keep)
    assert torch.equal(p[~keep], torch.zeros_like(p[~keep]))  # lower triangle, diagonal, padding: zero
    assert torch.equal(p[:, :, 3:][keep[:, :, 3:]], v[:, :, 3:][keep[:, :, 3:]])  # free channels kept as they are
    com = (p[..., :3] * mask[..., None]).sum(1)
    assert com.abs().max() < 1e-12  # positions centred over the real nodes
    assert torch.allclose(space.project(p, mask), p, atol=1e-15)  # idempotent
    assert torch.allclose((v * p).sum(), (p * p).sum())  # orthogonal: <v, Pv> = |Pv|^2
    dof = [n * f - 3 + b * n * (n - 1) // 2 for n in sizes]
    assert dof == [15, 37, 85] and space.dof(v.shape, mask).tolist() == dof
    assert space.dof((2, 5, space.width(5))).tolist() == [37.0, 37.0]  # no mask: every node real
    members = torch.stack([v, 2 * v], 1)  # (batch, K, N, W)
    assert torch.allclose(space.project(members, mask)[:, 1], 2 * p, atol=1e-14)
    z = space.noise((20000, 8, space.width(8)), _mask([5] * 20000, 8), torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    off = ~_graph_entries(5, 8, f, b)
    assert torch.equal(z[:, off], torch.zeros_like(z[:, off]))
    assert abs(float((z * z).sum((1, 2)).mean()) - 37) < 3 * (2 * 37 / 20000) ** 0.5  # E|z|^2 = D
    pair = z[:, 1, f + 3 * b]  # channel 0 of the pair (1, 3): one unit normal, not two halves
    assert abs(float(pair.var()) - 1) < 0.05


def test_molecule_graph_inner_counts_each_free_pair_once():
    from molfuse.spaces import MoleculeGraph

    space = MoleculeGraph(4, 2)
    mask = _mask([3, 5, 8], 8)
    ones = torch.ones(3, 8, space.width(8), dtype=torch.float64)
    assert torch.equal(space.sqnorm(ones, mask), space.dof(ones.shape, mask) + 3)  # + the 3 centred directions
    assert torch.equal(space.sqnorm(ones[:1, :5, :space.width(5)]), torch.tensor([20.0 + 20.0], dtype=torch.float64))
    a, c = (space.project(torch.randn(3, 8, space.width(8), dtype=torch.float64), mask) for _ in range(2))
    exact = (a * c).flatten(1).sum(1)
    assert torch.allclose(space.inner(a, c, mask), exact)
    stacked = torch.stack([a, 3 * a], 1)
    assert torch.allclose(space.inner(stacked, stacked, mask, lead=1)[:, 1], 9 * space.sqnorm(a, mask))


def test_molecule_graph_checks_name_the_expected_width():
    from molfuse.spaces import MoleculeGraph

    space = MoleculeGraph(5, 4)
    space.check((2, 6, 5 + 6 * 4), _mask([3, 6], 6))
    with pytest.raises(ConventionError, match=r"\(batch, N, F \+ N·B\) = \(batch, 6, 29\): 5 node channels, then 4 "
                                              r"pair channels for each of the 6 partners; got shape \(2, 6, 28\)"):
        space.check((2, 6, 28), None)
    with pytest.raises(ConventionError, match="got shape \\(2, 29\\)"):
        space.check((2, 29), None)
    with pytest.raises(ConventionError, match="bool"):
        space.check((2, 6, 29), torch.ones(2, 6))
    with pytest.raises(ConventionError, match="1 samples have no real node"):
        space.check((2, 6, 29), _mask([0, 2], 6))
    for bad in ((3, 0), (2, 4), (5, 4, -1), (5.0, 4), (5, True)):
        with pytest.raises(ConventionError, match="MoleculeGraph takes channel counts"):
            MoleculeGraph(*bad)


def test_molecule_graph_config_round_trip_equality_and_resize():
    from molfuse.spaces import MoleculeGraph

    space = MoleculeGraph(9, 5)
    assert space.config() == {"kind": "molecule_graph", "node_channels": 9, "pair_channels": 5, "centred": 3}
    again = space_from_config(space.config())
    assert again == space and hash(again) == hash(space) and isinstance(again, MoleculeGraph)
    assert MoleculeGraph(9, 4) != space and MoleculeGraph(9, 5, centred=0) != space and PointCloud(3) != space
    with pytest.raises(ConventionError, match="MoleculeGraph takes channel counts"):
        space_from_config({"kind": "molecule_graph", "node_channels": 2, "pair_channels": 5})
    small = space.project(torch.randn(2, 3, space.width(3), dtype=torch.float64), None)
    big = space.resize(small, 6)  # a 3-node template in a 6-node batch: the pair (i, j) keeps its place
    assert big.shape == (2, 6, space.width(6)) and torch.equal(space.resize(big, 3), small)
    assert torch.equal(space.unpack(big)[2][:, :3, :3], space.unpack(small)[2])
    assert torch.allclose(space.project(big, _mask([3, 3], 6)), big, atol=1e-15)  # on the 3-node subspace
    assert space.sqnorm(big, _mask([3, 3], 6)).allclose(space.sqnorm(small))
