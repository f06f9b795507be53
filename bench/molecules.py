"""Molecule sampling costs, measured side by side in one run (issue 10, section 6).

    python bench/molecules.py                      # the shipped unconditional model if present
    python bench/molecules.py --quick              # smoke run (a few seconds)

Prints ``name: value`` lines:

- ``sample_molecules_per_s``: reverse-SDE molecules per second (batch ``--n``, ``--steps`` steps);
- ``superposition_overhead_k2`` / ``_and``: ``superpose`` (OR / AND) of two copies of the net
  over the time of two single samplers, median of interleaved per-repeat ratios (target <= 1.10);
- ``ito_vs_hutchinson_cost``: ODE with a Hutchinson divergence over the Itô-tracked SDE, same
  steps (target >= 2.5);
- with a trained checkpoint, ``validity_steps_<k>`` / ``connected_steps_<k>``: validity and the
  share of one-fragment molecules against sampler steps, so users can pick their cost.

One torch thread (runs share the 2 cores; see bench/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import molfuse as mf
from molfuse import fusion
from molfuse.spaces import draw_node_counts, node_masks

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "models" / "molecules" / "qm9_uncond"


def _model(args):
    from molfuse.training import load_model

    if CKPT.is_dir() and not args.quick:
        return load_model(CKPT), True
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
        self.net, self.space, self.schedule = net, mf.PointCloud(3), mf.VPSchedule()
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


def overheads(net, args, out: dict) -> None:
    sched = net.schedule
    mask, _ = _layout(net, args.n, 0)
    shape = (args.n, 9, 7)

    def single(seed):
        return lambda: mf.sample(net, sched, shape, steps=args.steps, mask=mask,
                                 generator=torch.Generator().manual_seed(seed))

    def sup(mode, seed):
        return lambda: fusion.superpose([net, net], sched, shape, mode=mode, steps=args.steps, mask=mask,
                                        ito_correction=False if mode == "and" else None,
                                        generator=torch.Generator().manual_seed(seed))

    def tracked(seed):
        return lambda: mf.sample(net, sched, shape, steps=args.steps, mask=mask, track_log_density=True,
                                 generator=torch.Generator().manual_seed(seed))

    def hutch(seed):
        with torch.enable_grad():
            return mf.sample(net, sched, shape, steps=args.steps, mask=mask, method="ode", track_log_density=True,
                             divergence="hutchinson", generator=torch.Generator().manual_seed(seed))

    ratios = {"or": [], "and": [], "ito": []}
    singles = []
    for r in range(args.repeats):
        s = _timed(single(r)) + _timed(single(r + 100))
        singles.append(s)
        ratios["or"].append(_timed(sup("or", r)) / s)
        ratios["and"].append(_timed(sup("and", r)) / s)
        ratios["ito"].append(_timed(lambda: hutch(r)) / _timed(tracked(r)))
    out["sample_molecules_per_s"] = 2 * args.n / statistics.median(singles)
    out["superposition_overhead_k2"] = statistics.median(ratios["or"])
    out["superposition_and_overhead_k2"] = statistics.median(ratios["and"])
    out["ito_vs_hutchinson_cost"] = statistics.median(ratios["ito"])


def quality_vs_steps(net, args, out: dict) -> None:
    from molfuse.modalities.molecules import decode, molecule_table

    for steps in args.quality_steps:
        mask, g = _layout(net, args.quality_n, 7)
        x = mf.sample(net, net.schedule, (args.quality_n, 9, 7), steps=steps, mask=mask, generator=g).x
        types, pos = decode(x.numpy(), mask.numpy(), net.normalisation)
        table, _ = molecule_table(types, pos, net.normalisation["alphabet"])
        out[f"validity_steps_{steps}"] = float(table["valid"].mean())
        out[f"connected_steps_{steps}"] = float((table["fragments"] == 1).mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quality-n", type=int, default=300)
    p.add_argument("--quality-steps", type=int, nargs="*", default=[50, 100, 250, 500])
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.steps, a.repeats, a.quality_steps = 8, 20, 1, []
    torch.set_num_threads(1)
    print("# one torch thread (runs share the cores)")
    net, trained = _model(a)
    print(f"# net: {'shipped ' + str(CKPT.relative_to(ROOT)) if trained else 'untrained, shipped size'}; "
          f"batch {a.n}, {a.steps} steps, {a.repeats} repeats")
    out: dict[str, float] = {}
    with torch.no_grad():
        overheads(net, a, out)
        if trained:
            quality_vs_steps(net, a, out)
    for k, v in out.items():
        print(f"{k}: {v:.4g}")


if __name__ == "__main__":
    main()
