"""What the sampler's settings do to an angle member's backbones: validity, clashes, composition.

For a protein angle checkpoint, draws ``--n`` 64-residue backbones per setting from one seed and
judges them with the evaluator's geometry (:func:`molfuse.modalities.proteins.geometry.geometry_table`,
unchanged thresholds). Settings (each a JSON object on the command line; the defaults below):

- ``steps``: reverse-SDE steps on the uniform grid (200 is what the workflows use);
- ``method``: ``"sde"`` or ``"ode"`` (probability flow, MATH §1);
- ``power``: the time grid's spacing (:func:`molfuse.sampling.time_grid`);
- ``eta``: a factor on the SDE's noise (1 = the reverse SDE). ``eta < 1`` is the "noise scale" of
  protein diffusion samplers (FrameDiff, Genie): it no longer samples the model's distribution
  but a sharper one, so it is measured here, not offered as a workflow option.

Usage: ``python bench/angle_sampler_settings.py models/proteins/angles_all [--n 128 --seed 0]
[--save out.csv] ['{"steps": 1000}' ...]``. Runs on one thread (say ``--threads`` for more).
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from molfuse.convert import score_fn
from molfuse.modalities.proteins.angles import nerf, state_to_angles
from molfuse.modalities.proteins.geometry import geometry_table
from molfuse.sampling import reverse_step, time_grid
from molfuse.schedules import VPSchedule
from molfuse.training.checkpoints import load_model

DEFAULTS = [{"steps": 200}, {"steps": 1000}, {"method": "ode"}, {"power": 2.0}, {"eta": 0.5}]


def draw(model, n: int, seed: int, steps: int = 200, method: str = "sde", power: float = 1.0,
         eta: float = 1.0, length: int = 64) -> torch.Tensor:
    """(n, length, 3) Å traces drawn from ``model`` with these sampler settings."""
    schedule, space = VPSchedule(), model.space
    fn = score_fn(model, schedule, space)
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.bool)
    shape = (n, length, 4)
    x = space.noise(shape, mask, g) * schedule.prior_std()
    ts = time_grid(steps, 1e-3, power)
    with torch.no_grad():
        for t, tn in zip(ts[:-1], ts[1:]):
            dtau, dla, g2 = t - tn, float(schedule.dlog_alpha(t)), float(schedule.g2(t))
            s = fn(x, t, None, mask)
            if method == "sde":
                noise = eta * (g2 * dtau) ** 0.5 * space.noise(shape, mask, g)
                dx = reverse_step(x, s, dla, g2, dtau, noise)
            else:
                dx = reverse_step(x, s, dla, 0.5 * g2, dtau)
            x = space.project(x + dx, mask)
    norm = model.normalisation
    theta, tau = state_to_angles(x.double(), mask, norm["channel_mean"], norm["channel_std"])
    return nerf(theta, tau, mask, float(norm.get("bond_length", 3.8)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an angle-state protein checkpoint folder")
    ap.add_argument("settings", nargs="*", help="JSON objects, e.g. '{\"steps\": 1000}' (default: a sweep)")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", help="write the table as CSV here")
    args = ap.parse_intermixed_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# {args.model}: {args.n} backbones per setting, seed {args.seed}, {args.threads} thread(s)", flush=True)
    model = load_model(args.model).eval()
    if getattr(model, "normalisation", {}).get("representation") != "ca_angles":
        raise SystemExit(f"{args.model} is not an angle-state protein model (normalisation.representation "
                         "must be ca_angles)")
    rows = []
    for spec in [json.loads(s) for s in args.settings] or DEFAULTS:
        t0 = time.perf_counter()
        table = geometry_table(draw(model, args.n, args.seed, **spec).numpy())
        rows.append({"setting": json.dumps(spec), "validity": table["valid"].mean(),
                     "clash_free": (table["n_clashes"] == 0).mean(), "helix": table["helix"].mean(),
                     "strand": table["strand"].mean(), "rg_ratio_median": table["rg_ratio"].median(),
                     "seconds": time.perf_counter() - t0})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format="%.3f"), flush=True)
    if args.save:
        pd.DataFrame(rows).to_csv(args.save, index=False, float_format="%.4g")


if __name__ == "__main__":
    main()
