"""Training-step speed of the molecule-graph EGNN (``molecule_graph_egnn``) beside the point-cloud e3nn net.

One training step = forward + backward + Adam step of :func:`molfuse.losses.denoising_loss` at batch
``--batch`` (64) on QM9-like heavy-atom molecules, N = 9 atoms all real, 4 atom types:

- ``molecule_graph_egnn`` on :class:`~molfuse.spaces.MoleculeGraph` (3 + 4 node channels, 4 bond
  channels per pair: states (64, 9, 7 + 9·4));
- ``molecule_e3nn`` (the shipped point-cloud member's net) on the point cloud (64, 9, 3 + 4).

The nets are timed in turns (one step of each per round) so that load from other jobs on the
machine hits them alike; reported: median wall ms and median CPU ms of this process per step.

Usage: ``python bench/molecule_graph_net_speed.py [--threads 1 --steps 10 --warmup 3] [--quick]``.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from protein_net_speed import speed_args

from molfuse import MoleculeGraph, PointCloud, VPSchedule
from molfuse.losses import denoising_loss
from molfuse.modalities.molecules.graph_net import GraphScoreNet
from molfuse.modalities.molecules.net import MoleculeScoreNet
from molfuse.pairs import pack

N, TYPES, BONDS = 9, 4, 4
CONFIGS = [  # (name, architecture, config)
    ("egnn 64/32/4 (default)", "graph", {"width": 64, "pair_width": 32, "layers": 4}),
    ("egnn 32/16/3", "graph", {"width": 32, "pair_width": 16, "layers": 3}),
    ("egnn 128/64/6", "graph", {"width": 128, "pair_width": 64, "layers": 6}),
    ("e3nn 32/8/1/3 (default)", "cloud", {"scalars": 32, "vectors": 8, "lmax": 1, "layers": 3}),
    ("e3nn 64/16/1/4 (shipped)", "cloud", {"scalars": 64, "vectors": 16, "lmax": 1, "layers": 4}),
]


def graphs(batch: int, gen: torch.Generator) -> torch.Tensor:
    """Random molecule-graph states (batch, N, 7 + N·4): centred positions (~1.5 Å), type and bond one-hots."""
    pos = 1.5 * torch.randn(batch, N, 3, generator=gen)
    types = torch.nn.functional.one_hot(torch.randint(TYPES, (batch, N), generator=gen), TYPES).float()
    bonds = torch.randint(BONDS, (batch, N, N), generator=gen).triu(1)
    pairs = torch.nn.functional.one_hot(bonds + bonds.transpose(1, 2), BONDS).float()
    return MoleculeGraph(3 + TYPES, BONDS).project(pack(pos, types, pairs))


def step_fn(kind: str, config: dict, batch: int) -> tuple[Callable[[], None], int]:
    """A closure running one training step, and the parameter count."""
    gen = torch.Generator().manual_seed(0)
    if kind == "graph":
        net = GraphScoreNet(node_channels=3 + TYPES, pair_channels=BONDS, **config)
        x0, space = graphs(batch, gen), net.space
    else:
        net = MoleculeScoreNet(num_types=TYPES, **config)
        x0, space = graphs(batch, gen)[..., :3 + TYPES].contiguous(), PointCloud(3)
    opt, schedule = torch.optim.Adam(net.parameters(), lr=1e-4), VPSchedule()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        denoising_loss(net, x0, schedule, generator=gen, space=space).mean().backward()
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def main() -> None:
    args, configs = speed_args(__doc__.splitlines()[0], CONFIGS)
    if args.quick:
        configs = [CONFIGS[0], CONFIGS[3]]
    steps = [step_fn(kind, config, args.batch) for _, kind, config in configs]
    wall: list[list[float]] = [[] for _ in configs]
    cpu: list[list[float]] = [[] for _ in configs]
    for r in range(args.warmup + args.steps):
        for k, (step, _) in enumerate(steps):
            w, c = time.perf_counter(), time.process_time()
            step()
            if r >= args.warmup:
                wall[k].append(time.perf_counter() - w)
                cpu[k].append(time.process_time() - c)
    print(f"{'net':<26}{'params':>9}{'ms/step wall':>14}{'ms/step CPU':>13}")
    for (name, _, _), (_, params), w, c in zip(configs, steps, wall, cpu):
        print(f"{name:<26}{params:>9}{1e3 * statistics.median(w):>14.1f}{1e3 * statistics.median(c):>13.1f}")


if __name__ == "__main__":
    main()
