"""Distance between two methods' image sets (the campaign's ``fidelity`` report).

``set_distance(ctx, a, b)`` returns the Fréchet distance of the shipped classifier's features
between the two sets (``feature_frechet``; not FID, biased high for few samples, the same bias
for the control pair of a fidelity row) and the total variation between their predicted-class
histograms (``class_tv``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...plugins import EvalContext, MethodRun
from ._classifier import classify, features, load_classifier
from .evaluate import unit_images
from .metrics import class_histogram, feature_frechet_distance

__all__ = ["set_distance"]


def _read(ctx: EvalContext, run: MethodRun, clf: Any) -> tuple[np.ndarray, np.ndarray]:
    unit = unit_images(np.asarray(run.x), ctx.models[run.members[0]].normalisation)
    feats = features(unit, clf)
    preds = classify(unit, clf)["pred"].to_numpy()
    keep = np.isfinite(feats).all(1)
    return feats[keep], preds[keep]


def set_distance(ctx: EvalContext, a: MethodRun, b: MethodRun) -> dict:
    """``{feature_frechet, class_tv, n_a, n_b}`` between the valid images of ``a`` and ``b``."""
    clf = load_classifier(ctx.settings.get("classifier"))
    fa, pa = _read(ctx, a, clf)
    fb, pb = _read(ctx, b, clf)
    ha = class_histogram(pa, 10)["fraction"].to_numpy()
    hb = class_histogram(pb, 10)["fraction"].to_numpy()
    return {"feature_frechet": feature_frechet_distance(fa, fb), "class_tv": 0.5 * float(np.abs(ha - hb).sum()),
            "n_a": int(len(fa)), "n_b": int(len(fb))}
