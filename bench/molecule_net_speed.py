"""Training-step and forward speed of the e3nn molecule eps-network (``molecule_e3nn``).

For each configuration (scalars / vectors / lmax / layers) times one training step
(forward + backward + Adam step of :func:`molfuse.losses.denoising_loss` on the zero-CoM point
cloud space, MATH §6) at batch 64 for QM9-like molecules with N = 9 atoms (heavy atoms,
4 types) and N = 29 atoms (explicit hydrogens, 5 types), all real, positions of ~1.5 Å spread.
Reports the median over ``--steps`` steps after ``--warmup`` steps, and the samples/s of a
no-grad forward pass at batch 256.

Usage: ``python bench/molecule_net_speed.py [--threads 1 --steps 10 --warmup 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from typing import Callable

import torch

from molfuse import PointCloud, VPSchedule
from molfuse.losses import denoising_loss
from molfuse.modalities.molecules.net import MoleculeScoreNet

CONFIGS = [(16, 4, 1, 2), (32, 8, 1, 3), (32, 8, 2, 3), (64, 16, 1, 4)]
SIZES = [(9, 4), (29, 5)]  # (atoms N, atom types T)


def molecules(batch: int, n: int, types: int, gen: torch.Generator) -> torch.Tensor:
    """Random QM9-like states (batch, n, 3 + types): centred positions (~1.5 Å) + scaled one-hot."""
    pos = 1.5 * torch.randn(batch, n, 3, generator=gen)
    pos = pos - pos.mean(1, keepdim=True)
    onehot = torch.nn.functional.one_hot(torch.randint(types, (batch, n), generator=gen), types)
    return torch.cat([pos, 0.25 * onehot.float()], -1)


def median_ms(fn: Callable[[], None], steps: int, warmup: int) -> float:
    """Median wall time of ``fn`` in ms over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def train_step_ms(config: tuple[int, int, int, int], n: int, types: int, args: argparse.Namespace) -> float:
    """Median ms of forward + backward + Adam at batch ``args.batch`` for molecules of ``n`` atoms."""
    s, v, lmax, layers = config
    net = MoleculeScoreNet(num_types=types, scalars=s, vectors=v, lmax=lmax, layers=layers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x0, schedule, space = molecules(args.batch, n, types, gen), VPSchedule(), PointCloud(3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        denoising_loss(net, x0, schedule, generator=gen, space=space).mean().backward()
        opt.step()

    return median_ms(step, args.steps, args.warmup)


@torch.no_grad()
def forward_rate(config: tuple[int, int, int, int], n: int, types: int, args: argparse.Namespace) -> float:
    """Samples/s of a no-grad forward pass at batch ``args.fwd_batch``."""
    s, v, lmax, layers = config
    net = MoleculeScoreNet(num_types=types, scalars=s, vectors=v, lmax=lmax, layers=layers).eval()
    x = molecules(args.fwd_batch, n, types, torch.Generator().manual_seed(1))
    t = torch.rand(args.fwd_batch)
    ms = median_ms(lambda: net(x, t), max(3, args.steps // 2), 1)
    return args.fwd_batch / (ms / 1e3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--fwd-batch", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 steps, first configuration only")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    configs = CONFIGS[:1] if args.quick else CONFIGS
    if args.quick:
        args.steps, args.warmup = 2, 1
    print(f"# {datetime.date.today()}, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"median of {args.steps} steps after {args.warmup} warm-up; fwd at batch {args.fwd_batch}")
    print(f"{'config':<12}{'params':>9}{'ms/step(N=9)':>15}{'ms/step(N=29)':>15}{'fwd/s(N=9)':>12}{'fwd/s(N=29)':>13}")
    for config in configs:
        params = sum(p.numel() for p in MoleculeScoreNet(num_types=4, scalars=config[0], vectors=config[1],
                                                         lmax=config[2], layers=config[3]).parameters())
        ms = [train_step_ms(config, n, types, args) for n, types in SIZES]
        rates = [forward_rate(config, n, types, args) for n, types in SIZES]
        name = "/".join(map(str, config))
        print(f"{name:<12}{params:>9}{ms[0]:>15.1f}{ms[1]:>15.1f}{rates[0]:>12.0f}{rates[1]:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
