"""Molecule training and sampling costs, measured side by side in one run (issues 10 and 25).

    python bench/molecules.py                      # the shipped bonds-in-the-state member (qm9_graph_uncond)
    python bench/molecules.py --member cloud       # the shipped point-cloud member (qm9_uncond)
    python bench/molecules.py --quick              # smoke run on untrained nets (a few seconds)

Prints ``name: value`` lines:

- ``train_step_wall_ms`` / ``train_step_cpu_ms``: one training step (forward, backward, Adam) of a
  copy of the member's net at batch 64, median over ``--train-steps``;
- ``sample_molecules_per_s``: reverse-SDE molecules per second (batch ``--n``, ``--steps`` steps);
- ``sample_molecules_per_s_shipped``: the same at the shipped workflow's steps (``--shipped-steps``);
- ``superposition_overhead_k2`` / ``_and``: ``superpose`` (OR / AND) of two copies of the net
  over the time of two single samplers, median of interleaved per-repeat ratios (target <= 1.05);
  ``superposition_and_exact_overhead_k2``: AND with the exact Itô correction (the default);
- ``ito_vs_hutchinson_cost``: ODE with a Hutchinson divergence over the Itô-tracked SDE, same
  steps (target >= 2.5);
- with a trained checkpoint, ``validity_steps_<k>`` / ``connected_steps_<k>`` (and for the graph
  member ``geometry_steps_<k>``, the share of valid molecules whose geometry the EDM distance rule
  reads back as their bonds) against sampler steps at ``--grid-power``, so users can pick their cost.

One torch thread (runs share the 2 cores; see bench/README.md).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

import molfuse as mf
from molfuse import fusion
from molfuse.spaces import draw_node_counts, node_masks

ROOT = Path(__file__).resolve().parents[1]
CKPTS = {"graph": ROOT / "models" / "molecules" / "qm9_graph_uncond", "cloud": ROOT / "models" / "molecules" / "qm9_uncond"}
CHANNELS = {"graph": 43, "cloud": 7}  # one atom's state: 3 + 4 types (+ 9 pairs x 4 bond orders)


def _model(args):
    from molfuse.training import load_model

    ckpt = CKPTS[args.member]
    if ckpt.is_dir() and not args.quick:
        return load_model(ckpt).eval().requires_grad_(False), True
    if args.member == "graph":
        from molfuse.modalities.molecules.graph_net import GraphScoreNet

        small = {"width": 16, "pair_width": 8, "layers": 2} if args.quick else {}
        return _Timing(GraphScoreNet(node_channels=7, pair_channels=4, **small).eval().requires_grad_(False)), False
    from molfuse.modalities.molecules.net import MoleculeScoreNet

    net = _Timing(MoleculeScoreNet(num_types=4, scalars=16 if args.quick else 64, vectors=4 if args.quick else 16,
                                   layers=2 if args.quick else 4).eval().requires_grad_(False))
    return net, False


class _Timing(torch.nn.Module):
    """An untrained net for timing only: its full cost, output times 0 (an untrained net's
    probability-flow ODE can blow up; eps = 0 keeps the dynamics a plain Ornstein-Uhlenbeck)."""

    prediction = "eps"

    def __init__(self, net):
        super().__init__()
        self.net, self.space, self.schedule = net, getattr(net, "space", mf.PointCloud(3)), mf.VPSchedule()
        self.node_counts = {7: 1, 8: 2, 9: 6}

    def forward(self, x, t, cond=None, mask=None):
        return 0.0 * self.net(x, t, cond, mask)


def _layout(net, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    counts = getattr(net, "card", {}).get("node_counts") or net.node_counts
    dist = {int(k): float(v) for k, v in counts.items()}
    return node_masks(draw_node_counts(dist, n, g), 9), g


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train_step(net, args, out: dict) -> None:
    """Median wall and CPU ms of one training step of a trainable copy of the member's net."""
    from molecule_graph_net_speed import graphs

    from molfuse.losses import denoising_loss

    inner = copy.deepcopy(getattr(net, "net", net)).train().requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    x0 = graphs(64, gen)
    x0 = x0 if args.member == "graph" else x0[..., :7].contiguous()
    space = getattr(inner, "space", mf.PointCloud(3))
    opt = torch.optim.Adam(inner.parameters(), lr=1e-4)
    wall, cpu = [], []
    for r in range(2 + args.train_steps):
        w, c = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            denoising_loss(inner, x0, mf.VPSchedule(), generator=gen, space=space).mean().backward()
        opt.step()
        if r >= 2:
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    out["train_step_wall_ms"] = 1e3 * statistics.median(wall)
    out["train_step_cpu_ms"] = 1e3 * statistics.median(cpu)


