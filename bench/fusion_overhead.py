"""Wall-time overhead of superposition and cost/accuracy of log-density tracking (MATH §3-4).

Prints ``name: value`` lines (``#`` lines are comments), all measured in one run:

- ``superposition{,_and}_overhead_k{2,4}``: time of ``superpose`` with K MLP score nets
  divided by the summed time of K independent ``sample(method="sde")`` runs (same steps,
  shape and nets). Median over ``--repeats`` interleaved (fused, singles) pairs.
- ``ito_tracking_overhead``: Itô-tracked SDE / untracked SDE.
- ``ito_vs_hutchinson_cost``, ``ito_vs_exact_divergence_cost``: probability-flow ODE
  density tracking (Hutchinson / exact divergence) over Itô tracking at equal steps.
- ``{ito,ode_hutchinson,ode_exact}_abs_err_nats``: mean |estimate − exact| of the final
  log-density on an analytic :class:`molfuse.GaussianMixture`.

Usage: ``python bench/fusion_overhead.py [--steps 200 --n 512 --dim 64 --repeats 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

import molfuse
from molfuse import GaussianMixture, VPSchedule, sample
from molfuse.convert import score_fn
from molfuse.density import ito_increment
from molfuse.fusion import and_weights, or_weights, superpose
from molfuse.fusion import stack_scores

QUICK = {"steps": 20, "n": 128, "dim": 32, "repeats": 2, "exact_dim": 4, "gm_n": 128, "profile_rounds": 0}
DEFAULT = {"steps": 200, "n": 512, "dim": 64, "repeats": 3, "exact_dim": 16, "gm_n": 512, "profile_rounds": 15}


class MLPScore(nn.Module):
    """Eps-predicting MLP: [x, sinusoidal(t)] -> 3 hidden SiLU layers of ``width`` -> (n, dim)."""

    prediction = "eps"

    def __init__(self, dim: int, schedule: VPSchedule, width: int = 256, t_feats: int = 32):
        super().__init__()
        self.schedule = schedule
        half = t_feats // 2
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), half)))
        self.net = nn.Sequential(
            nn.Linear(dim + t_feats, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        ang = t[:, None].to(x.dtype) * self.freqs.to(x.dtype)
        return self.net(torch.cat([x, torch.sin(ang), torch.cos(ang)], dim=1))


def make_mlps(k: int, dim: int, schedule: VPSchedule, seed: int, device: torch.device) -> list[MLPScore]:
    """K independently initialised, frozen nets (random weights: this is a timing benchmark)."""
    nets = []
    for i in range(k):
        torch.manual_seed(seed + 1000 * (i + 1))
        net = MLPScore(dim, schedule).to(device).eval()
        net.requires_grad_(False)
        nets.append(net)
    return nets


def make_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0
    return timed


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, timed) -> dict[str, list[float]]:
    """Warm every run up once, then time them round-robin ``repeats`` times."""
    for fn in runs.values():
        fn()
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            out[name].append(timed(fn))
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-repeat ratios (each pair ran back to back, so shared noise cancels)."""
    return statistics.median(a / b for a, b in zip(num, den))


