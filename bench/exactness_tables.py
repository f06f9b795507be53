"""Print the README's exactness tables (closed-form checks of the fusion core, full settings).

    .venv/bin/python bench/exactness_tables.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from molfuse.evaluation import exactness as ex
from molfuse.base.tables import markdown_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    n = 256 if args.quick else 512
    ito = ex.ito_error_table(dims=(2, 16), steps=(50, 100, 200, 500, 1000), n=n, seed=0)
    print("## Itô estimator vs exact log q_{t_end} (3-component mixture, n = %d paths, seed 0)\n" % n)
    print(markdown_table(ito[["dim", "steps", "n", "mae_nats", "bias_nats"]]))
    ll = [ex.likelihood_check(dim=4, n=64, steps=100, divergence=d) for d in ("exact", "hutchinson")]
    print("\n## Probability-flow ODE log-likelihood vs closed-form Gaussian (D = 4, RK4, 100 steps)\n")
    cols = ["check", "n", "mae_nats", "max_abs_err_nats", "bias_nats", "bias_std_err_nats"]
    print(markdown_table(ex.pd.concat(ll)[cols]))
    print("\n## Superposition\n")
    orp = ex.pd.concat([ex.or_proportions(n=4000, steps=200, seed=s) for s in (0, 1, 2)])
    print(markdown_table(orp[["seed", "n", "steps", "target", "measured", "std_err", "z"]]))
    print()
    print(markdown_table(ex.or_argmax(temperatures=(1.0, 10.0, 100.0), n=1000)
                         [["temperature", "n", "mean_max_kappa", "argmax_agreement"]]))
    print()
    ands = ex.pd.concat([ex.and_gap(k=k, n=1000, steps=st) for k in (2, 3) for st in (100, 400)])
    print(markdown_table(ands[["k", "steps", "n", "mean_abs_gap_exact_nats", "mean_abs_gap_single_model_nats",
                               "ito_bias_nats", "ito_bias_corrected_nats", "fallback_steps_per_sample"]]))
    print("\n## Barycenter weights from target samples (true λ = 0.2 / 0.5 / 0.3)\n")
    bary = ex.pd.concat([ex.barycenter_recovery(n=n_, n_mc=60000, seed=s, window=w)
                         for n_ in (300, 3000) for s in (0, 1) for w in ("full", "vanilla")])
    print(markdown_table(bary[["check", "n", "seed", "lambda_0", "lambda_1", "lambda_2", "max_abs_weight_err",
                               "heldout_loss"]]))
    print("\n## Path-wise barycenter vs diffused time-0 barycenter (max |score difference|)\n")
    print(markdown_table(ex.pathwise_barycenter_gap()))
    print(f"\n(made in {time.time() - t0:.0f} s with torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
