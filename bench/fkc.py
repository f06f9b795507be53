"""Feynman–Kac correctors (MATH §7): what the weights cost against the plain sampler at equal steps,
and the error against the number of particles and steps on closed-form targets.

    python bench/fkc.py            # cost on MLP eps-nets (D = 64, K = 2, n = 512, 200 steps); error table
    python bench/fkc.py --quick    # smoke run, a few seconds

Prints ``name: value`` lines (``#`` lines are comments):

- ``fkc_cost_ratio_k2``: ``fkc_sample`` of two MLP nets over the plain reverse SDE on their score
  sum (``fusion.Ensemble(rule="sum")``), same steps and batch; the median of per-repeat ratios, the
  two run back to back in each repeat (the machine's noise cancels). ``fkc_cost_ratio_k2_min``:
  min over min.
- ``ks_<case>_n<particles>_s<steps>``: the median KS distance (over ``--seeds`` seeds) of FKC
  samples to the exact 1-D target at t_end (the product of two mixtures, ``q^3`` of a mixture),
  with extra noise σ² = 3 g²; ``ks_<case>_plain_s<steps>``: the plain score sum's.

One torch thread by default (runs share the cores; see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molfuse import GaussianMixture, fusion, sample  # noqa: E402
from molfuse.nets import build  # noqa: E402
from molfuse.schedules import VPSchedule  # noqa: E402

T_END = 1e-3


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cost(dim: int, n: int, steps: int, repeats: int) -> tuple[float, float]:
    sch = VPSchedule()
    torch.manual_seed(0)
    nets = [build("mlp", {"dim": dim, "hidden": 256, "depth": 3, "time_dim": 32}).eval() for _ in range(2)]
    summed = fusion.Ensemble(nets, rule="sum", schedule=sch)
    ratios, fk, pl = [], [], []
    with torch.no_grad():
        for r in range(repeats):
            a = _time(lambda: fusion.fkc_sample(nets, sch, (n, dim), steps=steps,
                                                generator=torch.Generator().manual_seed(r)))
            b = _time(lambda: sample(summed, sch, (n, dim), steps=steps, generator=torch.Generator().manual_seed(r)))
            ratios.append(a / b)
            fk.append(a)
            pl.append(b)
    return statistics.median(ratios), min(fk) / min(pl)


def ks(x: np.ndarray, log_density) -> float:
    xs = torch.linspace(-8.0, 8.0, 20001, dtype=torch.float64)
    lp = log_density(xs[:, None])
    cdf = torch.cumsum(torch.exp(lp - lp.max()), 0)
    cdf = (cdf / cdf[-1]).numpy()
    s = np.sort(x)
    return float(np.max(np.abs(np.arange(1, len(s) + 1) / len(s) - np.interp(s, xs.numpy(), cdf))))


CASES = {
    "product": ([GaussianMixture([[-2.0], [2.0]], [0.5, 0.5], [0.5, 0.5]),
                 GaussianMixture([[-1.5], [1.5]], [1.0, 1.0], [0.7, 0.3])], [1.0, 1.0]),
    "anneal3": ([GaussianMixture([[-2.0], [2.0]], [0.6, 0.6], [0.3, 0.7])], [3.0]),
}


def error_table(particles: list[int], steps: list[int], seeds: int) -> None:
    sch = VPSchedule()
    for name, (models, b) in CASES.items():
        exact = lambda x, models=models, b=b: sum(bi * m.log_prob(x, T_END) for bi, m in zip(b, models))  # noqa: E731
        for s in steps:
            for n in particles:
                v = [ks(fusion.fkc_sample(models, sch, (n, 1), exponents=b, steps=s, t_end=T_END, noise_ratio=3.0,
                                          dtype=torch.float64, generator=torch.Generator().manual_seed(k)).x[:, 0].numpy(),
                        exact) for k in range(seeds)]
                print(f"ks_{name}_n{n}_s{s}: {statistics.median(v):.4f}")
            v = [ks(fusion.fkc_sample(models, sch, (max(particles), 1), exponents=b, steps=s, t_end=T_END,
                                      resampling="none", final_resample=False, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(k)).x[:, 0].numpy(), exact)
                 for k in range(seeds)]
            print(f"ks_{name}_plain_s{s}: {statistics.median(v):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    quick = a.quick
    dim, n, steps, repeats = (16, 64, 30, 2) if quick else (64, 512, 200, 5)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}; cost: "
          f"D = {dim}, n = {n}, {steps} steps, {repeats} repeats; error: 1-D closed forms, σ² = 3 g²")
    med, mins = cost(dim, n, steps, repeats)
    print(f"fkc_cost_ratio_k2: {med:.3f}")
    print(f"fkc_cost_ratio_k2_min: {mins:.3f}")
    if quick:
        error_table([200], [50], a.seeds or 1)
    else:
        error_table([250, 1000, 4000], [100, 400], a.seeds or 3)


if __name__ == "__main__":
    main()
