"""The image evaluator: generated digits back to [0, 1], classified, summarised; sample writers.

:data:`EVALUATOR` is what ``molfuse run`` uses for models of modality ``images`` (registered
by :mod:`molfuse.modalities.images`); its ``evaluation:`` settings are :mod:`.schema`'s, the
held-out likelihood metrics :mod:`.heldout`'s. The writers put ``samples/<method>.npy``
(N, H, W) float32 intensities in [0, 1] (NaN for invalid samples) and ``samples/<method>.png``
(a grid) in the run folder.

Metrics, read through the shipped digit classifier (:mod:`.metrics`):

- ``frac_class_<k>`` for k = 0..9: predicted class fractions over valid samples;
- ``class_mixture_tv``: total variation to ``target_classes`` (e.g. ``{7: 0.6, 9: 0.4}``);
- ``coverage``: fraction of the target classes with at least ``coverage_min_count``
  samples (a quarter of the expected count of the rarest target class, at least 1);
- ``off_target_fraction``: share of valid samples predicted outside the target classes;
- ``mean_min_target_prob`` (two to four target classes): mean over samples of the smallest
  classifier probability among the target classes; near 0 when each sample is one class,
  up to 1/k when a sample reads as all k target classes at once (the AND question);
- ``feature_frechet``: Fréchet distance of classifier features (not FID) to the held-out
  real test images of ``reference_classes`` (default: the target classes; all classes when
  neither is given): MNIST test split for 28x28, sklearn digits test split for 8x8.

A second judge (``evaluation.judge``, default the shipped MLP ``models/images/judge_mlp``,
another family than the CNN) reads every sample too:

- ``judge_agreement``: share of valid samples both judges put in the same class (98 % on
  real held-out digits); class metrics below about that margin are not resolved;
- ``class_mixture_tv_judge2``, ``off_target_fraction_judge2``: the class metrics as the
  second judge reads them.

Memorisation (:mod:`.memorisation`; ``evaluation.memorisation: false`` turns it off) against
the union of the training sets the method's members saw (from their cards; the whole train
split when a card does not say), relative to the held-out real images of the training set's
classes among the reference classes (the target's by default), weighted to its class mix: ``nn_ratio_pixel``, ``nn_ratio_feature`` (CNN features), ``near_copy_fraction``
(and ``near_copy_fraction_heldout`` for real digits), ``n_train_seen``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...base.checks import fail
from ...base.io import atomic_write
from ...plugins import EvalContext, Evaluated, Evaluator, MethodRun
from ._classifier import class_probabilities, classify, features, load_classifier, load_judge
from .data import Population, load_images, to_unit
from .grid import save_grid
from .heldout import REFERENCE_SOURCES, heldout_row
from .memorisation import heldout_weights, memorisation_summary, seen_training_set, train_split, training_images
from .metrics import class_coverage, class_histogram, class_mixture_tv, feature_frechet_distance
from .schema import parse_evaluation

__all__ = ["evaluate_images", "reference_features", "reference_images", "memorisation_row", "EVALUATOR",
           "write_npy", "write_png", "judge_setting"]


@lru_cache(maxsize=8)
def _reference_images(size: int, classes: tuple[int, ...] | None) -> np.ndarray:
    if size not in REFERENCE_SOURCES:
        raise ValueError(f"no held-out real images of size {size}x{size}; known: {sorted(REFERENCE_SOURCES)}")
    images, labels = load_images(REFERENCE_SOURCES[size], "test")
    if classes is not None:
        images = images[np.isin(labels, classes)]
    top = 255.0 if size == 28 else 16.0
    unit = (images / top).astype(np.float32)
    unit.flags.writeable = False
    return unit


def reference_images(size: int, classes: Sequence[int] | None = None) -> np.ndarray:
    """The held-out real test images (n, H, W) in [0, 1] of ``classes`` (all if None)."""
    return _reference_images(int(size), None if classes is None else tuple(sorted(int(c) for c in classes)))


@lru_cache(maxsize=8)
def _reference(classifier: str | None, size: int, classes: tuple[int, ...] | None) -> np.ndarray:
    feats = features(_reference_images(size, classes), load_classifier(classifier))
    feats.flags.writeable = False
    return feats


def reference_features(size: int, classes: Sequence[int] | None = None,
                       classifier: str | Path | None = None) -> np.ndarray:
    """Classifier features (n, F) of the held-out real test images of ``classes`` (all if None)."""
    key = None if classes is None else tuple(sorted(int(c) for c in classes))
    return _reference(None if classifier is None else str(classifier), int(size), key)


def unit_images(x: np.ndarray, normalisation: Mapping[str, Any]) -> np.ndarray:
    """Model-space samples (n, 1, H, W) or (n, H, W) -> intensities (n, H, W) in [0, 1] (NaN stays NaN)."""
    unit = to_unit(np.asarray(x), normalisation)
    return unit[:, 0] if unit.ndim == 4 else unit


def evaluate_images(unit: np.ndarray, target_classes: Mapping[int, float] | None = None,
                    reference_classes: Sequence[int] | None = None,
                    classifier: str | Path | None = None, judge: str | Path | None | bool = None,
                    training: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-sample and summary metrics of one method's images in [0, 1] (module doc).

    Args:
        judge: the second judge's folder (None: the shipped MLP; False: none).
        training: what the method's models were trained on, for the memorisation metrics
            (:func:`memorisation_row`; None: skipped).

    Returns:
        per-sample columns (``valid, reason, predicted_class, prob_max``, ``judge_class``,
        ``nn_distance_pixel`` and ``min_target_prob`` for 2-4 target classes;
        ``predicted_class`` is -1 for an invalid sample) and the metrics row.
    """
    clf = load_classifier(classifier)
    per = classify(unit, clf)
    table = pd.DataFrame({"valid": per["valid"].to_numpy(), "reason": per["reason"].to_numpy(),
                          "predicted_class": per["pred"].to_numpy(), "prob_max": per["prob_max"].to_numpy()})
    row = _summary(per, unit, target_classes, reference_classes, clf, classifier)
    if judge is not False:
        second = classify(unit, load_judge(judge))["pred"].to_numpy()
        table["judge_class"] = second
        row.update(_judged(per["pred"].to_numpy(), second, target_classes))
    if training is not None:
        classes = reference_classes if reference_classes is not None else (list(target_classes) if target_classes else None)
        mem, dist = memorisation_row(unit, training, clf, classifier, classes)
        table["nn_distance_pixel"] = dist
        row.update(mem)
    if target_classes is not None and 2 <= len(target_classes) <= 4:  # "is it all of them at once?" (AND)
        probs = class_probabilities(unit, clf)
        table["min_target_prob"] = probs[:, sorted(int(c) for c in target_classes)].min(axis=1)
        row["mean_min_target_prob"] = float(np.nanmean(table["min_target_prob"])) if row["n_valid"] else math.nan
    return table, row


