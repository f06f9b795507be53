"""A campaign's chunks on 1 and 2 local Dask workers against the serial run, measured side by side.

    python bench/scale.py                 # SuperDiff OR of digits_lo + digits_hi: 64 images, 100 SDE steps, 3 repeats
    python bench/scale.py --nanny-default # also 2 workers started by Dask's nanny as it comes (MALLOC_TRIM_THRESHOLD_ set)
    python bench/scale.py --quick         # smoke run: a 2-D workflow, a few seconds per path

Every repeat runs the same workflow serially, on ``local:1`` and on ``local:2`` (one torch thread per
worker) into fresh folders, back to back (the order reversed every other repeat), and checks that
the paths give the same samples. Prints ``name: value`` lines (``#`` lines are comments), medians
over the repeats:

- ``chunk_compute_s_<path>``: seconds of one chunk's own draw, where it was drawn (from the chunk
  files): a worker that draws slower than this process shows here;
- ``engine_start_s_<path>`` / ``engine_stop_s_<path>``: seconds to start / close the local cluster;
- ``phase_s_<path>``: wall seconds of the chunk phase, cluster start and close included;
- ``draw_s_<path>``: the phase without the cluster's start and close (what grows with the campaign);
- ``speedup_local2_vs_serial`` (phases), ``draw_speedup_local2_vs_serial`` (draws: the rate at which
  chunks are drawn), ``draw_speedup_local2_vs_local1``: medians of per-repeat ratios;
- ``overhead_per_chunk_s_<path>``: (draw − compute / workers) / (chunks / workers): what the engine
  adds to each chunk (scheduling, results, members' transfer); ``overhead_fraction_<path>``: that over
  the chunk's own compute;
- ``parallel_ceiling_2proc``: what this machine allows at all, without Dask: the same forward passes
  (the digits UNet, batch 8, one thread) in two plain processes at once against one alone,
  2 × alone / slower of the two.

The local:2 speed-up is bounded by the free cores (2 here): run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molfuse.campaign import run_workflow  # noqa: E402


def workflow(quick: bool, out: Path, chunk: int, n: int) -> dict:
    if quick:
        return {"name": "scale_quick", "seed": 0, "output": str(out),
                "models": {"a": {"kind": "gaussian_mixture", "means": [[-2.0, 0.0]], "covs": [0.5]},
                           "b": {"kind": "gaussian_mixture", "means": [[2.0, 0.0]], "covs": [0.5]}},
                "n_samples": n, "sampler": {"steps": 50, "chunk_size": chunk, "threads": 1},
                "methods": [{"name": "or", "operator": "superpose", "models": ["a", "b"]}]}
    return {"name": "scale_digits_or", "seed": 0, "output": str(out),
            "schedule": {"kind": "vp", "beta_min": 0.1, "beta_max": 20.0},
            "models": {"lo": {"kind": "checkpoint", "path": str(ROOT / "models/images/digits_lo")},
                       "hi": {"kind": "checkpoint", "path": str(ROOT / "models/images/digits_hi")}},
            "n_samples": n, "sampler": {"steps": 100, "t_end": 1.0e-3, "chunk_size": chunk, "threads": 1},
            "evaluation": {"target_classes": {c: 0.1 for c in range(10)}, "judge": False, "memorisation": False},
            "methods": [{"name": "or", "operator": "superpose", "models": ["lo", "hi"]}]}


def one_run(wf: dict, name: str, executor: str) -> dict:
    """The chunk phase of one run: its wall time, the engine's start / close, each chunk's own draw."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MALLOC_TRIM_THRESHOLD_")  # the --nanny-default path, on purpose
        res = run_workflow({**wf, "run_name": name}, progress=False, verbose=False, executor=executor)
    walls = []
    for f in sorted((res.folder / "samples" / "chunks").rglob("*.npz")):
        with np.load(f) as z:
            walls.append(float(z["wall_time_s"]))
    ex = res.provenance["executor"]
    return {"phase": ex["chunk_phase_s"], "start": ex["engine_start_s"], "stop": ex["engine_stop_s"],
            "walls": walls, "folder": res.folder}


def forward_loop(quick: bool) -> float:
    """Seconds of 60 forward passes of the digits UNet at batch 8 on one torch thread (quick: a matmul loop)."""
    import time

    import torch

    torch.set_num_threads(1)
    if quick:
        a = torch.randn(256, 256)
        t0 = time.perf_counter()
        for _ in range(400):
            a = torch.tanh(a @ a)
        return time.perf_counter() - t0
    from molfuse.training.checkpoints import load_model

    net = load_model(ROOT / "models/images/digits_lo").eval()
    x, t = torch.randn(8, 1, 28, 28), torch.full((8,), 0.5)
    with torch.no_grad():
        net(x, t)
        t0 = time.perf_counter()
        for _ in range(60):
            net(x, t)
    return time.perf_counter() - t0


