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
                "biased high for few samples).")


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
    return Evaluated(table, row, pictures)


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
