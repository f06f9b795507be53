"""Do refactors keep the numbers? Reduced runs of every shipped image workflow, the demo and
two short trainings, compared value by value with reference numbers from an earlier commit.

    python bench/same_numbers.py --write bench/reference/same_numbers   # record (old code)
    python bench/same_numbers.py                                        # compare (new code)

Each image workflow runs with its own seed and every method, at reduced sizes (8 samples,
20 SDE steps, 4 held-out images, 4 ODE steps for bits/dim, fits on 512 Monte Carlo draws),
so the whole script takes a few minutes on 2 cores. It records ``metrics.csv`` (every numeric
column but wall time), the samples' sha256 per method and the sha256 of the trained weights.
A difference is printed with the largest relative error per column; the exit code is 1 when
any value differs by more than ``--rtol`` (default 1e-9: the same random draws in the same
order give the same floating-point results).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ["superdiff_or_digits", "superdiff_and_digits", "soup_ensemble_digits", "scorefusion_digits"]
TRAININGS = {
    "unet_digits8": {
        "name": "unet_digits8", "seed": 3, "architecture": {"name": "unet", "config": {"image_size": 8, "base": 8,
                                                                                         "mults": [1, 2]}},
        "data": {"kind": "mnist_population", "source": "digits8", "classes": [1, 7], "n": 64, "seed": 0},
        "train": {"steps": 12, "batch_size": 16, "checkpoint_every": 6, "threads": 1}},
    "mlp_cond": {
        "name": "mlp_cond", "seed": 5, "architecture": {"name": "mlp", "config": {"dim": 2, "hidden": 32,
                                                                                    "num_classes": 2}},
        "data": {"kind": "gaussian_mixture_samples", "means": [[-2, 0], [2, 0]], "covs": [0.3, 0.3], "n": 256,
                 "labels": True},
        "train": {"steps": 30, "batch_size": 64, "cond_drop_prob": 0.2, "val_fraction": 0.1,
                  "checkpoint_every": 10}},
}


def reduced(name: str) -> dict:
    wf = yaml.safe_load((ROOT / "workflows" / "images" / f"{name}.yaml").read_text())
    wf["n_samples"] = 8
    wf["sampler"].update(steps=20, chunk_size=4, threads=1)
    ev = wf.get("evaluation", {})
    if "heldout" in ev:
        ev["heldout"]["n"] = 4
    if "bits_per_dim" in ev:
        ev["bits_per_dim"]["steps"] = 4
    if "dsm_loss" in ev:
        ev["dsm_loss"]["n_t"] = 2
    for m in wf["methods"]:
        if "fit" in m:
            m["fit"]["n_mc"] = 512
    wf.pop("reports", None)
    return wf


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_all(tmp: Path) -> tuple[pd.DataFrame, dict]:
    from molfuse.campaign import run_workflow
    from molfuse.training import train_from_workflow

    frames, hashes = [], {}
    jobs = [("demo", yaml.safe_load((ROOT / "workflows" / "demo.yaml").read_text()))]
    jobs += [(n, reduced(n)) for n in WORKFLOWS]
    for name, wf in jobs:
        t0 = time.perf_counter()
        res = run_workflow(wf, out=tmp, name="check", progress=False, verbose=False)
        m = res.metrics.drop(columns=["wall_time_s"]).assign(workflow=name)
        frames.append(m)
        for npy in sorted((res.folder / "samples").glob("*.npy")):
            hashes[f"{name}/samples/{npy.name}"] = sha(npy)
        print(f"# {name}: {len(m)} methods in {time.perf_counter() - t0:.0f} s", flush=True)
    for name, wf in TRAININGS.items():
        out = train_from_workflow(dict(wf, output=str(tmp / "train")), progress=False, verbose=False)
        hashes[f"train/{name}"] = out.card["weights"]["sha256"]
        hashes[f"train/{name}/final_losses"] = json.dumps(out.card["final_losses"], sort_keys=True)
        print(f"# train {name}: {out.card['weights']['sha256'][:16]}", flush=True)
    return pd.concat(frames, ignore_index=True), hashes


def compare(new: pd.DataFrame, new_h: dict, ref_dir: Path, rtol: float) -> int:
    ref = pd.read_csv(ref_dir / "metrics.csv")
    ref_h = json.loads((ref_dir / "hashes.json").read_text())
    bad = 0
    key = ["workflow", "method"]
    merged = ref.merge(new, on=key, how="outer", suffixes=("_ref", "_new"), indicator=True)
    missing = merged[merged["_merge"] != "both"]
    for _, r in missing.iterrows():
        print(f"DIFF row {r['workflow']}/{r['method']}: only in {'reference' if r['_merge'] == 'left_only' else 'new'}")
        bad += 1
    both = merged[merged["_merge"] == "both"]
    for col in sorted(set(ref.columns) - set(key)):
        a, b = both.get(f"{col}_ref"), both.get(f"{col}_new")
        if b is None:
            print(f"DIFF column {col}: missing in the new run")
            bad += 1
            continue
        if not (pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b)):
            diff = (a.astype(str) != b.astype(str)) & ~(a.isna() & b.isna())
            if diff.any():
                print(f"DIFF column {col}: {int(diff.sum())} text values differ")
                bad += 1
            continue
        x, y = a.to_numpy(float), b.to_numpy(float)
        same_nan = np.isnan(x) == np.isnan(y)
        rel = np.abs(x - y) / np.maximum(np.abs(x), 1e-300)
        rel = np.where(np.isnan(x) & np.isnan(y), 0.0, rel)
        worst = float(np.nanmax(rel)) if len(rel) else 0.0
        if not same_nan.all() or worst > rtol:
            i = int(np.nanargmax(rel)) if len(rel) else 0
            r = both.iloc[i]
            print(f"DIFF column {col}: max relative error {worst:.3g} at {r['workflow']}/{r['method']} "
                  f"({x[i]!r} -> {y[i]!r}); NaN pattern equal: {bool(same_nan.all())}")
            bad += 1
    for k in sorted(set(ref_h) | set(new_h)):
        if ref_h.get(k) != new_h.get(k):
            print(f"DIFF {k}: {str(ref_h.get(k))[:24]} -> {str(new_h.get(k))[:24]}")
            bad += 1
    print(f"same_numbers: {len(both)} method rows x {len(ref.columns) - 2} columns, {len(ref_h)} hashes; "
          f"{'all equal' if not bad else f'{bad} difference(s)'} (rtol {rtol:g})")
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", help="record reference numbers into this folder instead of comparing")
    p.add_argument("--reference", default=str(ROOT / "bench" / "reference" / "same_numbers"))
    p.add_argument("--rtol", type=float, default=1e-9)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print("# one torch thread per process (runs share the cores)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        table, hashes = run_all(Path(tmp))
    if a.write:
        out = Path(a.write)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "metrics.csv", index=False, float_format="%.17g")
        (out / "hashes.json").write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out}")
        return 0
    return compare(table, hashes, Path(a.reference), a.rtol)


if __name__ == "__main__":
    sys.exit(main())
