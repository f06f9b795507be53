"""Held-out real digits: bits/dim and DSM loss of a method's score model, paired across methods.

Every method of a run is scored on the same held-out test images with the same
dequantisation noise, Hutchinson probes and DSM (t, ε) draws (seeded from the run's seed
only), so differences between methods are paired. One score model (single, barycenter,
ensemble) gets both metrics; a method whose samples follow a mixture ``Σ w_i p_i`` of its
members (random choice, OR at T = 1) gets that mixture's bits/dim from the members' paired
per-image likelihoods (no DSM loss); anything else (AND, OR at T != 1) gets NaN.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ...base.io import atomic_write
from ...base.seeds import derive_seed
from ...losses import dsm_loss
from ...plugins import EvalContext, MethodRun
from .data import Population, load_images, to_model
from .likelihood import bits_per_dim

__all__ = ["REFERENCE_SOURCES", "heldout_images", "heldout_metrics", "heldout_row"]

REFERENCE_SOURCES = {28: "mnist", 8: "digits8"}  # image size -> held-out real images


def heldout_images(heldout: Mapping[str, Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out real test images ``{n, seed, weights}`` (a class population) as pixels and labels."""
    if size not in REFERENCE_SOURCES:
        raise ValueError(f"no held-out real images of size {size}x{size}; known: {sorted(REFERENCE_SOURCES)}")
    images, labels = load_images(REFERENCE_SOURCES[size], "test")
    idx = Population(heldout["weights"]).sample_indices(labels, int(heldout["n"]), int(heldout["seed"]))
    return images[idx], labels[idx]


def heldout_metrics(model: Any, schedule: Any, normalisation: Mapping[str, Any], heldout: Mapping[str, Any],
                    bpd: Mapping[str, Any] | None, dsm: Mapping[str, Any] | None, seed: int,
                    size: int) -> tuple[pd.DataFrame, dict]:
    """Bits/dim and DSM loss of one score model on held-out real images, one row per image.

    Every method of a run gets the same images, dequantisation noise, Hutchinson probes and
    DSM (t, ε) draws (generators seeded from ``seed`` only), so differences between methods
    are paired. ``dsm_loss`` is the σ²-weighted DSM loss of MATH §2 per dimension, averaged
    over ``n_t`` draws of ``t ~ U[t_min, 1]`` per image.

    Returns:
        per-image rows (``image, label, bits_per_dim, log_p_model_nats, dsm_loss``) and the
        summary (``test_bpd``, ``test_bpd_se``, ``test_dsm_loss``, ``test_dsm_loss_se``).
    """
    images, labels = heldout_images(heldout, size)
    table = pd.DataFrame({"image": np.arange(len(images)), "label": labels})
    row: dict[str, Any] = {}
    if bpd is not None:
        g = torch.Generator().manual_seed(seed)
        r = bits_per_dim(model, images, schedule, steps=int(bpd["steps"]), rho=float(bpd["rho"]),
                         t_start=float(bpd["t_start"]), generator=g, normalisation=normalisation, batch_size=64)
        table["bits_per_dim"], table["log_p_model_nats"] = r["bits_per_dim"].to_numpy(), r["log_p_model_nats"].to_numpy()
        row.update(test_bpd=float(np.nanmean(r["bits_per_dim"])),
                   test_bpd_se=float(np.nanstd(r["bits_per_dim"], ddof=1) / math.sqrt(max(1, r["valid"].sum()))))
    if dsm is not None:
        g = torch.Generator().manual_seed(seed + 1)
        x0 = to_model(images, normalisation)
        n_t, t_min = int(dsm["n_t"]), float(dsm["t_min"])
        per = torch.zeros(len(x0), dtype=torch.float64)
        with torch.no_grad():
            for _ in range(n_t):
                t = t_min + (1.0 - t_min) * torch.rand(len(x0), generator=g)
                eps = torch.randn(x0.shape, generator=g)
                for i in range(0, len(x0), 128):
                    per[i:i + 128] += dsm_loss(model, x0[i:i + 128], schedule, t[i:i + 128], eps[i:i + 128]).double()
        per = (per / (n_t * x0[0].numel())).numpy()
        table["dsm_loss"] = per
        row.update(test_dsm_loss=float(per.mean()), test_dsm_loss_se=float(per.std(ddof=1) / math.sqrt(len(per))))
    return table, row


