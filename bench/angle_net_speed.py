"""Training-step and forward speed of the angle-state protein eps-network (``protein_angles``).

For each configuration (width / layers / heads / kernel) times one training step (forward +
backward + Adam step of :func:`molfuse.losses.denoising_loss` on the angle states' chain space,
MATH §6) at batch 32 for chains of L = 64 and L = 128 residues, all real. The states are standard
normal draws on the chain space (:func:`states`): the network's cost does not depend on the
values, only on the shape. Reports the median wall-clock and CPU time over ``--steps`` steps after
``--warmup`` steps, and the samples/s of a no-grad forward pass at batch 64. The row marked
``shipped`` is the configuration of workflows/proteins/train_angles_all.yaml.

Usage: ``python bench/angle_net_speed.py [--threads 1 --steps 8 --warmup 2] [--quick]``.
"""

from __future__ import annotations

import argparse

import torch

from molfuse import VPSchedule
from molfuse.losses import denoising_loss
from molfuse.modalities.proteins.angle_net import AngleTransformer
from molfuse.modalities.proteins.angles import angle_space
from protein_net_speed import LENGTHS, median_ms, speed_args  # the sibling bench script (same folder)

# (name, config): width / layers / heads / kernel; max_separation 32 throughout
CONFIGS = [
    ("64/2/4/5", dict(width=64, layers=2, heads=4, kernel=5, max_separation=32)),
    ("128/4/4/5 shipped", dict(width=128, layers=4, heads=4, kernel=5, max_separation=32)),
    ("192/6/6/5", dict(width=192, layers=6, heads=6, kernel=5, max_separation=32)),
]


def states(batch: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle states (batch, n, 4) drawn N(0, I) on the chain space, and their masks (batch, n), all real."""
    mask = torch.ones(batch, n, dtype=torch.bool)
    return angle_space().noise((batch, n, 4), mask, gen), mask


def train_step_ms(config: dict, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """Median wall and CPU ms of forward + backward + Adam at batch ``args.batch`` for chains of ``n`` residues."""
    net = AngleTransformer(**config)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    (x0, mask), schedule = states(args.batch, n, gen), VPSchedule()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        denoising_loss(net, x0, schedule, generator=gen, mask=mask, space=net.space).mean().backward()
        opt.step()

    return median_ms(step, args.steps, args.warmup)


@torch.no_grad()
def forward_rate(config: dict, n: int, args: argparse.Namespace) -> float:
    """Samples/s of a no-grad forward pass at batch ``args.fwd_batch``."""
    net = AngleTransformer(**config).eval()
    x, mask = states(args.fwd_batch, n, torch.Generator().manual_seed(1))
    t = torch.rand(args.fwd_batch)
    wall, _ = median_ms(lambda: net(x, t, mask=mask), max(3, args.steps // 2), 1)
    return args.fwd_batch / (wall / 1e3)


def main() -> None:
    args, configs = speed_args(__doc__.splitlines()[0], CONFIGS)
    print(f"{'config':<19}{'params':>9}{'ms/step(64)':>14}{'ms/step(128)':>15}{'fwd/s(64)':>11}{'fwd/s(128)':>12}")
    for name, config in configs:
        params = sum(p.numel() for p in AngleTransformer(**config).parameters())
        ms = [f"{w:.0f} / {c:.0f}" for w, c in (train_step_ms(config, n, args) for n in LENGTHS)]
        rates = [forward_rate(config, n, args) for n in LENGTHS]
        print(f"{name.replace(' ', '_'):<19}{params:>9}{ms[0]:>14}{ms[1]:>15}{rates[0]:>11.0f}{rates[1]:>12.0f}",
              flush=True)


if __name__ == "__main__":
    main()
