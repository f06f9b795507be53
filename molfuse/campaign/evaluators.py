"""The built-in evaluators: ``vectors`` (exact log q, :mod:`molfuse.evaluation.vectors`) and
``images`` (the digit classifier, :mod:`molfuse.modalities.images.evaluate`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import _fail
from .files import _atomic
from .kinds import data_shape
from .registry import Evaluated, modality_of, register_evaluator
from .spec import MethodSpec, Workflow

_VECTOR_NOTES = ("Log-densities in nats, exact ones at t_end. `share_<m>`: share of samples whose highest exact "
                 "density is member m's (denominator: all n). `ito_abs_err_nats_<m>`: mean |Itô − exact|. "
                 "`mean_abs_log_q_gap_nats`: mean |log q_a − log q_b| (small for AND).")


def _vectors(wf: Workflow, m: MethodSpec, run: dict, models: dict) -> Evaluated:
    from ..evaluation.vectors import method_metrics, per_sample_table

    _atomic(wf.folder / "samples" / f"{m.name}.npy", lambda fh: np.save(fh, run["x"]))
    target = models[wf.target] if wf.target else None
    table = per_sample_table(m.name, run["x"], m.models, run["seed"], run["chunk"], models, wf.sampler.t_end,
                             target=target, ito=run.get("ito"), fallbacks=run.get("fallbacks"),
                             chosen=run.get("chosen"))
    return Evaluated(table, method_metrics(table, m.models))


def _check_vectors(wf: Workflow, models: dict) -> None:
    if wf.evaluation:
        _fail("evaluation", f"{', '.join(wf.evaluation)} apply to image models only; these models are vectors")


_IMAGE_NOTES = ("Classes are read by the shipped digit classifier. `frac_class_<k>`: share of valid samples "
                "predicted as k. `class_mixture_tv`: total variation to `evaluation.target_classes`; `coverage`: "
                "share of target classes with at least `coverage_min_count` samples. `feature_frechet`: Fréchet "
                "distance of classifier features to held-out real test images of the reference classes (not FID; "
                "biased high for few samples). `test_bpd` / `test_dsm_loss` (± `_se`): bits/dim (dequantised, "
                "probability-flow ODE, Hutchinson) and per-dimension DSM loss of the method's score model on the "
                "same held-out real images for every method (`evaluation.heldout`); empty for operators that are "
                "not one score model, except bits/dim of the mixture sum_i w_i p_i for random_choice and OR at T = 1 "
                "(members' paired likelihoods; no DSM loss). `mean_min_target_prob`: mean over samples of the "
                "smallest classifier probability among the target classes.")


def _images(wf: Workflow, m: MethodSpec, run: dict, models: dict) -> Evaluated:
    from ..modalities.images.evaluate import evaluate_images

    norm = models[m.models[0]].normalisation
    ev = wf.evaluation
    table, row, pictures = evaluate_images(run["x"], norm, m.name, run["seed"], run["chunk"], wf.folder,
                                           target_classes=ev.get("target_classes"),
                                           reference_classes=ev.get("reference_classes"),
                                           classifier=ev.get("classifier"))
    if run.get("chosen") is not None:
        table["chosen_model"] = [m.models[int(c)] for c in run["chosen"]]
    if run.get("fallbacks") is not None:
        table["fallbacks"] = np.asarray(run["fallbacks"], dtype=np.int64)
    if run.get("ito") is not None:  # Itô log q per member (model space, nats) where tracked
        for k, name in enumerate(m.models):
            table[f"ito_log_q_nats_{name}"] = np.where(table["valid"], run["ito"][:, k], np.nan)
    if "fallbacks" in table:
        row["fallbacks"] = int(table["fallbacks"].sum())
    if "bits_per_dim" in ev or "dsm_loss" in ev:
        row.update(_heldout(wf, m, run, norm, data_shape(models[m.models[0]])[-1], models))
    return Evaluated(table, row, pictures)


def _heldout(wf: Workflow, m: MethodSpec, run: dict, norm: dict, size: int, models: dict) -> dict:
    """Bits/dim and DSM loss on held-out real images (``heldout/<method>.csv``).

    One score model (single, barycenter, ensemble): both metrics. A mixture of the members
    (random_choice, OR at T = 1): bits/dim of ``sum_i w_i p_i`` from the members' paired
    per-image likelihoods; no DSM loss (that mixture's score at time t needs each q_t^i).
    Anything else (AND, OR at T != 1): NaN."""
    import math

    import pandas as pd

    ev = wf.evaluation
    keys = [k for k, on in (("test_bpd", "bits_per_dim"), ("test_bpd_se", "bits_per_dim"), ("test_dsm_loss", "dsm_loss"),
                            ("test_dsm_loss_se", "dsm_loss")) if on in ev]
    mixture = run.get("mixture") if "bits_per_dim" in ev else None
    if run.get("score_model") is None and mixture is None:
        return {k: math.nan for k in keys}
    path = wf.folder / "heldout" / f"{m.name}.csv"
    if path.exists():  # a resumed run: the same config made these numbers
        table = pd.read_csv(path)
    else:
        if run.get("score_model") is not None:
            table = _heldout_table(wf, run["score_model"], norm, size, ev.get("bits_per_dim"), ev.get("dsm_loss"))
        else:
            table = _mixture_table(wf, [models[n] for n in m.models], m.models, mixture, norm, size)
        _atomic(path, lambda fh: table.to_csv(fh, index=False, float_format="%.8g"), text=True)
    row = {k: math.nan for k in keys}
    for col, key in (("bits_per_dim", "test_bpd"), ("dsm_loss", "test_dsm_loss")):
        if col in table:
            v = table[col].to_numpy(dtype=float)
            ok = np.isfinite(v)
            row[key] = float(v[ok].mean()) if ok.any() else math.nan
            row[key + "_se"] = float(v[ok].std(ddof=1) / math.sqrt(ok.sum())) if ok.sum() > 1 else math.nan
    return row


def _heldout_table(wf: Workflow, model: Any, norm: dict, size: int, bpd: dict | None, dsm: dict | None):
    """One score model's per-image held-out rows, with the run's paired seeds and threads."""
    import torch

    from ..modalities.images.evaluate import heldout_metrics
    from .registry import derive_seed
    from .spec import build_schedule

    threads = torch.get_num_threads()
    torch.set_num_threads(wf.sampler.threads or threads)
    try:
        table, _ = heldout_metrics(model, build_schedule(wf.schedule), norm, wf.evaluation["heldout"], bpd, dsm,
                                   derive_seed(wf.seed, "heldout") % 2**31, size)
    finally:
        torch.set_num_threads(threads)
    return table


def _mixture_table(wf: Workflow, members: list, names: list[str], weights: list[float], norm: dict, size: int):
    """Per-image bits/dim of ``sum_i w_i p_i``: ``log p = logsumexp_i(log w_i + log p_i)`` on the
    same dequantised image (same seeds for every member, so the terms are paired). Each log p_i
    is a Hutchinson estimate; the log-sum-exp of unbiased estimates is biased low (Jensen)."""
    from scipy.special import logsumexp

    bpd = wf.evaluation["bits_per_dim"]
    table = None
    logs = []
    for name, model in zip(names, members):
        t = _heldout_table(wf, model, norm, size, bpd, None)
        table = t[["image", "label"]].copy() if table is None else table
        table[f"bits_per_dim_{name}"] = t["bits_per_dim"].to_numpy()
        logs.append(-t["bits_per_dim"].to_numpy(dtype=float) * np.log(2.0))  # nats per dimension
    dims = int(np.prod(data_shape(members[0])))
    log_w = np.log(np.asarray(weights, dtype=float))[:, None]
    with np.errstate(divide="ignore"):
        per_dim = logsumexp(dims * np.stack(logs) + log_w, axis=0) / dims  # (1/D) log sum_i w_i p_i
    table["bits_per_dim"] = -per_dim / np.log(2.0)
    return table


def _check_images(wf: Workflow, models: dict) -> None:
    """Image models need a normalisation (model -> pixel space) and a size the classifier reads."""
    from ..modalities.images import load_classifier

    try:
        clf = load_classifier(wf.evaluation.get("classifier"))
    except (OSError, ValueError, KeyError) as e:
        _fail("evaluation.classifier", f"cannot load the digit classifier: {e}")
    for name, model in models.items():
        if getattr(model, "normalisation", None) is None:
            _fail(f"models.{name}", "image evaluation needs the model's normalisation (a checkpoint card has it)")
        size = data_shape(model)[-1]
        if size != clf.image_size:
            _fail(f"models.{name}", f"{size}x{size} images, but the classifier reads {clf.image_size}x"
                  f"{clf.image_size} (set evaluation.classifier to one trained at this size)")
    norms = {str(getattr(m, "normalisation", None)) for m in models.values()}
    if len(norms) > 1:
        _fail("models", f"image models disagree on their normalisation: {sorted(norms)}")


def modality_models(models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The workflow's models grouped by modality (:func:`~.registry.modality_of`)."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        out.setdefault(modality_of(model), {})[name] = model
    return out


register_evaluator("vectors", _vectors, _check_vectors, _VECTOR_NOTES)
register_evaluator("images", _images, _check_images, _IMAGE_NOTES)
