"""Memorisation of digit models: how close samples lie to the images the model was trained on.

A model that copies its training images gets low class errors for the wrong reason (a
16-image fine-tune "hits" a 7/9 mixture by reproducing its 16 images). The check compares
each sample's distance to its nearest training image with the same distance for *real
held-out* images of the same classes, which the model never saw:

- ``nn_ratio_pixel``: mean over samples of the Euclidean pixel distance (intensities in
  [0, 1], 28x28) to the nearest training image, over the same mean for held-out images;
- ``nn_ratio_feature``: the same in the judge's feature space (classifier penultimate
  features), where a shifted copy still lies close;
- ``near_copy_fraction``: share of samples whose nearest training image is less than a
  third of the distance of the second nearest, ``d_1 / d_2 < 1/3`` in pixels — the copy
  criterion of Carlini et al. (2023) and Yoon et al. (2023); real held-out digits score
  about 0 (``near_copy_fraction_heldout`` is reported beside it).

The held-out images are weighted to the training set's class mix (:func:`heldout_weights`),
so a model of digits 0-4 is compared with held-out 0-4 digits.

A ratio near 1 means samples are as novel as fresh real digits; well below 1 means copies
(0 for exact copies); well above 1 means samples off the data (noise, blur, broken strokes).

"The training set the model saw" comes from checkpoint cards (:func:`seen_training_set`):
the card's own ``data``, followed through ``init_from``, soup and merge members and
distillation teachers, so a fine-tune counts its parent's data too.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .data import indices_digest, load_images, population_from_spec

__all__ = ["COPY_RATIO", "nearest_distances", "heldout_weights", "memorisation_summary", "seen_training_set", "training_images",
           "train_split"]

COPY_RATIO = 1.0 / 3.0
_ROOT = Path(__file__).resolve().parents[3]


def _flat(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(len(a), -1)


def nearest_distances(x: np.ndarray, train: np.ndarray, k: int = 2, batch: int = 256) -> np.ndarray:
    """Euclidean distances (n, k) of each row of ``x`` to its k nearest rows of ``train``, ascending.

    ``x`` (n, ...) and ``train`` (m, ...) are flattened per row; rows of ``x`` with NaNs give NaN
    distances. Exact (a blocked ``‖a‖² + ‖b‖² − 2 a·b``, clipped at 0), float64.
    """
    a, b = _flat(x), _flat(train)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"samples have {a.shape[1]} values per row but training images {b.shape[1]}")
    if len(b) < k:
        raise ValueError(f"need at least {k} training images for the {k} nearest; got {len(b)}")
    out = np.full((len(a), k), np.nan)
    ok = np.isfinite(a).all(1)
    bb = (b * b).sum(1)
    idx = np.flatnonzero(ok)
    for i in range(0, len(idx), batch):
        rows = a[idx[i:i + batch]]
        d2 = (rows * rows).sum(1)[:, None] + bb[None] - 2.0 * rows @ b.T
        part = np.partition(np.clip(d2, 0.0, None), k - 1, axis=1)[:, :k]
        out[idx[i:i + batch]] = np.sqrt(np.sort(part, axis=1))
    return out


def heldout_weights(heldout_labels: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """Weights (sum 1) on held-out images that give them the training set's class mix.

    ``w_j = π_{c_j} / n_{c_j}`` with π the class shares of the training set and n the held-out
    count of that class, so a model trained on digits 0-4 is compared with held-out 0-4 digits
    only. Raises if a training class has no held-out image.
    """
    classes, counts = np.unique(np.asarray(train_labels), return_counts=True)
    held = np.asarray(heldout_labels)
    w = np.zeros(len(held))
    for c, k in zip(classes, counts):
        here = held == c
        if not here.any():
            raise ValueError(f"no held-out image of class {int(c)}, which the training set has")
        w[here] = k / counts.sum() / here.sum()
    return w


def memorisation_summary(samples: np.ndarray, train: np.ndarray, heldout: np.ndarray,
                         sample_features: np.ndarray | None = None, train_features: np.ndarray | None = None,
                         heldout_features: np.ndarray | None = None,
                         weights: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:
    """The memorisation metrics (module doc) of samples against a training set.

    Args:
        samples, train, heldout: images (n, H, W) intensities in [0, 1]; NaN rows are invalid
            samples and are left out.
        *_features: classifier features of the same images, for ``nn_ratio_feature``.
        weights: per held-out image (sum 1; :func:`heldout_weights`), default uniform.

    Returns:
        the summary row (``nn_ratio_pixel``, ``nn_ratio_feature``, ``near_copy_fraction``,
        ``near_copy_fraction_heldout``, ``n_train_seen``) and per-sample pixel distances to
        the nearest training image (NaN for invalid samples).
    """
    ds, dh = nearest_distances(samples, train), nearest_distances(heldout, train)
    w = np.full(len(dh), 1.0 / len(dh)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(dh),) or abs(w.sum() - 1.0) > 1e-6 or (w < 0).any():
        raise ValueError(f"weights must be {len(dh)} non-negative numbers summing to 1")
    ok = np.isfinite(ds[:, 0])
    row: dict[str, float] = {"n_train_seen": int(len(train)), "near_copy_fraction_heldout": _copies(dh, w)}
    if not ok.any():
        return row | {"nn_ratio_pixel": math.nan, "nn_ratio_feature": math.nan, "near_copy_fraction": math.nan}, ds[:, 0]
    row["nn_ratio_pixel"] = float(ds[ok, 0].mean() / (w @ dh[:, 0]))
    row["near_copy_fraction"] = _copies(ds[ok])
    if sample_features is not None and train_features is not None and heldout_features is not None:
        fs, fh = nearest_distances(sample_features, train_features, 1), nearest_distances(heldout_features, train_features, 1)
        fok = np.isfinite(fs[:, 0])
        row["nn_ratio_feature"] = float(fs[fok, 0].mean() / (w @ fh[:, 0])) if fok.any() else math.nan
    else:
        row["nn_ratio_feature"] = math.nan
    return row, ds[:, 0]


def _copies(d: np.ndarray, w: np.ndarray | None = None) -> float:
    keep = np.isfinite(d[:, 0])
    d = d[keep]
    if not len(d):
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d[:, 1] > 0, d[:, 0] / d[:, 1], 0.0)  # two identical training images: a copy of both
    copy = (ratio < COPY_RATIO).astype(np.float64)
    return float(copy.mean()) if w is None else float(w[keep] @ copy / w[keep].sum())


# --- which images a checkpoint saw ---------------------------------------------------------------------------

def _card(path: str | Path) -> dict | None:
    for base in (Path(path), _ROOT / str(path)):
        if (base / "card.json").is_file():
            return json.loads((base / "card.json").read_text())
    return None


def _linked(card: Mapping[str, Any]) -> list[str]:
    """Checkpoint folders a card's weights came from: parent, soup / merge members, teachers."""
    out: list[str] = []
    init = card.get("init_from") or {}
    out += [init["path"]] if init.get("path") else []
    out += list((card.get("soup") or {}).get("paths") or [])
    merge = card.get("merge") or {}
    out += [m["path"] for m in [merge.get("parent") or {}, *(merge.get("members") or [])] if m.get("path")]
    out += [t["path"] for t in (card.get("objective") or {}).get("teachers") or [] if t.get("path")]
    init_base = (card.get("objective") or {}).get("init_base")
    out += [init_base["path"] if isinstance(init_base, Mapping) else init_base] if init_base else []
    return [str(p) for p in out if p]