def heldout_row(ctx: EvalContext, run: MethodRun, norm: Mapping[str, Any], size: int) -> dict:
    """``test_bpd`` / ``test_dsm_loss`` (± ``_se``) of one method (``heldout/<method>.csv``).

    A resumed run reads the per-image table it wrote (the same config made these numbers)."""
    ev = ctx.settings
    keys = [k for k, on in (("test_bpd", "bits_per_dim"), ("test_bpd_se", "bits_per_dim"), ("test_dsm_loss", "dsm_loss"),
                            ("test_dsm_loss_se", "dsm_loss")) if on in ev]
    mixture = run.mixture if "bits_per_dim" in ev else None
    if run.score_model is None and mixture is None:
        return {k: math.nan for k in keys}
    path = ctx.folder / "heldout" / f"{run.name}.csv"
    if path.exists():
        table = pd.read_csv(path)
    else:
        if run.score_model is not None:
            table = _heldout_table(ctx, run.score_model, norm, size, ev.get("bits_per_dim"), ev.get("dsm_loss"))
        else:
            table = _mixture_table(ctx, run.members, mixture, norm, size)
        atomic_write(path, lambda fh: table.to_csv(fh, index=False, float_format="%.8g"), text=True)
    row = {k: math.nan for k in keys}
    for col, key in (("bits_per_dim", "test_bpd"), ("dsm_loss", "test_dsm_loss")):
        if col in table:
            v = table[col].to_numpy(dtype=float)
            ok = np.isfinite(v)
            row[key] = float(v[ok].mean()) if ok.any() else math.nan
            row[key + "_se"] = float(v[ok].std(ddof=1) / math.sqrt(ok.sum())) if ok.sum() > 1 else math.nan
    return row


def _heldout_table(ctx: EvalContext, model: Any, norm: Mapping[str, Any], size: int, bpd: dict | None,
                   dsm: dict | None) -> pd.DataFrame:
    """One score model's per-image held-out rows, with the run's paired seeds and threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.threads or threads)
    try:
        table, _ = heldout_metrics(model, ctx.schedule, norm, ctx.settings["heldout"], bpd, dsm,
                                   derive_seed(ctx.seed, "heldout") % 2**31, size)
    finally:
        torch.set_num_threads(threads)
    return table


def _mixture_table(ctx: EvalContext, names: list[str], weights: list[float], norm: Mapping[str, Any],
                   size: int) -> pd.DataFrame:
    """Per-image bits/dim of ``sum_i w_i p_i``: ``log p = logsumexp_i(log w_i + log p_i)`` on the
    same dequantised image (same seeds for every member, so the terms are paired). Each log p_i
    is a Hutchinson estimate; the log-sum-exp of unbiased estimates is biased low (Jensen)."""
    from scipy.special import logsumexp

    bpd = ctx.settings["bits_per_dim"]
    table, logs = None, []
    for name in names:
        t = _heldout_table(ctx, ctx.models[name], norm, size, bpd, None)
        table = t[["image", "label"]].copy() if table is None else table
        table[f"bits_per_dim_{name}"] = t["bits_per_dim"].to_numpy()
        logs.append(-t["bits_per_dim"].to_numpy(dtype=float) * np.log(2.0))  # nats per dimension
    dims = int(np.prod(ctx.models[names[0]].sample_shape))
    log_w = np.log(np.asarray(weights, dtype=float))[:, None]
    with np.errstate(divide="ignore"):
        per_dim = logsumexp(dims * np.stack(logs) + log_w, axis=0) / dims  # (1/D) log sum_i w_i p_i
    table["bits_per_dim"] = -per_dim / np.log(2.0)
    return table