def _summary(per: pd.DataFrame, unit: np.ndarray, target: Mapping[int, float] | None,
             reference_classes: Sequence[int] | None, clf: Any, classifier: str | Path | None) -> dict:
    preds = per["pred"].to_numpy()
    n_valid = int(per["valid"].sum())
    hist = class_histogram(preds, 10)
    row: dict[str, Any] = {"n_valid": n_valid,
                           **{f"frac_class_{k}": float(f) for k, f in zip(hist["class"], hist["fraction"])}}
    if target is not None:
        w = Population(target).weights
        min_count = max(1, int(0.25 * n_valid * min(w.values())))
        valid_preds = preds[preds >= 0]
        row.update(class_mixture_tv=class_mixture_tv(preds, w),
                   coverage=float(class_coverage(preds, list(w), min_count)["covered"].mean()),
                   coverage_min_count=min_count,
                   off_target_fraction=float(np.isin(valid_preds, list(w), invert=True).mean()) if n_valid
                   else math.nan)
    row["mean_prob_max"] = float(np.nanmean(per["prob_max"])) if n_valid else math.nan
    classes = reference_classes if reference_classes is not None else (list(target) if target else None)
    ref = reference_features(unit.shape[-1], classes, classifier)
    row["feature_frechet"] = feature_frechet_distance(features(unit, clf), ref)
    return row


def _judged(first: np.ndarray, second: np.ndarray, target: Mapping[int, float] | None) -> dict:
    """Agreement of the two judges on valid samples, and the class metrics the second one reads."""
    ok = first >= 0
    row: dict[str, Any] = {"judge_agreement": float((first[ok] == second[ok]).mean()) if ok.any() else math.nan}
    if target is not None:
        w = Population(target).weights
        valid = second[second >= 0]
        row["class_mixture_tv_judge2"] = class_mixture_tv(second, w)
        row["off_target_fraction_judge2"] = (float(np.isin(valid, list(w), invert=True).mean()) if len(valid)
                                             else math.nan)
    return row


@lru_cache(maxsize=8)
def _train_features(specs: tuple, classifier: str | None) -> np.ndarray:
    feats = features(training_images(specs)[0], load_classifier(classifier))
    feats.flags.writeable = False
    return feats