def seen_training_set(cards: Iterable[Mapping[str, Any]], depth: int = 8) -> tuple[tuple, ...] | None:
    """The data specs (``mnist_population`` ``data`` blocks) behind some checkpoint cards, deduplicated.

    Follows :func:`_linked` folders up to ``depth`` levels. None when a card (or one it links
    to) has no ``mnist_population`` data, so the caller can fall back to the whole train split.
    """
    specs: set[tuple] = set()
    todo, seen = [(dict(c), 0) for c in cards], set()
    while todo:
        card, level = todo.pop()
        data = card.get("data") or {}
        if data.get("kind") != "mnist_population":
            return None
        pop = data.get("population") or {}
        specs.add((data.get("source", "mnist"), data.get("split", "train"), int(data["n"]), int(data.get("seed", 0)),
                   json.dumps(pop, sort_keys=True), data.get("indices_sha256")))
        for path in _linked(card):
            if path in seen or level >= depth:
                continue
            seen.add(path)
            linked = _card(path)
            if linked is None:
                return None
            todo.append((linked, level + 1))
    return tuple(sorted(specs))


@lru_cache(maxsize=16)
def training_images(specs: tuple[tuple, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The union (unique images) of the training sets :func:`seen_training_set` names: images
    (m, H, W) in [0, 1] and their labels (m,).

    Each set is rebuilt exactly as training drew it and checked against the card's
    ``indices_sha256``.
    """
    chosen: dict[tuple[str, str], set[int]] = {}
    for source, split, n, seed, pop, digest in specs:
        _, labels = load_images(source, split)
        if n < 0:  # the whole split
            chosen.setdefault((source, split), set()).update(range(len(labels)))
            continue
        idx = population_from_spec(json.loads(pop)).sample_indices(labels, n, seed)
        got = indices_digest(idx)
        if digest and got != digest:
            raise ValueError(f"rebuilding the training set {source}/{split} n={n} seed={seed} gave indices {got[:12]}…, "
                             f"but the card records {digest[:12]}… (data source changed?)")
        chosen.setdefault((source, split), set()).update(int(i) for i in idx)
    parts, tags = [], []
    for (source, split), idx in sorted(chosen.items()):
        images, labels = load_images(source, split)
        top = 255.0 if source == "mnist" else 16.0
        parts.append(images[np.array(sorted(idx))].astype(np.float32) / top)
        tags.append(labels[np.array(sorted(idx))])
    out, lab = np.concatenate(parts), np.concatenate(tags)
    out.flags.writeable = lab.flags.writeable = False
    return out, lab


def train_split(size: int) -> tuple[tuple, ...]:
    """The spec tuple meaning "the whole train split" of the 28x28 (MNIST) or 8x8 source: the fallback."""
    from .heldout import REFERENCE_SOURCES

    return ((REFERENCE_SOURCES[size], "train", -1, 0, "", None),)