def parallel_ceiling(pool: Any, quick: bool) -> float:
    """2 × (one process alone) / (the slower of two at once) in a pool of 2 plain processes: the
    speed-up two processes can get on this machine now, whatever runs them."""
    alone = pool.apply(forward_loop, (quick,))
    both = pool.map(forward_loop, [quick, quick], chunksize=1)
    return 2 * alone / max(both)


def nanny_default_cluster(stack: ExitStack) -> str:
    """The address of 2 workers started by Dask's nanny with its own environment (the path before the fix)."""
    from distributed import LocalCluster

    cluster = stack.enter_context(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=logging.ERROR))
    return cluster.scheduler_address


def med(xs) -> float:
    return statistics.median(list(xs))


def report(runs: dict[str, list[dict]], workers: dict[str, int]) -> None:
    """The ``name: value`` lines of the module docstring."""
    draw = {k: [r["phase"] - r["start"] - r["stop"] for r in rs] for k, rs in runs.items()}
    for k, rs in runs.items():
        print(f"chunk_compute_s_{k}: {med(w for r in rs for w in r['walls']):.4f}")
    for k in ("local1", "local2"):
        print(f"engine_start_s_{k}: {med(r['start'] for r in runs[k]):.3f}")
        print(f"engine_stop_s_{k}: {med(r['stop'] for r in runs[k]):.3f}")
    for k, rs in runs.items():
        print(f"phase_s_{k}: {med(r['phase'] for r in rs):.3f}")
        print(f"draw_s_{k}: {med(draw[k]):.3f}")
    ser, l1, l2 = runs["serial"], runs["local1"], runs["local2"]
    print(f"speedup_local2_vs_serial: {med(s['phase'] / r['phase'] for s, r in zip(ser, l2)):.3f}")
    print(f"draw_speedup_local2_vs_serial: {med(s / r for s, r in zip(draw['serial'], draw['local2'])):.3f}")
    print(f"draw_speedup_local2_vs_local1: {med(s / r for s, r in zip(draw['local1'], draw['local2'])):.3f}")
    if "local2_nanny" in runs:
        print(f"draw_speedup_local2_nanny_vs_serial: "
              f"{med(s / r for s, r in zip(draw['serial'], draw['local2_nanny'])):.3f}")
    chunk_s = med(w for r in ser for w in r["walls"])
    for k, n in workers.items():
        per = [(d - sum(r["walls"]) / n) / (len(r["walls"]) / n) for d, r in zip(draw[k], runs[k])]
        print(f"overhead_per_chunk_s_{k}: {med(per):.4f}")
        print(f"overhead_fraction_{k}: {med(per) / chunk_s:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--chunk", type=int, default=8, help="samples per chunk")
    p.add_argument("--nanny-default", action="store_true",
                   help="also draw on 2 workers started by Dask's nanny with its own environment")
    a = p.parse_args()
    repeats = a.repeats or (1 if a.quick else 3)
    import torch

    print(f"# torch {torch.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the start; "
          f"{'quick 2-D' if a.quick else 'digits OR'} workflow, {a.samples} samples in chunks of {a.chunk}, "
          f"{repeats} repeat(s), 1 torch thread per worker")
    workers = {"local1": 1, "local2": 2}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        # started first, before any nanny has touched this process's environment
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(2))
        pool.map(forward_loop, [a.quick, a.quick], chunksize=1)  # both started and warm
        ceilings = []
        paths = {"serial": "serial", "local1": "local:1", "local2": "local:2"}
        if a.nanny_default:
            paths["local2_nanny"] = nanny_default_cluster(stack)
            workers["local2_nanny"] = 2
        wf = workflow(a.quick, Path(tmp), a.chunk, a.samples)
        runs: dict[str, list[dict]] = {k: [] for k in paths}
        for r in range(repeats):
            ceilings.append(parallel_ceiling(pool, a.quick))
            for key in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                runs[key].append(one_run(wf, f"{key}_{r}", paths[key]))
            x = [np.load(runs[k][-1]["folder"] / "samples" / "or.npy") for k in paths]
            if not all(np.array_equal(x[0], y) for y in x[1:]):
                sys.exit("the executors gave different samples")
    report(runs, workers)
    print(f"parallel_ceiling_2proc: {med(ceilings):.3f}")
    print(f"# {len(runs['serial'][0]['walls'])} chunks; every path gave the same samples in every repeat; "
          f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
