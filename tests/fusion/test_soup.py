"""Soups: running add/remove, refusals with readable diffs, linear exactness (MATH §5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from molfuse import MergeError, WeightsError
from molfuse.fusion.soup import Soup, check_mergeable, soup


def _mlp(seed: int, steps: int = 2) -> nn.Module:
    """Small MLP with BatchNorm, perturbed by ``seed`` and run ``steps`` times in train mode."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for _ in range(steps):  # updates running stats and num_batches_tracked
            net(torch.randn(16, 4, generator=g))
    return net


def _sds(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"w": torch.randn(3, 4, generator=g), "b": torch.randn(3, generator=g), "steps": torch.tensor(5)}
        for _ in range(n)
    ]


def test_add_then_remove_returns_original():
    sds = _sds(4)
    s = Soup(sds[0]).add(sds[1])
    before = s.state_dict()
    s.add(sds[2]).add(sds[3])
    assert s.n == 4
    s.remove(sds[3]).remove(sds[2])
    assert s.n == 2
    after = s.state_dict()
    for k in before:
        assert after[k].dtype == before[k].dtype
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-6)
    torch.testing.assert_close(after["w"], (sds[0]["w"] + sds[1]["w"]) / 2, rtol=0, atol=1e-6)


def test_running_soup_equals_batch_soup_and_weights():
    sds = _sds(3, seed=1)
    running = Soup.from_state_dicts(sds).state_dict()
    batch = soup(sds)
    for k in batch:
        torch.testing.assert_close(running[k], batch[k])
    torch.testing.assert_close(batch["w"], (sds[0]["w"] + sds[1]["w"] + sds[2]["w"]) / 3)
    weighted = soup(sds, weights=[0.5, 0.3, 0.2])
    expect = 0.5 * sds[0]["b"] + 0.3 * sds[1]["b"] + 0.2 * sds[2]["b"]
    torch.testing.assert_close(weighted["b"], expect)
    assert int(weighted["steps"]) == 5 and weighted["steps"].dtype == torch.int64


def test_soup_of_one_is_a_copy():
    sd = _sds(1)[0]
    out = soup([sd])
    torch.testing.assert_close(out["w"], sd["w"], rtol=0, atol=0)
    out["w"].add_(1.0)
    assert not torch.equal(out["w"], sd["w"])  # a copy, not a view


def test_dtype_preserved_and_averaged_in_float64():
    a = {"x": torch.tensor([1.0, 2049.0], dtype=torch.float16)}
    b = {"x": torch.tensor([2.0, 2051.0], dtype=torch.float16)}
    out = soup([a, b])
    assert out["x"].dtype == torch.float16
    torch.testing.assert_close(out["x"], torch.tensor([1.5, 2050.0], dtype=torch.float16))


def test_linear_model_output_is_weighted_average():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(32, 6, generator=g)  # fixed features; the head is linear in its parameters
    heads = []
    for _ in range(3):
        h = nn.Linear(6, 2)
        with torch.no_grad():
            h.weight.copy_(torch.randn(2, 6, generator=g))
            h.bias.copy_(torch.randn(2, generator=g))
        heads.append(h)
    w = [0.2, 0.5, 0.3]
    merged = nn.Linear(6, 2)
    merged.load_state_dict(soup([h.state_dict() for h in heads], weights=w), strict=True)
    with torch.no_grad():
        expect = sum(wi * h(feats) for wi, h in zip(w, heads))
        torch.testing.assert_close(merged(feats), expect, rtol=1e-5, atol=1e-5)


def test_mlp_with_batchnorm_round_trip():
    nets = [_mlp(s) for s in range(3)]
    sds = [n.state_dict() for n in nets]
    merged = _mlp(99, steps=0)
    merged.load_state_dict(soup(sds), strict=True)
    msd = merged.state_dict()
    assert int(msd["1.num_batches_tracked"]) == 2
    for key in ("0.weight", "1.running_mean", "1.running_var", "3.bias"):
        torch.testing.assert_close(msd[key], sum(sd[key] for sd in sds) / 3)
    merged.load_state_dict(Soup.from_state_dicts(sds).state_dict(), strict=True)


def test_differing_integer_buffers_refused():
    sds = [_mlp(0).state_dict(), _mlp(1, steps=3).state_dict()]
    with pytest.raises(MergeError, match=r"'1\.num_batches_tracked'.*integer buffers must agree"):
        soup(sds)
    with pytest.raises(MergeError, match="num_batches_tracked"):
        Soup(sds[0]).add(sds[1])


def test_mismatched_keys_shapes_dtypes_listed():
    a, b = _sds(2)
    del b["b"]
    b["extra"] = torch.zeros(1)
    b["w"] = torch.zeros(3, 5)
    b["steps"] = torch.tensor(5, dtype=torch.int32)
    with pytest.raises(MergeError) as err:
        check_mergeable([a, b])
    msg = str(err.value)
    assert "missing keys 'b'" in msg and "extra keys 'extra'" in msg
    assert "'w': shapes differ" in msg and "(3, 4)" in msg and "(3, 5)" in msg
    assert "'steps': dtypes differ" in msg
    with pytest.raises(MergeError, match="'w': shapes differ"):
        Soup(a).add(b)


def test_other_refusals():
    a, b = _sds(2)
    with pytest.raises(MergeError, match="at least 1"):
        soup([])
    with pytest.raises(MergeError, match="non-tensor values: 'b'"):
        check_mergeable([a, {**b, "b": [1.0, 2.0, 3.0]}])
    with pytest.raises(WeightsError, match="simplex"):
        soup([a, b], weights=[0.9, 0.3])
    s = Soup(a)
    with pytest.raises(MergeError, match="last member"):
        s.remove(a)
    s.add(b)
    with pytest.raises(MergeError, match="'w': shapes differ"):
        s.remove({**b, "w": torch.zeros(4, 3)})
    assert s.n == 2  # a refused removal leaves the soup untouched
    torch.testing.assert_close(s.state_dict()["w"], (a["w"] + b["w"]) / 2)