@lru_cache(maxsize=4)
def _heldout_all(size: int, classifier: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, labels = load_images(REFERENCE_SOURCES[size], "test")
    unit = reference_images(size)
    feats = reference_features(size, None, classifier)
    return unit, feats, labels


def memorisation_row(unit: np.ndarray, training: tuple | tuple[np.ndarray, np.ndarray], clf: Any = None,
                     classifier: str | Path | None = None,
                     classes: Sequence[int] | None = None) -> tuple[dict, np.ndarray]:
    """The memorisation metrics (:mod:`.memorisation`) of images (n, H, W) in [0, 1].

    ``training`` is the spec tuple of :func:`~.memorisation.seen_training_set` (its images and
    features are cached), or ``(images (m, H, W) in [0, 1], labels (m,))``. The reference is
    every held-out real test image of the training set's classes, weighted to its class mix;
    with ``classes`` (the classes the samples should be, e.g. two prompted digits) only those of
    them the training set has (all of its classes if it has none of them).
    """
    clf = clf if clf is not None else load_classifier(classifier)
    key = None if classifier is None else str(classifier)
    if isinstance(training[0], tuple):
        (train, labels), train_feats = training_images(training), _train_features(training, key)
    else:
        train, labels = np.asarray(training[0]), np.asarray(training[1])
        train_feats = features(train, clf)
    held, held_feats, held_labels = _heldout_all(unit.shape[-1], key)
    mix = labels
    if classes is not None and np.isin(labels, list(classes)).any():
        mix = labels[np.isin(labels, list(classes))]
    keep = np.isin(held_labels, np.unique(mix))
    w = heldout_weights(held_labels[keep], mix)
    return memorisation_summary(unit, train, held[keep], features(unit, clf), train_feats, held_feats[keep], w)


def _seen(ctx: EvalContext, run: MethodRun, size: int) -> tuple[tuple, str]:
    """The training-set specs of a method's members, and where they came from."""
    cards = [getattr(ctx.models[m], "card", None) for m in run.members]
    specs = seen_training_set(cards) if all(isinstance(c, Mapping) for c in cards) else None
    return (specs, "cards") if specs else (train_split(size), "train split")




NOTES = ("Classes are read by the shipped digit classifier. `frac_class_<k>`: share of valid samples "
         "predicted as k. `class_mixture_tv`: total variation to `evaluation.target_classes`; `coverage`: "
         "share of target classes with at least `coverage_min_count` samples. `feature_frechet`: Fréchet "
         "distance of classifier features to held-out real test images of the reference classes (not FID; "
         "biased high for few samples). `test_bpd` / `test_dsm_loss` (± `_se`): bits/dim (dequantised, "
         "probability-flow ODE, Hutchinson) and per-dimension DSM loss of the method's score model on the "
         "same held-out real images for every method (`evaluation.heldout`); empty for operators that are "
         "not one score model, except bits/dim of the mixture sum_i w_i p_i for random_choice and OR at T = 1 "
         "(members' paired likelihoods; no DSM loss). `mean_min_target_prob`: mean over samples of the "
         "smallest classifier probability among the target classes. `judge_agreement`: share of valid samples "
         "the second judge (an MLP, another family; 98 % agreement on real held-out digits) puts in the same class; "
         "`*_judge2`: the class metrics as it reads them. Memorisation, against the union of the training images "
         "the method's members saw (`train_seen_from`: their cards, else the whole train split; `n_train_seen` "
         "images): `nn_ratio_pixel` / `nn_ratio_feature` = mean distance of a sample to its nearest training "
         "image (pixels in [0, 1]; CNN features) over the same for held-out real images of the training set's "
         "class mix among the reference classes (1 = as novel as fresh real digits, < 1 copies, > 1 off the data); `near_copy_fraction`: "
         "share with d1/d2 < 1/3 to the two nearest training images (`_heldout`: the same for real digits).")


def _evaluate(ctx: EvalContext, run: MethodRun) -> Evaluated:
    ev = ctx.settings
    norm = ctx.models[run.members[0]].normalisation
    unit = unit_images(run.x, norm)
    size = ctx.models[run.members[0]].sample_shape[-1]
    specs, origin = _seen(ctx, run, size) if ev.get("memorisation", True) else (None, None)
    own, row = evaluate_images(unit, ev.get("target_classes"), ev.get("reference_classes"), ev.get("classifier"),
                               judge_setting(ev, size), specs)
    if origin:
        row["train_seen_from"] = origin
    table = run.table.copy()
    table["reason"] = np.where(table["valid"] | ~own["valid"].to_numpy(), table["reason"], own["reason"])
    table["valid"] = table["valid"] & own["valid"].to_numpy()
    table = pd.concat([table, own.drop(columns=["valid", "reason"])], axis=1)
    row.pop("n_valid", None)
    if "bits_per_dim" in ev or "dsm_loss" in ev:
        row.update(heldout_row(ctx, run, norm, ctx.models[run.members[0]].sample_shape[-1]))
    return Evaluated(table, row, [f"samples/{run.name}.png"] if len(unit) else [])


def write_npy(folder: Path, run: MethodRun, normalisation: Mapping[str, Any]) -> list[str]:
    """``samples/<method>.npy``: (N, H, W) float32 intensities in [0, 1], NaN for invalid samples."""
    unit = unit_images(run.x, normalisation)
    atomic_write(Path(folder) / "samples" / f"{run.name}.npy", lambda fh: np.save(fh, unit))
    return [f"samples/{run.name}.npy"]


def write_png(folder: Path, run: MethodRun, normalisation: Mapping[str, Any]) -> list[str]:
    """``samples/<method>.png``: a grid of the samples."""
    unit = unit_images(run.x, normalisation)
    if not len(unit):
        return []
    save_grid(unit, Path(folder) / "samples" / f"{run.name}.png")
    return [f"samples/{run.name}.png"]


def judge_setting(ev: Mapping[str, Any], size: int) -> str | bool | None:
    """The judge to use: the one given, else the shipped MLP when it reads this size, else none."""
    if ev.get("judge") is not None:
        return ev["judge"]
    return None if load_judge().image_size == size else False


def _check(ctx: EvalContext) -> None:
    """Image models need a normalisation (model -> pixel space) and a size the classifiers read."""
    try:
        clf = load_classifier(ctx.settings.get("classifier"))
    except (OSError, ValueError, KeyError) as e:
        fail("evaluation.classifier", f"cannot load the digit classifier: {e}")
    judge = ctx.settings.get("judge")
    if isinstance(judge, str):
        try:
            second = load_judge(judge)
        except (OSError, ValueError, KeyError) as e:
            fail("evaluation.judge", f"cannot load the second judge: {e}")
        if second.image_size != clf.image_size:
            fail("evaluation.judge", f"the judge reads {second.image_size}x{second.image_size} images but the "
                 f"classifier {clf.image_size}x{clf.image_size}")
    for name, model in ctx.models.items():
        norm = getattr(model, "normalisation", None)
        if not norm or "scale" not in norm or "shift" not in norm:
            fail(f"models.{name}", "image evaluation needs the model's normalisation {scale, shift, levels} "
                 "(a checkpoint card has it)")
        size = model.sample_shape[-1]
        if size != clf.image_size:
            fail(f"models.{name}", f"{size}x{size} images, but the classifier reads {clf.image_size}x"
                 f"{clf.image_size} (set evaluation.classifier to one trained at this size)")
    norms = {str(getattr(m, "normalisation", None)) for m in ctx.models.values()}
    if len(norms) > 1:
        fail("models", f"image models disagree on their normalisation: {sorted(norms)}")


def _caveats(ctx: EvalContext, metrics: pd.DataFrame) -> list[str]:
    out = [f"Image metrics read {ctx.n_samples} samples per method through a small digit classifier; "
           "feature_frechet is biased upwards when n is below its 128 feature dimensions, so compare it "
           "between methods at equal n only. Itô log q columns are in model space (nats)."]
    if "judge_agreement" in metrics:
        low = metrics[metrics["judge_agreement"] < 0.85]
        if len(low):
            out.append("The two judges agree on fewer than 85 % of the samples of " + ", ".join(map(str, low["method"] if "method" in low else low.index))
                       + "; class shares of these methods depend on the judge that reads them.")
    else:
        out.append("No second judge read these samples (none given for this image size).")
    if "train_seen_from" in metrics and (metrics["train_seen_from"] == "train split").any():
        out.append("Memorisation of some methods is measured against the whole train split: their cards do not "
                   "say which images they saw.")
    return out


EVALUATOR = Evaluator(
    evaluate=_evaluate, parse=parse_evaluation, check=_check, notes=NOTES, caveats=_caveats,
    metric_columns=("class_mixture_tv", "coverage", "coverage_min_count", "off_target_fraction", "feature_frechet",
                    "judge_agreement", "class_mixture_tv_judge2", "off_target_fraction_judge2", "nn_ratio_pixel",
                    "nn_ratio_feature", "near_copy_fraction", "near_copy_fraction_heldout", "n_train_seen",
                    "train_seen_from",
                    "test_bpd", "test_bpd_se", "test_dsm_loss", "test_dsm_loss_se", "mean_min_target_prob",
                    "mean_prob_max", *(f"frac_class_{k}" for k in range(10))),
    sample_columns=("predicted_class", "prob_max", "min_target_prob", "judge_class", "nn_distance_pixel"),
    headline=("class_mixture_tv", "judge_agreement", "class_mixture_tv_judge2", "nn_ratio_pixel", "nn_ratio_feature",
              "near_copy_fraction", "coverage", "off_target_fraction", "feature_frechet", "test_bpd", "test_bpd_se",
              "test_dsm_loss", "mean_min_target_prob"))
