"""Where an image member's budget goes: training steps, EMA, sampler steps (issue 13).

Each snapshot folder is a shipped checkpoint of one member taken after S training steps
(``molfuse train`` with ``train.steps`` raised stage by stage resumes exactly, so a snapshot
at S is the same as a run of S steps). For each it draws ``--n`` samples (seeded) and reads
them with both judges and the memorisation metric:

- ``judge_agreement``, ``in_class``: share of samples the CNN puts in the member's classes;
- ``nn_ratio_pixel`` / ``nn_ratio_feature`` against the images the member saw;
- at the last snapshot also the raw (non-EMA) weights from the run's ``last.ckpt`` (when the
  snapshot ships the EMA), and sampler steps 50 / 100 / 200 / 400 (``--sampler-steps``).

  python docs/images/member_budget.py --member lo SNAPSHOT ... --ckpt results/train/digits_lo/last.ckpt \
      --out docs/images/member_budget_lo.csv
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import molfuse as mf
from molfuse.modalities.images import evaluate_images, seen_training_set, unit_images
from molfuse.training.checkpoints import load_model


def measure(net, n: int, steps: int, seed: int, classes: list[int]) -> dict:
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = mf.sample(net, net.schedule, (n, *net.card["shape"]), steps=steps, generator=gen)
    unit = unit_images(res.x.numpy(), net.normalisation)
    table, row = evaluate_images(unit, {c: 1.0 for c in classes}, training=seen_training_set([net.card]))
    return {"in_class": 1.0 - row["off_target_fraction"], "judge_agreement": row["judge_agreement"],
            "nn_ratio_pixel": row["nn_ratio_pixel"], "nn_ratio_feature": row["nn_ratio_feature"],
            "near_copy_fraction": row["near_copy_fraction"], "class_mixture_tv": row["class_mixture_tv"],
            "feature_frechet": row["feature_frechet"], "sample_s": round(time.perf_counter() - t0, 1)}


def raw_weights(net, ckpt: Path):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    raw = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    other = copy.deepcopy(net)
    other.load_state_dict(raw, strict=True)
    return other.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("snapshots", nargs="+", type=Path)
    p.add_argument("--ckpt", type=Path, help="last.ckpt of the run whose last snapshot is given last")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sampler-steps", default="50,100,200,400")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for snap in a.snapshots:
        net = load_model(snap)
        classes = sorted(int(k) for k in net.card["data"]["class_counts"])
        shipped = (net.card.get("training") or {}).get("ship_weights", "ema")
        base = {"member": net.card["name"], "train_steps": net.card["steps"], "weights": shipped,
                "cooldown_start": (net.card.get("training") or {}).get("cooldown_start")}
        last = snap == a.snapshots[-1]
        for steps in ([int(s) for s in a.sampler_steps.split(",")] if last else [a.steps]):
            rows.append({**base, "sampler_steps": steps, **measure(net, a.n, steps, a.seed, classes)})
            print(rows[-1], flush=True)
        if last and a.ckpt is not None and shipped == "ema":
            rows.append({**base, "weights": "raw", "sampler_steps": a.steps,
                         **measure(raw_weights(net, a.ckpt), a.n, a.steps, a.seed, classes)})
            print(rows[-1], flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(a.out, index=False)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