def overheads(net, args, out: dict) -> None:
    sched = net.schedule
    mask, _ = _layout(net, args.n, 0)
    shape = (args.n, 9, CHANNELS[args.member])

    def single(seed):
        return lambda: mf.sample(net, sched, shape, steps=args.steps, mask=mask,
                                 generator=torch.Generator().manual_seed(seed))

    def sup(mode, seed, exact=False):
        return lambda: fusion.superpose([net, net], sched, shape, mode=mode, steps=args.steps, mask=mask,
                                        ito_correction=(True if exact else False) if mode == "and" else None,
                                        generator=torch.Generator().manual_seed(seed))

    def tracked(seed):
        return lambda: mf.sample(net, sched, shape, steps=args.steps, mask=mask, track_log_density=True,
                                 generator=torch.Generator().manual_seed(seed))

    def hutch(seed):
        with torch.enable_grad():
            return mf.sample(net, sched, shape, steps=args.steps, mask=mask, method="ode", track_log_density=True,
                             divergence="hutchinson", generator=torch.Generator().manual_seed(seed))

    ratios = {"or": [], "and": [], "and_exact": [], "ito": []}
    singles = []
    for r in range(args.repeats):
        s = _timed(single(r)) + _timed(single(r + 100))
        singles.append(s)
        ratios["or"].append(_timed(sup("or", r)) / s)
        ratios["and"].append(_timed(sup("and", r)) / s)
        ratios["and_exact"].append(_timed(sup("and", r, exact=True)) / s)
        ratios["ito"].append(_timed(lambda: hutch(r)) / _timed(tracked(r)))
    out["sample_molecules_per_s"] = 2 * args.n / statistics.median(singles)
    if args.shipped_steps != args.steps:
        once = _timed(lambda: mf.sample(net, sched, shape, steps=args.shipped_steps, mask=mask,
                                        grid_power=args.grid_power, generator=torch.Generator().manual_seed(0)))
        out["sample_molecules_per_s_shipped"] = args.n / once
    out["superposition_overhead_k2"] = statistics.median(ratios["or"])
    out["superposition_and_overhead_k2"] = statistics.median(ratios["and"])
    out["superposition_and_exact_overhead_k2"] = statistics.median(ratios["and_exact"])
    out["ito_vs_hutchinson_cost"] = statistics.median(ratios["ito"])


def quality_vs_steps(net, args, out: dict) -> None:
    from molfuse.modalities.molecules import decode, molecule_table
    from molfuse.modalities.molecules.graph_data import graph_summary, judge_states

    for steps in args.quality_steps:
        mask, g = _layout(net, args.quality_n, 7)
        x = mf.sample(net, net.schedule, (args.quality_n, 9, CHANNELS[args.member]), steps=steps, mask=mask,
                      generator=g, grid_power=args.grid_power).x
        if args.member == "graph":
            summary = graph_summary(judge_states(x.numpy(), mask.numpy(), net.normalisation)[0])
            out[f"validity_steps_{steps}"] = summary["validity"]
            out[f"connected_steps_{steps}"] = summary["connected"]
            out[f"geometry_steps_{steps}"] = summary["geometry_agrees"]
            continue
        types, pos = decode(x.numpy(), mask.numpy(), net.normalisation)
        table, _ = molecule_table(types, pos, net.normalisation["alphabet"])
        out[f"validity_steps_{steps}"] = float(table["valid"].mean())
        out[f"connected_steps_{steps}"] = float((table["fragments"] == 1).mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--member", choices=sorted(CKPTS), default="graph")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quality-n", type=int, default=300)
    p.add_argument("--quality-steps", type=int, nargs="*", default=[50, 100, 250, 500])
    p.add_argument("--shipped-steps", type=int, default=250, help="the shipped workflows' sampler steps")
    p.add_argument("--grid-power", type=float, default=None,
                   help="time-grid power (default: 3 for the graph member, as its workflows; 1 for the point cloud)")
    p.add_argument("--train-steps", type=int, default=10)
    a = p.parse_args(argv)
    if a.grid_power is None:
        a.grid_power = 3.0 if a.member == "graph" else 1.0
    if a.quick:
        a.n, a.steps, a.repeats, a.quality_steps, a.shipped_steps, a.train_steps = 8, 20, 1, [], 20, 2
    torch.set_num_threads(1)
    print("# one torch thread (runs share the cores)")
    net, trained = _model(a)
    ckpt = CKPTS[a.member]
    print(f"# net: {'shipped ' + str(ckpt.relative_to(ROOT)) if trained else 'untrained'} ({a.member} member); "
          f"batch {a.n}, {a.steps} steps, {a.repeats} repeats; grid power {a.grid_power:g}")
    out: dict[str, float] = {}
    train_step(net, a, out)
    with torch.no_grad():
        overheads(net, a, out)
        if trained:
            quality_vs_steps(net, a, out)
    for k, v in out.items():
        print(f"{k}: {v:.4g}")


if __name__ == "__main__":
    main()
