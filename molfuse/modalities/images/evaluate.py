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
- ``mean_min_target_prob`` (two to four target classes): mean over samples of the smallest
  classifier probability among the target classes; near 0 when each sample is one class,
  up to 1/k when a sample reads as all k target classes at once (the AND question);
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

from ._classifier import class_probabilities, classify, features, load_classifier
from .data import Population, load_images, to_unit
from .grid import save_grid
from .likelihood import bits_per_dim
from .metrics import class_coverage, class_histogram, class_mixture_tv, feature_frechet_distance

__all__ = ["REFERENCE_SOURCES", "evaluate_images", "reference_features", "heldout_images", "heldout_metrics"]

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
    if target_classes is not None and 2 <= len(target_classes) <= 4:  # "is it all of them at once?" (AND)
        probs = class_probabilities(unit, clf)
        table["min_target_prob"] = probs[:, sorted(int(c) for c in target_classes)].min(axis=1)
        row["mean_min_target_prob"] = float(np.nanmean(table["min_target_prob"])) if row["n_valid"] else math.nan
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
    import torch

    from ...losses import dsm_loss
    from .data import to_model

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
