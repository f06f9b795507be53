"""Training-step and forward speed of the SE(3) protein eps-network (``protein_se3``).

For each configuration (scalars / vectors / layers / chain_neighbors + spatial_neighbors) times one
training step (forward + backward + Adam step of :func:`molfuse.losses.denoising_loss` on the
zero-CoM point-cloud space, MATH §6) at batch 32 for Cα chains of L = 64 and L = 128 residues,
all real (random walks of 3.8 Å steps in nm, 0.5 Å jitter). Reports the median wall-clock and
CPU time over ``--steps`` steps after ``--warmup`` steps, and the samples/s of a no-grad forward
pass at batch 64. The last configuration ("full") is the fully connected graph (K = L - 1
neighbours per residue).

Usage: ``python bench/protein_net_speed.py [--threads 1 --steps 8 --warmup 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from typing import Callable

import torch

from molfuse import PointCloud, VPSchedule
from molfuse.losses import denoising_loss

# (name, config): scalars / vectors / layers / chain + spatial neighbours
CONFIGS = [
    ("16/4/3/2+6", dict(scalars=16, vectors=4, layers=3, chain_neighbors=2, spatial_neighbors=6)),
    ("32/8/4/3+10", dict(scalars=32, vectors=8, layers=4, chain_neighbors=3, spatial_neighbors=10)),
    ("32/8/4/3+26", dict(scalars=32, vectors=8, layers=4, chain_neighbors=3, spatial_neighbors=26)),
    ("64/16/4/3+10", dict(scalars=64, vectors=16, layers=4, chain_neighbors=3, spatial_neighbors=10)),
    ("32/8/4/full", dict(scalars=32, vectors=8, layers=4, chain_neighbors=3, spatial_neighbors=1000)),
]
LENGTHS = (64, 128)


def chains(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random Cα walks (batch, n, 3) in nm: 3.8 Å steps, 0.5 Å jitter, centred."""
    steps = torch.randn(batch, n, 3, generator=gen)
    pos = torch.cumsum(0.38 * steps / steps.norm(dim=-1, keepdim=True), 1)
    pos = pos + 0.05 * torch.randn(pos.shape, generator=gen)
    return pos - pos.mean(1, keepdim=True)


def median_ms(fn: Callable[[], None], steps: int, warmup: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (ms) of ``fn`` over ``steps`` calls
    after ``warmup`` calls. On a shared machine the CPU time is the steadier of the two."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def train_step_ms(config: dict, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """Median wall and CPU ms of forward + backward + Adam at batch ``args.batch`` for chains of ``n`` residues."""
    from molfuse.modalities.proteins.net import ProteinScoreNet  # needs e3nn; median_ms does not

    net = ProteinScoreNet(**config)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x0, schedule, space = chains(args.batch, n, gen), VPSchedule(), PointCloud(3)
    mask = torch.ones(args.batch, n, dtype=torch.bool)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        denoising_loss(net, x0, schedule, generator=gen, mask=mask, space=space).mean().backward()
        opt.step()

    return median_ms(step, args.steps, args.warmup)


@torch.no_grad()
def forward_rate(config: dict, n: int, args: argparse.Namespace) -> float:
    """Samples/s of a no-grad forward pass at batch ``args.fwd_batch``."""
    from molfuse.modalities.proteins.net import ProteinScoreNet

    net = ProteinScoreNet(**config).eval()
    x = chains(args.fwd_batch, n, torch.Generator().manual_seed(1))
    t = torch.rand(args.fwd_batch)
    wall, _ = median_ms(lambda: net(x, t), max(3, args.steps // 2), 1)
    return args.fwd_batch / (wall / 1e3)


def speed_args(description: str, configs: list) -> tuple[argparse.Namespace, list]:
    """The net-speed scripts' shared options, threads set, ``--quick`` applied, header printed."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--fwd-batch", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 steps, first configuration only")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.warmup = 2, 1
    print(f"# {datetime.date.today()}, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"median of {args.steps} steps after {args.warmup} warm-up; fwd at batch {args.fwd_batch}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("# ms/step: wall / CPU time of this process; fwd/s: samples per wall-clock second")
    return args, configs[:1] if args.quick else configs


def main() -> None:
    args, configs = speed_args(__doc__.splitlines()[0], CONFIGS)
    from molfuse.modalities.proteins.net import ProteinScoreNet

    print(f"{'config':<14}{'params':>8}{'K(64)':>7}{'K(128)':>7}{'ms/step(64)':>14}{'ms/step(128)':>15}"
          f"{'fwd/s(64)':>11}{'fwd/s(128)':>12}")
    for name, config in configs:
        params = sum(p.numel() for p in ProteinScoreNet(**config).parameters())
        ks = [min(2 * config["chain_neighbors"] + config["spatial_neighbors"], n - 1) for n in LENGTHS]
        ms = [f"{w:.0f} / {c:.0f}" for w, c in (train_step_ms(config, n, args) for n in LENGTHS)]
        rates = [forward_rate(config, n, args) for n in LENGTHS]
        print(f"{name:<14}{params:>8}{ks[0]:>7}{ks[1]:>7}{ms[0]:>14}{ms[1]:>15}{rates[0]:>11.0f}{rates[1]:>12.0f}",
              flush=True)


if __name__ == "__main__":
    main()