def gen(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def bench_superposition(a, device, timed, out: dict[str, float]) -> list[str]:
    """OR / AND superposition of K nets vs K single SDE runs; all K and modes in one round-robin."""
    sched = VPSchedule()
    shape = (a.n, a.dim)
    runs = {}
    for k in (2, 4):
        nets = make_mlps(k, a.dim, sched, a.seed, device)

        def singles(nets=nets):
            for i, net in enumerate(nets):
                sample(net, sched, shape, steps=a.steps, method="sde", generator=gen(a.seed + i, device),
                       device=device)

        def fused(mode, nets=nets):
            return lambda: superpose(nets, sched, shape, mode=mode, steps=a.steps, generator=gen(a.seed, device),
                                     device=device, ito_correction=False if mode == "and" else None)

        runs.update({f"or{k}": fused("or"), f"singles{k}a": singles, f"and{k}": fused("and"), f"singles{k}b": singles})
    times = interleaved(runs, a.repeats, timed)
    notes = []
    for k in (2, 4):
        fo, fa, sa, sb = times[f"or{k}"], times[f"and{k}"], times[f"singles{k}a"], times[f"singles{k}b"]
        out[f"superposition_overhead_k{k}"] = paired_ratio(fo, sa)
        out[f"superposition_and_overhead_k{k}"] = paired_ratio(fa, sb)
        out[f"superposition_overhead_k{k}_min"] = min(fo) / min(sa)
        out[f"superposition_and_overhead_k{k}_min"] = min(fa) / min(sb)
        out[f"superposition_or_time_k{k}_s"] = statistics.median(fo)
        out[f"superposition_and_time_k{k}_s"] = statistics.median(fa)
        out[f"singles_sum_time_k{k}_s"] = statistics.median(sa + sb)
        spread = ", ".join(f"{name} {max(v) / min(v):.2f}" for name, v in
                           (("or", fo), ("and", fa), ("singles_a", sa), ("singles_b", sb)))
        notes.append(f"# k={k} run-to-run spread (max/min over repeats): {spread}")
    notes.append("# *_min: min(fused) / min(singles) over repeats, robust to contention bursts (which only add time)")
    return notes


def bench_tracking(a, device, timed, out: dict[str, float]) -> None:
    sched = VPSchedule()

    def run(net, dim, method, track, div="hutchinson"):
        return lambda: sample(net, sched, (a.n, dim), steps=a.steps, method=method, track_log_density=track,
                              divergence=div, generator=gen(a.seed, device), device=device)

    (net,) = make_mlps(1, a.dim, sched, a.seed, device)
    (net_small,) = make_mlps(1, a.exact_dim, sched, a.seed, device)
    times = interleaved({
        "sde": run(net, a.dim, "sde", False),
        "ito": run(net, a.dim, "sde", True),
        "hutch": run(net, a.dim, "ode", True, "hutchinson"),
        "ito_small": run(net_small, a.exact_dim, "sde", True),
        "exact_small": run(net_small, a.exact_dim, "ode", True, "exact"),
    }, a.repeats, timed)
    out["ito_tracking_overhead"] = paired_ratio(times["ito"], times["sde"])
    out["ito_vs_hutchinson_cost"] = paired_ratio(times["hutch"], times["ito"])
    out["ito_vs_exact_divergence_cost"] = paired_ratio(times["exact_small"], times["ito_small"])
    out["sde_untracked_time_s"] = statistics.median(times["sde"])
    out["sde_ito_time_s"] = statistics.median(times["ito"])
    out["ode_hutchinson_time_s"] = statistics.median(times["hutch"])


def profile_step(a, device, timed, rounds: int) -> list[str]:
    """Per-step cost of what ``superpose`` adds on top of K score evaluations (µs).

    Calls the library's own pieces on one (n, dim) state, round-robin, and keeps the
    minimum over rounds (the uncontended cost). Returns ``# profile`` comment lines.
    """
    sched, n, d = VPSchedule(), a.n, a.dim
    lines = []
    for k in (2, 4):
        fns = [score_fn(m, sched) for m in make_mlps(k, d, sched, a.seed, device)]
        x = torch.randn(n, d, device=device)
        s = stack_scores(fns, x, 0.5)
        noise = 0.1 * torch.randn(n, d, device=device)
        log_q = torch.randn(n, k, dtype=torch.float64, device=device)
        ell = torch.zeros(k, dtype=torch.float64, device=device)
        pieces = {
            "K score evals": lambda: [f(x, 0.5) for f in fns],
            "stack_scores": lambda: stack_scores(fns, x, 0.5),
            "or_weights": lambda: or_weights(log_q, 1.0, ell),
            "and_weights (+f64 cast)": lambda: and_weights(s.reshape(n, k, -1).to(torch.float64),
                                                           noise.to(torch.float64), 0.005, 10.0, ell),
            "mix kappa*s": lambda: (x + 10.0 * (torch.softmax(log_q, 1).to(s.dtype)[..., None] * s).sum(1)) * 0.005,
            "ito_increment (K)": lambda: ito_increment(x, noise, s, 0.005, -5.0, 10.0),
            "ito_increment (1)": lambda: ito_increment(x, noise, s[:, 0], 0.005, -5.0, 10.0),
        }
        times = interleaved({name: (lambda f=f: [f() for _ in range(5)]) for name, f in pieces.items()},
                            rounds, timed)
        cost = {name: min(v) / 5 * 1e6 for name, v in times.items()}
        base = cost["K score evals"]
        lines.append(f"# profile k={k} n={n} dim={d} (µs per step, min over {rounds} rounds; % of K score evals):")
        for name, us in cost.items():
            lines.append(f"#   {name:<24} {us:9.1f}  {100 * us / base:6.1f}%")
    return lines


def make_gm(seed: int, dim: int = 8, comps: int = 3) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(comps, dim, generator=g, dtype=torch.float64)
    diag = 0.2 + 0.8 * torch.rand(comps, dim, generator=g, dtype=torch.float64)  # variances in [0.2, 1]
    weights = torch.softmax(torch.randn(comps, generator=g, dtype=torch.float64), 0)
    return GaussianMixture(means, diag, weights=weights, schedule=VPSchedule(), name="gm8")


def bench_accuracy(a, out: dict[str, float]) -> str:
    """Runs on CPU in float64, so the error is the estimator's plus Euler's, not round-off.

    Returns a comment with the floor every estimator shares: the samplers start from
    ``log N(x; 0, I)``, not the exact ``log q_1(x)``.
    """
    gm = make_gm(a.seed)
    x1 = torch.randn(a.gm_n, gm.dim, generator=gen(a.seed, torch.device("cpu")), dtype=torch.float64)
    floor = float((molfuse.prior_log_prob(x1, gm.schedule) - gm.log_prob(x1, 1.0)).abs().mean())
    cases = {"ito": ("sde", "hutchinson"), "ode_hutchinson": ("ode", "hutchinson"), "ode_exact": ("ode", "exact")}
    for name, (method, div) in cases.items():
        res = sample(gm, gm.schedule, (a.gm_n, gm.dim), steps=a.steps, method=method, track_log_density=True,
                     divergence=div, generator=gen(a.seed, torch.device("cpu")), dtype=torch.float64)
        err = (res.log_density - gm.log_prob(res.x, res.t_end)).abs()
        out[f"{name}_abs_err_nats"] = float(err.mean())
    return (f"# accuracy floor shared by all estimators: mean |log N(x; 0, I) - log q_1(x)| = {floor:.3g} nats "
            "(the samplers start from the prior, not the exact q_1)")


def fmt(v: float) -> str:
    return f"{v:.4g}"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 200; --quick 20)")
    p.add_argument("--n", type=int, default=None, help="batch size (default 512; --quick 128)")
    p.add_argument("--dim", type=int, default=None, help="MLP data dimension (default 64; --quick 32)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, median taken (default 3; --quick 2)")
    p.add_argument("--exact-dim", type=int, default=None,
                   help="dimension for the exact-divergence timing (default 16; --quick 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own default)")
    p.add_argument("--profile-rounds", type=int, default=None,
                   help="rounds of the per-step component profile, 0 to skip (default 15; --quick 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="small smoke run (< 30 s)")
    a = p.parse_args(argv)
    for key, val in (QUICK if a.quick else DEFAULT).items():
        if getattr(a, key, None) is None:
            setattr(a, key, val)
    return a


def main(argv=None) -> None:
    a = parse(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    timed = make_timer(device)
    t0 = time.perf_counter()
    print(f"# molfuse {molfuse.__version__} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"device {device} steps {a.steps} n {a.n} dim {a.dim} repeats {a.repeats} seed {a.seed}"
          f"{' quick' if a.quick else ''}")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"# WARNING: load average {load:.2f} on {cores} cores before the run: timings are contended "
              "(with several torch threads, contention inflates times many-fold; try --threads 1)")
    print("# models: K independent MLP eps-nets (3 hidden layers x 256, SiLU, sinusoidal t), random weights")
    print("# overheads: median over repeats of (fused time / sum of K single sample(method='sde') times)")
    out: dict[str, float] = {}
    with torch.no_grad():
        notes = bench_superposition(a, device, timed, out)
        bench_tracking(a, device, timed, out)
        prof = profile_step(a, device, timed, a.profile_rounds) if a.profile_rounds > 0 else []
    print(f"# ito_vs_exact_divergence_cost is measured at dim {a.exact_dim} (exact divergence: one backward "
          f"pass per coordinate); the other tracking costs at dim {a.dim}")
    print(bench_accuracy(a, out))
    print(f"# accuracy: GaussianMixture D=8, 3 components, n={a.gm_n}, {a.steps} steps, t_end=1e-3, float64, "
          "CPU; error vs gm.log_prob(x, t_end)")
    for line in notes + prof:
        print(line)
    for name, val in out.items():
        print(f"{name}: {fmt(val)}")
    print(f"# total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
