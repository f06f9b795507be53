"""A campaign's chunks on 1 and 2 local Dask workers against the serial run, measured side by side.

    python bench/scale.py            # SuperDiff OR of digits_lo + digits_hi: 64 images, 100 SDE steps, 3 repeats
    python bench/scale.py --quick    # smoke run: a 2-D workflow, a few seconds per path

Every repeat runs the same workflow serially, on ``local:1`` and on ``local:2`` (one torch thread per
worker) into fresh folders, back to back, and checks that the three give the same samples. Prints
``name: value`` lines (``#`` lines are comments):

- ``cluster_start_s_{1,2}``: seconds to start and stop a local cluster of 1 / 2 workers (median);
- ``chunk_compute_s``: median seconds of one chunk's own draw (from the chunk files);
- ``phase_s_{serial,local1,local2}``: wall seconds of the chunk phase (median over repeats; the
  local paths include starting their cluster and sending the members once per worker);
- ``speedup_local2_vs_serial``, ``speedup_local2_vs_local1``: medians of per-repeat ratios;
- ``overhead_per_chunk_s_local{1,2}``: (phase − cluster start − compute / workers) / (chunks /
  workers): what the engine adds to each chunk (scheduling, results, members' transfer);
- ``overhead_fraction_local{1,2}``: that over the chunk's own compute.

On a machine with other work the local:2 speed-up is bounded by the free cores (2 here).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molfuse.campaign import run_workflow  # noqa: E402


def workflow(quick: bool, out: Path, chunk: int) -> dict:
    if quick:
        return {"name": "scale_quick", "seed": 0, "output": str(out),
                "models": {"a": {"kind": "gaussian_mixture", "means": [[-2.0, 0.0]], "covs": [0.5]},
                           "b": {"kind": "gaussian_mixture", "means": [[2.0, 0.0]], "covs": [0.5]}},
                "n_samples": 64, "sampler": {"steps": 50, "chunk_size": chunk, "threads": 1},
                "methods": [{"name": "or", "operator": "superpose", "models": ["a", "b"]}]}
    return {"name": "scale_digits_or", "seed": 0, "output": str(out),
            "schedule": {"kind": "vp", "beta_min": 0.1, "beta_max": 20.0},
            "models": {"lo": {"kind": "checkpoint", "path": str(ROOT / "models/images/digits_lo")},
                       "hi": {"kind": "checkpoint", "path": str(ROOT / "models/images/digits_hi")}},
            "n_samples": 64, "sampler": {"steps": 100, "t_end": 1.0e-3, "chunk_size": chunk, "threads": 1},
            "evaluation": {"target_classes": {c: 0.1 for c in range(10)}, "judge": False, "memorisation": False},
            "methods": [{"name": "or", "operator": "superpose", "models": ["lo", "hi"]}]}


def cluster_start(n: int) -> float:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster):
        pass
    return time.perf_counter() - t0


def one_run(wf: dict, name: str, executor: str) -> tuple[float, list[float], Path]:
    res = run_workflow({**wf, "run_name": name}, progress=False, verbose=False, executor=executor)
    walls = []
    for f in sorted((res.folder / "samples" / "chunks").rglob("*.npz")):
        with np.load(f) as z:
            walls.append(float(z["wall_time_s"]))
    return res.provenance["executor"]["chunk_phase_s"], walls, res.folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--chunk", type=int, default=8, help="samples per chunk (64 samples in all)")
    a = p.parse_args()
    repeats = a.repeats or (1 if a.quick else 3)
    import torch

    print(f"# torch {torch.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{'quick 2-D' if a.quick else 'digits OR'} workflow, 64 samples in chunks of {a.chunk}, "
          f"{repeats} repeat(s), 1 torch thread per worker")
    starts = {n: statistics.median(cluster_start(n) for _ in range(repeats)) for n in (1, 2)}
    phases = {k: [] for k in ("serial", "local1", "local2")}
    computes = {k: [] for k in phases}
    with tempfile.TemporaryDirectory() as tmp:
        wf = workflow(a.quick, Path(tmp), a.chunk)
        for r in range(repeats):
            folders = {}
            for key, ex in (("serial", "serial"), ("local1", "local:1"), ("local2", "local:2")):
                phase, walls, folders[key] = one_run(wf, f"{key}_{r}", ex)
                phases[key].append(phase)
                computes[key].append(walls)
            x = [np.load(f / "samples" / "or.npy") for f in folders.values()]
            if not all(np.array_equal(x[0], y) for y in x[1:]):
                sys.exit("the executors gave different samples")
    n_chunks = len(computes["serial"][0])
    chunk_s = statistics.median(w for ws in computes["serial"] for w in ws)
    print(f"cluster_start_s_1: {starts[1]:.3f}")
    print(f"cluster_start_s_2: {starts[2]:.3f}")
    print(f"chunk_compute_s: {chunk_s:.4f}")
    for k in phases:
        print(f"phase_s_{k}: {statistics.median(phases[k]):.3f}")
    print(f"speedup_local2_vs_serial: {statistics.median(s / l for s, l in zip(phases['serial'], phases['local2'])):.3f}")
    print(f"speedup_local2_vs_local1: {statistics.median(s / l for s, l in zip(phases['local1'], phases['local2'])):.3f}")
    for key, n in (("local1", 1), ("local2", 2)):
        per = [(ph - starts[n] - sum(ws) / n) / (n_chunks / n) for ph, ws in zip(phases[key], computes[key])]
        over = statistics.median(per)
        print(f"overhead_per_chunk_s_{key}: {over:.4f}")
        print(f"overhead_fraction_{key}: {over / chunk_s:.4f}")
    print(f"# {n_chunks} chunks; the serial and both local paths gave the same samples in every repeat")


if __name__ == "__main__":
    main()
