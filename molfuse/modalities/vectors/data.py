"""Vector data and models for workflows: Gaussian-mixture samples to train on, analytic mixtures to fuse."""

from __future__ import annotations

import torch

from ...base.checks import REQUIRED, as_int, numeric
from ...models import GaussianMixture
from ...plugins import DataKind, ModelKind, TrainingData
from ...schedules import Schedule

__all__ = ["gaussian_mixture_samples", "gaussian_mixture_model", "DATA_KIND", "MODEL_KIND"]


def gaussian_mixture_samples(spec: dict) -> TrainingData:
    """Data kind ``gaussian_mixture_samples``: ``n`` float32 samples of a :class:`GaussianMixture`
    (``means``, ``covs``, ``weights``, ``seed``); with ``labels`` the component index is the
    class label."""
    n, seed = as_int(spec["n"], "data.n", 1), as_int(spec["seed"], "data.seed", 0)
    w = spec["weights"]
    gm = GaussianMixture(numeric(spec["means"]), numeric(spec["covs"]), None if w is None else numeric(w))
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(gm.weights, n, replacement=True, generator=g)
    x = torch.empty(n, gm.dim, dtype=torch.float64)
    for k in range(len(gm.weights)):  # each component is a one-component mixture
        idx = (comp == k).nonzero()[:, 0]
        x[idx] = GaussianMixture(gm.means[k:k + 1], gm.covs[k:k + 1]).sample(len(idx), generator=g)
    desc = {"kind": "gaussian_mixture_samples", "n": n, "seed": seed, "dim": gm.dim, "labels": bool(spec["labels"]),
            "means": gm.means.tolist(), "covs": gm.covs.tolist(), "weights": gm.weights.tolist(), "shape": [gm.dim]}
    return TrainingData(x.float(), desc, {"scale": 1.0, "shift": 0.0}, cond=comp if spec["labels"] else None,
                        condition="class_label" if spec["labels"] else "none")


def gaussian_mixture_model(spec: dict, schedule: Schedule) -> GaussianMixture:
    """Model kind ``gaussian_mixture``: an analytic mixture (exact score and log q_t)."""
    w = spec.get("weights")
    gm = GaussianMixture(numeric(spec["means"]), numeric(spec["covs"]), None if w is None else numeric(w),
                         schedule=schedule)
    gm.modality = "vectors"
    return gm


DATA_KIND = DataKind(gaussian_mixture_samples, {"means": REQUIRED, "covs": REQUIRED, "weights": None, "n": REQUIRED,
                                                "seed": 0, "labels": False})
MODEL_KIND = ModelKind(gaussian_mixture_model, {"means": REQUIRED, "covs": REQUIRED, "weights": None})
