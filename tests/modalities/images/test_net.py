import pytest
import torch
from torch import nn

import molfuse as mf
from molfuse import nets
from molfuse.modalities.images.net import UNet


def _randomised(net: UNet) -> UNet:
    """Zero-initialised output convs make a fresh net output 0; give every parameter a value."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


@pytest.mark.parametrize("size", [28, 8, 7])
def test_shapes_and_size(size):
    net = UNet(image_size=size, num_classes=10)
    x = torch.randn(3, 1, size, size)
    assert net(x, torch.rand(3)).shape == x.shape and net(x, 0.5).shape == x.shape
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.3e6 < n_params < 1e6 and net.prediction == "eps"
    with pytest.raises(ValueError, match="batch, 1, H, W"):
        net(torch.randn(3, size, size), torch.rand(3))


def test_conditioning_and_null_class():
    torch.manual_seed(0)
    net = _randomised(UNet(image_size=8, base=16, num_classes=10)).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    a, b = net(x, t, torch.tensor([1, 1, 1, 1])), net(x, t, torch.tensor([2, 2, 2, 2]))
    assert (a - b).abs().max() > 1e-4  # the class changes the output
    null = net(x, t, torch.full((4,), 10))
    torch.testing.assert_close(net(x, t, None), null)  # cond None == the null class
    torch.testing.assert_close(net(x, t, 1), a)  # an int is broadcast
    mixed = net(x, t, torch.tensor([1, 2, 10, 1]))
    torch.testing.assert_close(mixed[[0, 3]], a[[0, 3]])  # per-sample labels, no batch coupling
    torch.testing.assert_close(mixed[2], null[2])
    for bad in (torch.tensor([11, 0, 0, 0]), torch.tensor([-1, 0, 0, 0]), torch.tensor([0.5] * 4), torch.tensor([1, 2])):
        with pytest.raises(ValueError):
            net(x, t, bad)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(image_size=8, base=16)(x, t, torch.tensor([1, 1, 1, 1]))


def test_gradients_reach_every_parameter():
    net = _randomised(UNet(image_size=8, base=16, num_classes=3))
    x = torch.randn(4, 1, 8, 8)
    net(x, torch.rand(4), torch.tensor([0, 1, 2, 3])).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_fresh_net_trains_from_zero_output(sched, gen):
    net = nets.build("unet", {"image_size": 8, "base": 16, "num_classes": None})
    x0 = torch.rand(16, 1, 8, 8, generator=gen) * 2 - 1
    t = torch.rand(16, generator=gen) * 0.9 + 0.05
    eps = torch.randn(16, 1, 8, 8, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        loss = mf.dsm_loss(net, x0, sched, t, eps).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_samples_with_the_core_sampler(sched, gen):
    net = UNet(image_size=8, base=16, num_classes=10).eval()
    with torch.no_grad():
        res = mf.sample(net, sched, (3, 1, 8, 8), steps=4, cond=torch.tensor([0, 1, 2]), generator=gen)
    assert res.x.shape == (3, 1, 8, 8) and torch.isfinite(res.x).all()
    assert isinstance(nets.build("unet", {"image_size": 8, "base": 16}), nn.Module)
