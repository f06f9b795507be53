"""Evaluate one method's generated digit images: back to [0, 1], saved, classified, summarised.

:func:`evaluate_images` is what ``molfuse run`` calls for image models (the campaign
registers it as the ``"images"`` evaluator). It writes ``samples/<method>.npy`` (N, H, W)
float32 intensities in [0, 1] (NaN for invalid samples) and ``samples/<method>.png`` (a
grid), and returns the per-sample rows and the metrics row of RESULTS.md.

Metrics, read through the shipped digit classifier (:mod:`.metrics`):

- ``frac_class_<k>`` for k = 0..9: predicted class fractions over valid samples;
- ``class_mixture_tv``: total variation to ``target_classes`` (e.g. ``{7: 0.6, 9: 0.4}``);
- ``coverage``: fraction of the target classes with at least ``coverage_min_count``
  samples (a quarter of the expected count of the rarest target class, at least 1);
- ``off_target_fraction``: share of valid samples predicted outside the target classes;
- ``feature_frechet``: Fréchet distance of classifier features (not FID) to the held-out
  real test images of ``reference_classes`` (default: the target classes; all classes when
  neither is given): MNIST test split for 28x28, sklearn digits test split for 8x8.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ._classifier import classify, features, load_classifier
from .data import Population, load_images, to_unit
from .grid import save_grid
from .metrics import class_coverage, class_histogram, class_mixture_tv, feature_frechet_distance

__all__ = ["REFERENCE_SOURCES", "evaluate_images", "reference_features"]

REFERENCE_SOURCES = {28: "mnist", 8: "digits8"}  # image size -> held-out real images


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


@lru_cache(maxsize=8)
def _reference(classifier: str | None, size: int, classes: tuple[int, ...] | None) -> np.ndarray:
    if size not in REFERENCE_SOURCES:
        raise ValueError(f"no held-out real images of size {size}x{size}; known: {sorted(REFERENCE_SOURCES)}")
    images, labels = load_images(REFERENCE_SOURCES[size], "test")
    if classes is not None:
        images = images[np.isin(labels, classes)]
    top = 255.0 if size == 28 else 16.0
    feats = features((images / top).astype(np.float32), load_classifier(classifier))
    feats.flags.writeable = False
    return feats


def reference_features(size: int, classes: Sequence[int] | None = None,
                       classifier: str | Path | None = None) -> np.ndarray:
    """Classifier features (n, F) of the held-out real test images of ``classes`` (all if None)."""
    key = None if classes is None else tuple(sorted(int(c) for c in classes))
    return _reference(None if classifier is None else str(classifier), int(size), key)


def evaluate_images(x: np.ndarray, normalisation: Mapping[str, Any], method: str, seeds: np.ndarray,
                    chunks: np.ndarray, folder: str | Path | None = None,
                    target_classes: Mapping[int, float] | None = None,
                    reference_classes: Sequence[int] | None = None,
                    classifier: str | Path | None = None) -> tuple[pd.DataFrame, dict, list[str]]:
    """Per-sample and summary metrics of one method's model-space images.

    Args:
        x: samples (n, 1, H, W) (or (n, H, W)) in model space.
        normalisation: the models' card entry, ``x_model = scale * v + shift`` (with ``levels``).
        method: the method's name (``id`` prefix, file names).
        seeds, chunks: (n,) chunk seed and chunk index of each sample.
        folder: the run folder; ``samples/<method>.npy`` and ``.png`` go below it (None: no files).
        target_classes: class -> weight of the mixture the samples should follow.
        reference_classes: classes of the real images for ``feature_frechet``.
        classifier: a classifier folder (default the shipped one).

    Returns:
        per-sample rows (``id, method, index, chunk, seed, valid, reason, predicted_class,
        prob_max``; ``predicted_class`` is -1 for an invalid sample), the metrics row (see
        the module doc) and the pictures written (paths relative to ``folder``).
    """
    x = np.asarray(x)
    unit = to_unit(x, normalisation)
    unit = unit[:, 0] if unit.ndim == 4 else unit  # (n, H, W) in [0, 1], NaN stays NaN
    pictures = []
    if folder is not None:
        _save_npy(Path(folder) / "samples" / f"{method}.npy", unit)
        if len(unit):
            save_grid(unit, Path(folder) / "samples" / f"{method}.png")
            pictures.append(f"samples/{method}.png")
    clf = load_classifier(classifier)
    per = classify(unit, clf)
    n = len(unit)
    table = pd.DataFrame({"id": [f"{method}-{i:06d}" for i in range(n)], "method": method, "index": np.arange(n),
                          "chunk": chunks, "seed": seeds, "valid": per["valid"], "reason": per["reason"],
                          "predicted_class": per["pred"], "prob_max": per["prob_max"]})
    row = _summary(per, unit, target_classes, reference_classes, clf, classifier)
    return table, row, pictures


def _summary(per: pd.DataFrame, unit: np.ndarray, target: Mapping[int, float] | None,
             reference_classes: Sequence[int] | None, clf: Any, classifier: str | Path | None) -> dict:
    preds = per["pred"].to_numpy()
    n_valid = int(per["valid"].sum())
    hist = class_histogram(preds, 10)
    row: dict[str, Any] = {"n": len(per), "n_valid": n_valid,
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
