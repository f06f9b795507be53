"""Feynman–Kac correctors (MATH §7): what the weights cost against the plain sampler at equal steps,
what steering by a potential adds (MATH §8), and the error against the number of particles and
steps on closed-form targets.

    python bench/fkc.py            # cost on MLP eps-nets (D = 64, K = 2, n = 512, 200 steps); error table
    python bench/fkc.py --quick    # smoke run, a few seconds
    python bench/fkc.py --cost-only   # the cost ratios only (about 4 min on a shared core)

Prints ``name: value`` lines (``#`` lines are comments):

- ``fkc_cost_ratio_k2``: ``fkc_sample`` of two MLP nets over the plain reverse SDE on their score
  sum (``fusion.Ensemble(rule="sum")``), same steps and batch; the median of per-repeat ratios, the
  two run back to back in each repeat (the machine's noise cancels). ``fkc_cost_ratio_k2_min``:
  min over min.
- ``steer_cost_ratio_k1``: ``fkc_sample`` of one MLP net steered by a pairwise potential (the
  64 coordinates as 16 points in 4-D, ``Σ relu(1 − d_ij)²``, a clash-like energy on x̂0 each step)
  over the plain reverse SDE of that net; ``steer_over_fkc_k2``: the steered FKC product of two nets
  over the unsteered one. Medians of per-repeat ratios, the two run back to back in alternating
  order; ``_min``: min over min.
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


def clash_like(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) ``Σ_{i<j} relu(1 − d_ij)²`` over the D coordinates read as D / 4 points in 4-D."""
    p = x.reshape(x.shape[0], -1, 4)
    d = torch.cdist(p, p)
    return torch.relu(1.0 - d).pow(2).triu(1).flatten(1).sum(1)


def _ratio(first, second, repeats: int) -> tuple[float, float]:
    """Median of per-repeat time ratios first / second, run back to back in alternating order; min / min."""
    ratios, a_s, b_s = [], [], []
    for r in range(repeats):
        if r % 2:
            b, a = _time(lambda: second(r)), _time(lambda: first(r))
        else:
            a, b = _time(lambda: first(r)), _time(lambda: second(r))
        ratios.append(a / b)
        a_s.append(a)
        b_s.append(b)
    return statistics.median(ratios), min(a_s) / min(b_s)


def steering_cost(dim: int, n: int, steps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Steered against unsteered samplers on the same MLP nets (MATH §8 costs one potential call per step)."""
    sch = VPSchedule()
    torch.manual_seed(0)
    nets = [build("mlp", {"dim": dim, "hidden": 256, "depth": 3, "time_dim": 32}).eval() for _ in range(2)]
    g = lambda r: torch.Generator().manual_seed(r)  # noqa: E731
    fkc = lambda members, r, **kw: fusion.fkc_sample(members, sch, (n, dim), steps=steps, generator=g(r), **kw)  # noqa: E731
    with torch.no_grad():
        one = _ratio(lambda r: fkc(nets[:1], r, potential=clash_like),
                     lambda r: sample(nets[0], sch, (n, dim), steps=steps, generator=g(r)), repeats)
        two = _ratio(lambda r: fkc(nets, r, potential=clash_like), lambda r: fkc(nets, r), repeats)
    return {"steer_cost_ratio_k1": one, "steer_over_fkc_k2": two}


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
    p.add_argument("--cost-only", action="store_true", help="skip the KS error table")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    quick = a.quick
    dim, n, steps, repeats = (16, 64, 30, 2) if quick else (64, 512, 200, 5)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}; cost: "
          f"D = {dim}, n = {n}, {steps} steps, {repeats} repeats; error: 1-D closed forms, σ² = 3 g²")
    med, mins = cost(dim, n, steps, repeats)
    print(f"fkc_cost_ratio_k2: {med:.3f}")
    print(f"fkc_cost_ratio_k2_min: {mins:.3f}")
    for name, (med, mins) in steering_cost(dim, n, steps, repeats).items():
        print(f"{name}: {med:.3f}")
        print(f"{name}_min: {mins:.3f}")
    if a.cost_only:
        return
    if quick:
        error_table([200], [50], a.seeds or 1)
    else:
        error_table([250, 1000, 4000], [100, 400], a.seeds or 3)


if __name__ == "__main__":
    main()
