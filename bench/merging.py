"""Cost of a distillation merge (DMM, MATH §5) at sampling time: one style student against the K
teachers it replaces, measured side by side in one run.

    python bench/merging.py            # the shipped students that exist (images, molecules, proteins)
    python bench/merging.py --quick    # smoke run: tiny fresh nets, a few seconds

Prints ``name: value`` lines (``#`` lines are comments), per modality ``<m>``:

- ``params_student_<m>``, ``params_teachers_<m>`` and ``params_ratio_<m>`` (student / all teachers);
- ``sample_student_s_<m>``: median wall seconds of one reverse-SDE run of the student in one style
  (batch ``--batch``, ``--steps`` steps);
- ``cost_ratio_ensemble_<m>``: the K-teacher mean ensemble (K network calls per step) over the
  student, and ``cost_ratio_or_<m>``: SuperDiff OR of the K teachers over the student — medians of
  per-repeat ratios, each repeat running the candidates back to back (the machine's noise cancels).

One torch thread by default (runs share the cores; see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import molfuse as mf
from molfuse import fusion
from molfuse.models import bind

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = {"images": "models/images/dmm_shards", "molecules": "models/molecules/dmm_cyclic_acyclic",
            "proteins": "models/proteins/dmm_helix_strand"}


def _shipped(path: str) -> tuple[object, list, tuple, torch.Tensor | None] | None:
    """The student, its teachers, a sample shape and mask, or None when the student is not shipped."""
    from molfuse.training.checkpoints import load_model

    if not (ROOT / path / "card.json").is_file():
        return None
    student = load_model(ROOT / path)
    teachers = [load_model(ROOT / t["path"]) for t in student.card["objective"]["teachers"]]
    shape = tuple(student.card["shape"])
    counts = student.card.get("node_counts")
    mask = None
    if counts:  # every sample at the most frequent size
        n = max(counts, key=lambda k: counts[k])
        mask = torch.arange(shape[0])[None] < int(n)
    return student, teachers, shape, mask


def _quick() -> tuple[object, list, tuple, None]:
    from molfuse.nets import build

    torch.manual_seed(0)
    base = {"name": "mlp", "config": {"dim": 8, "hidden": 64, "depth": 2}}
    student = build("style_student", {"base": base, "num_styles": 3}).eval().requires_grad_(False)
    teachers = [build(base["name"], base["config"]).eval().requires_grad_(False) for _ in range(3)]
    for m in [student, *teachers]:
        m.prediction = "eps"
    return student, teachers, (8,), None


def measure(name: str, student, teachers: list, shape: tuple, mask, args, out: dict) -> None:
    sched = getattr(student, "schedule", None) or mf.VPSchedule()
    n = args.batch
    m = None if mask is None else mask.expand(n, -1).clone()
    kw = {"steps": args.steps, "mask": m}
    one = bind(student, 0)
    ens = fusion.Ensemble(teachers, rule="mean", schedule=sched)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    runs = {"student": [], "ensemble": [], "or": []}
    with torch.no_grad():
        for r in range(args.repeats + 1):
            ts = timed(lambda: mf.sample(one, sched, (n, *shape), generator=gen(r), **kw))
            te = timed(lambda: mf.sample(ens, sched, (n, *shape), generator=gen(r), **kw))
            to = timed(lambda: fusion.superpose(teachers, sched, (n, *shape), generator=gen(r), **kw))
            if r:  # the first repeat warms up
                runs["student"].append(ts)
                runs["ensemble"].append(te / ts)
                runs["or"].append(to / ts)
    p_s = sum(p.numel() for p in student.parameters())
    p_t = sum(p.numel() for t in teachers for p in t.parameters())
    out.update({f"params_student_{name}": p_s, f"params_teachers_{name}": p_t,
                f"params_ratio_{name}": p_s / p_t, f"sample_student_s_{name}": statistics.median(runs["student"]),
                f"cost_ratio_ensemble_{name}": statistics.median(runs["ensemble"]),
                f"cost_ratio_or_{name}": statistics.median(runs["or"])})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny fresh nets, a few steps")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.steps = args.steps or (20 if args.quick else 100)
    args.batch = args.batch or (16 if args.quick else 32)
    args.repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    print(f"# bench/merging.py: threads {args.threads}, batch {args.batch}, {args.steps} steps, "
          f"{args.repeats} repeats; load average {os.getloadavg()[0]:.2f}")
    out: dict = {}
    if args.quick:
        measure("quick", *_quick(), args, out)
    else:
        for name, path in STUDENTS.items():
            found = _shipped(path)
            if found is None:
                print(f"# {name}: skipped, {path} is not shipped")
                continue
            measure(name, *found, args, out)
    for k, v in out.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    print("# summary: a student costs one network call per step whatever the number of teachers; the "
          "ensemble and OR ratios are the per-step cost the merge saves")


if __name__ == "__main__":
    sys.exit(main())
