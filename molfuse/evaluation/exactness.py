"""Closed-form checks of the fusion core on Gaussian mixtures (MATH §1-4).

Each function runs one measurement and returns a DataFrame, so the same numbers feed the
tests (which assert on them), ``molfuse demo`` (which writes them to ``checks.csv``) and
the README tables.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch

from ..density import log_likelihood
from ..fusion import Barycenter, fit_barycenter_weights, superpose
from ..models import GaussianMixture
from ..sampling import sample
from ..schedules import Schedule, VPSchedule

__all__ = ["random_mixture", "ito_error_table", "likelihood_check", "or_proportions", "or_argmax",
           "and_gap", "barycenter_recovery", "pathwise_barycenter_gap", "tidy", "run_all"]


def random_mixture(dim: int, k: int, seed: int, schedule: Schedule, spread: float = 2.0) -> GaussianMixture:
    """A reproducible K-component mixture with random means, diagonal covariances, weights."""
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(k, dim, generator=g, dtype=torch.float64)
    covs = 0.2 + 0.6 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixture(means, covs, w / w.sum(), schedule=schedule)


def ito_error_table(dims: Sequence[int] = (2, 16), steps: Sequence[int] = (50, 100, 200, 500), n: int = 512,
                    seed: int = 0, schedule: Schedule | None = None) -> pd.DataFrame:
    """Itô log-density estimate vs exact ``log q_{t_end}`` along reverse-SDE paths (MATH §3).

    One row per (dim, steps): mean absolute error and mean signed error in nats over n paths
    of a 3-component mixture.
    """
    schedule = schedule or VPSchedule()
    rows = []
    for d in dims:
        gm = random_mixture(d, 3, seed, schedule)
        for st in steps:
            g = torch.Generator().manual_seed(seed + 1)
            r = sample(gm, schedule, (n, d), steps=st, generator=g, track_log_density=True, dtype=torch.float64)
            err = r.log_density - gm.log_prob(r.x, r.t_end)
            rows.append({"check": "ito_single_model", "dim": d, "steps": st, "n": n, "seed": seed,
                         "mae_nats": float(err.abs().mean()), "bias_nats": float(err.mean())})
    return pd.DataFrame(rows)


def likelihood_check(dim: int = 4, n: int = 64, steps: int = 100, seed: int = 0,
                     divergence: str = "exact") -> pd.DataFrame:
    """``log_likelihood`` (probability-flow ODE) vs the closed-form log density of a Gaussian."""
    schedule = VPSchedule()
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    gm = GaussianMixture(0.3 * torch.randn(1, dim, generator=g, dtype=torch.float64),
                         (a @ a.T / dim + 0.3 * torch.eye(dim, dtype=torch.float64))[None], schedule=schedule)
    x0 = gm.sample(n, generator=g)
    ll = log_likelihood(gm, x0, schedule, steps=steps, divergence=divergence, generator=g)
    err = ll - gm.log_prob(x0, 0.0)
    return pd.DataFrame([{"check": f"log_likelihood_{divergence}", "dim": dim, "steps": steps, "n": n, "seed": seed,
                          "mae_nats": float(err.abs().mean()), "max_abs_err_nats": float(err.abs().max()),
                          "bias_nats": float(err.mean()), "bias_std_err_nats": float(err.std() / math.sqrt(n))}])


def _two_blobs(schedule: Schedule, sep: float = 2.0, var: float = 0.3) -> tuple[GaussianMixture, GaussianMixture]:
    a = GaussianMixture([[-sep, 0.0]], [var], schedule=schedule, name="left")
    b = GaussianMixture([[sep, 0.0]], [var], schedule=schedule, name="right")
    return a, b


def or_proportions(omega: float = 0.8, n: int = 2000, steps: int = 200, seed: int = 0) -> pd.DataFrame:
    """OR with ``T = 1, ℓ = log ω`` reproduces mixture proportions (MATH §4)."""
    schedule = VPSchedule()
    a, b = _two_blobs(schedule)
    g = torch.Generator().manual_seed(seed)
    r = superpose([a, b], schedule, (n, 2), mode="or", bias=[math.log(omega), math.log(1 - omega)],
                  steps=steps, generator=g)
    share = float((a.log_prob(r.x, r.t_end) > b.log_prob(r.x, r.t_end)).double().mean())
    se = math.sqrt(omega * (1 - omega) / n)
    return pd.DataFrame([{"check": "or_mixture_share", "n": n, "steps": steps, "seed": seed, "target": omega,
                          "measured": share, "std_err": se, "z": (share - omega) / se}])


def or_argmax(temperatures: Sequence[float] = (1.0, 100.0), n: int = 1000, steps: int = 200,
              seed: int = 0) -> pd.DataFrame:
    """OR temperature: large T makes κ one-hot on the member of highest log q (MATH §4).

    Overlapping members (separation 1, unit variance) so that T = 1 keeps κ mixed.
    """
    schedule = VPSchedule()
    a, b = _two_blobs(schedule, sep=0.5, var=1.0)
    rows = []
    for temp in temperatures:
        g = torch.Generator().manual_seed(seed)
        r = superpose([a, b], schedule, (n, 2), mode="or", temperature=temp, steps=steps, generator=g)
        top = r.kappa.max(1)
        agree = (r.kappa.argmax(1) == r.log_q.argmax(1)).double().mean()
        rows.append({"check": "or_temperature", "temperature": temp, "n": n, "steps": steps, "seed": seed,
                     "mean_max_kappa": float(top.values.mean()), "argmax_agreement": float(agree)})
    return pd.DataFrame(rows)


def and_gap(k: int = 2, n: int = 1000, steps: int = 200, seed: int = 0) -> pd.DataFrame:
    """AND: exact ``|log q^1 − log q^i|`` stays near its start (0) and ends near the
    equal-density set; Itô estimates stay equal by construction (MATH §4). Also the bias of
    the tracked ``log q`` against the exact value, without and with ``ito_correction``."""
    schedule = VPSchedule()
    means = [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5], [0.5, 1.5]][:k]
    covs = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.3], [0.3, 0.5]], [[0.6, 0.0], [0.0, 1.2]], [[0.8, -0.2], [-0.2, 0.8]]][:k]
    models = [GaussianMixture([m], [c], schedule=schedule) for m, c in zip(means, covs)]
    runs = {}
    for corr in (False, True):
        g = torch.Generator().manual_seed(seed)
        r = superpose(models, schedule, (n, 2), mode="and", steps=steps, generator=g, ito_correction=corr)
        runs[corr] = (r, torch.stack([m.log_prob(r.x, r.t_end) for m in models], 1))
    r, lq = runs[True]
    # Reference scale: the same gap for samples of the first model alone.
    ref = sample(models[0], schedule, (n, 2), steps=steps, generator=torch.Generator().manual_seed(seed)).x
    lr = torch.stack([m.log_prob(ref, r.t_end) for m in models], 1)
    return pd.DataFrame([{"check": "and_equal_density", "k": k, "n": n, "steps": steps, "seed": seed,
                          "mean_abs_gap_exact_nats": float((lq - lq[:, :1]).abs()[:, 1:].mean()),
                          "mean_abs_gap_single_model_nats": float((lr - lr[:, :1]).abs()[:, 1:].mean()),
                          "max_abs_gap_ito_nats": float((r.log_q - r.log_q[:, :1]).abs().max()),
                          "ito_bias_nats": float((runs[False][0].log_q - runs[False][1]).mean()),
                          "ito_bias_corrected_nats": float((r.log_q - lq).mean()),
                          "fallback_steps_per_sample": float(r.fallbacks.double().mean())}])


def barycenter_recovery(lam: Sequence[float] = (0.2, 0.5, 0.3), n: int = 3000, n_mc: int = 60000,
                        seed: int = 0, window: str = "full") -> pd.DataFrame:
    """``fit_barycenter_weights`` on three equal-covariance Gaussians with affinely independent
    means; the target is their exact barycenter ``N(Σ λ_i μ_i, Σ)`` (MATH §2)."""
    schedule = VPSchedule()
    cov = torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=torch.float64)
    mus = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    members = [GaussianMixture(mus[i:i + 1], cov[None], schedule=schedule, name=f"g{i}") for i in range(3)]
    lam_t = torch.tensor(lam, dtype=torch.float64)
    target = GaussianMixture((lam_t @ mus)[None], cov[None], schedule=schedule)
    g = torch.Generator().manual_seed(seed)
    fit = fit_barycenter_weights(members, target.sample(n, generator=g), schedule, window=window, n_mc=n_mc, generator=g)
    row = {"check": f"barycenter_fit_{window}", "n": n, "n_mc": n_mc, "seed": seed,
           "max_abs_weight_err": float((fit.weights - lam_t).abs().max()),
           "train_loss": fit.train_loss, "heldout_loss": fit.heldout_loss}
    row.update({f"lambda_{i}": float(w) for i, w in enumerate(fit.weights)})
    row.update({f"lambda_true_{i}": float(w) for i, w in enumerate(lam_t)})
    return pd.DataFrame([row])


def pathwise_barycenter_gap(times: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.9), lam: float = 0.5) -> pd.DataFrame:
    """Path-wise barycenter score vs the score of the diffused time-0 barycenter (MATH §2 caveat).

    Equal covariances: identical at every t. Unequal variances (1-D N(0, 1), N(0, 4)): equal
    at t = 0 only. Reports the max absolute score difference on a grid of x.
    """
    schedule = VPSchedule()
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)[:, None]
    rows = []
    cases = {"equal_cov": ([[-1.0], [2.0]], [0.5, 0.5]), "unequal_var": ([[0.0], [0.0]], [1.0, 4.0])}
    for case, (mus, vs) in cases.items():
        members = [GaussianMixture([m], [v], schedule=schedule) for m, v in zip(mus, vs)]
        prec = lam / vs[0] + (1 - lam) / vs[1]  # time-0 barycenter of Gaussians: precisions average
        mean0 = (lam * mus[0][0] / vs[0] + (1 - lam) * mus[1][0] / vs[1]) / prec
        exact0 = GaussianMixture([[mean0]], [1.0 / prec], schedule=schedule)
        bary = Barycenter(members, [lam, 1 - lam])
        for t in times:
            tt = torch.full((x.shape[0],), t, dtype=torch.float64)
            diff = (bary(x, tt) - exact0(x, tt)).abs().max()
            rows.append({"check": "pathwise_barycenter", "case": case, "t": t, "max_abs_score_diff": float(diff)})
    return pd.DataFrame(rows)


_SETTINGS = ("dim", "k", "steps", "n", "n_mc", "seed", "temperature", "case", "t")


def tidy(table: pd.DataFrame) -> pd.DataFrame:
    """Long format: one row per (check, settings, metric) with a float ``value``."""
    rows = []
    for rec in table.to_dict("records"):
        setting = "; ".join(f"{k}={_fmt(rec[k])}" for k in _SETTINGS if k in rec and pd.notna(rec[k]))
        for key, val in rec.items():
            if key not in _SETTINGS and key != "check" and pd.notna(val):
                rows.append({"check": rec["check"], "settings": setting, "metric": key, "value": float(val)})
    return pd.DataFrame(rows, columns=["check", "settings", "metric", "value"])


def _fmt(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def run_all(quick: bool = False) -> pd.DataFrame:
    """Every check in one long-format table (``quick`` uses fewer samples and steps)."""
    n = 256 if quick else 1000
    steps = (50, 200) if quick else (50, 100, 200, 500)
    parts = [ito_error_table(steps=steps, n=n // 2), likelihood_check(), or_proportions(n=2 * n),
             or_argmax(n=n), and_gap(n=n), and_gap(k=3, n=n), barycenter_recovery(n=3 * n),
             pathwise_barycenter_gap(times=(0.0, 0.3))]
    return pd.concat([tidy(p) for p in parts], ignore_index=True)
