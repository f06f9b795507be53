"""Sample metrics for digit images, read through the shipped classifier: pure functions.

Class histograms, total variation to a target class mixture, per-class coverage and the
*classifier-feature Fréchet distance* (the FID formula on the penultimate features of our
small MNIST classifier; it is not FID and its values are not comparable to FID values).
Per-sample tables have one row per image with ``valid`` and ``reason``; an invalid image
(non-finite pixels) is a row with ``pred = -1`` and NaNs, and it is left out of summaries.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ._classifier import classify, features
from .data import Population

__all__ = ["class_histogram", "class_mixture_tv", "class_coverage", "feature_frechet_distance", "sample_metrics"]


def _weights(target: Mapping[int, float] | Population) -> dict[int, float]:
    w = target.weights if isinstance(target, Population) else Population(target).weights
    return dict(w)


def _valid_preds(preds: Sequence[int] | np.ndarray) -> np.ndarray:
    p = np.asarray(preds, dtype=np.int64)
    return p[p >= 0]  # -1 marks an invalid sample


def class_histogram(preds: Sequence[int] | np.ndarray, n_classes: int = 10) -> pd.DataFrame:
    """Counts and fractions of predicted classes: one row per class ``0 .. n_classes - 1``.

    Invalid predictions (``-1``) are ignored; fractions are over valid predictions (NaN
    when there are none).
    """
    p = _valid_preds(preds)
    counts = np.bincount(p, minlength=n_classes)[:n_classes] if len(p) else np.zeros(n_classes, dtype=np.int64)
    frac = counts / len(p) if len(p) else np.full(n_classes, np.nan)
    return pd.DataFrame({"class": np.arange(n_classes), "count": counts, "fraction": frac})


def class_mixture_tv(preds: Sequence[int] | np.ndarray, target_weights: Mapping[int, float] | Population) -> float:
    """Total variation ``½ Σ_k |p̂_k − w_k|`` between predicted class fractions and a target.

    Classes absent from the target have ``w_k = 0``; the target is normalised. Lies in
    [0, 1]; NaN with no valid prediction.
    """
    w = _weights(target_weights)
    p = _valid_preds(preds)
    if not len(p):
        return math.nan
    n_classes = max(int(p.max()), max(w)) + 1
    emp = np.bincount(p, minlength=n_classes) / len(p)
    tgt = np.zeros(n_classes)
    tgt[list(w)] = list(w.values())
    return float(0.5 * np.abs(emp - tgt).sum())


def class_coverage(preds: Sequence[int] | np.ndarray, classes: Sequence[int], min_count: int = 1) -> pd.DataFrame:
    """Per-class coverage: one row per class in ``classes`` with ``count`` and ``covered``
    (at least ``min_count`` valid predictions of that class). ``covered.mean()`` is the
    fraction of classes covered."""
    p = _valid_preds(preds)
    counts = [int((p == c).sum()) for c in classes]
    return pd.DataFrame({"class": list(classes), "count": counts, "covered": [c >= min_count for c in counts]})


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((c + c.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def feature_frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Classifier-feature Fréchet distance between two feature sets (n_a, F), (n_b, F).

    ``‖μ_a − μ_b‖² + Tr(C_a + C_b − 2 (C_a C_b)^{1/2})`` for Gaussian fits (unbiased
    covariances). ``Tr (C_a C_b)^{1/2}`` is computed as ``Σ_i sqrt(λ_i)`` of the symmetric
    PSD matrix ``C_a^{1/2} C_b C_a^{1/2}`` (same eigenvalues as ``C_a C_b``), which avoids
    the spurious complex parts ``scipy.linalg.sqrtm(C_a C_b)`` produces for near-singular
    covariances (a test checks both agree on well-conditioned inputs). Rows with NaNs
    (invalid samples) are dropped; each set needs at least 2 rows. Not FID: the features
    come from our small MNIST classifier, not Inception.
    """
    a, b = (np.asarray(f, dtype=np.float64) for f in (feats_a, feats_b))
    a, b = a[np.isfinite(a).all(1)], b[np.isfinite(b).all(1)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    sa = _sqrt_psd(ca)
    lam = np.linalg.eigvalsh(sa @ cb @ sa)
    tr_sqrt = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    d = float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * tr_sqrt)
    return max(d, 0.0)


def sample_metrics(images: np.ndarray, target_weights: Mapping[int, float] | Population,
                   reference_images: np.ndarray | None = None, classifier: Any = None, min_count: int | None = None,
                   reference_features: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-sample classification and summary metrics of a set of digit images.

    Args:
        images: uint8 (n, 28, 28) pixels or float intensities in [0, 1] (use
            :func:`~.data.to_unit` on model-space samples).
        target_weights: the class mixture the samples should follow, e.g. ``{7: .6, 9: .4}``.
        reference_images: real images for the Fréchet distance (or ``reference_features``).
        classifier: default the shipped one.
        min_count: a target class is covered with at least this many samples (default:
            a quarter of its expected count ``n w_k``, at least 1).

    Returns:
        per-sample DataFrame (``id, valid, reason, pred, prob_max``) and a summary dict:
        ``n, n_valid, class_mixture_tv, coverage`` (fraction of target classes covered),
        ``off_target_fraction``, ``mean_prob_max``, ``classifier_feature_frechet`` (NaN
        without a reference) and ``frac_<k>`` per class.
    """
    w = _weights(target_weights)
    per = classify(images, classifier)
    per.insert(0, "id", np.arange(len(per)))
    preds = per["pred"].to_numpy()
    n_valid = int(per["valid"].sum())
    if min_count is None:
        min_count = max(1, int(0.25 * n_valid * min(w.values())))
    cov = class_coverage(preds, list(w), min_count)
    hist = class_histogram(preds, max(10, max(w) + 1))
    fd = math.nan
    if reference_features is None and reference_images is not None:
        reference_features = features(reference_images, classifier)
    if reference_features is not None:
        fd = feature_frechet_distance(features(images, classifier), reference_features)
    summary = {
        "n": len(per), "n_valid": n_valid, "class_mixture_tv": class_mixture_tv(preds, w),
        "coverage": float(cov["covered"].mean()), "coverage_min_count": min_count,
        "off_target_fraction": float(np.isin(preds[preds >= 0], list(w), invert=True).mean()) if n_valid else math.nan,
        "mean_prob_max": float(np.nanmean(per["prob_max"])) if n_valid else math.nan,
        "classifier_feature_frechet": fd,
        **{f"frac_{k}": float(f) for k, f in zip(hist["class"], hist["fraction"])},
    }
    return per, summary
