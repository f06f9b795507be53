"""The shipped digit classifier: train once (plain torch loop), load safely, classify, features.

Implementation module; the public names are re-exported by :mod:`.classifier` and the
package (the command-line entry point lives in :mod:`.classifier`).

Rebuild the shipped files (``models/images/classifier/``) with
``python -m molfuse.modalities.images.classifier --out models/images/classifier``, and the
second judge, an MLP (``models/images/judge_mlp/``), with
``python -m molfuse.modalities.images.classifier --architecture digit_mlp --seed 1 --epochs 80 --out models/images/judge_mlp``.
Weights are a safetensors file; ``card.json`` holds the architecture config, the sha256 of
the weights, the data, licence, seed, command and the held-out test accuracy. Loading
rebuilds the network from the card and never unpickles anything.
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ...base.io import atomic_write, sha256_bytes, sha256_file, write_text
from .classifier_net import FAMILIES, DigitClassifier
from .data import load_mnist

__all__ = ["DEFAULT_CLASSIFIER_DIR", "DEFAULT_JUDGE_DIR", "COMMAND", "JUDGE_COMMAND", "train_classifier", "save_classifier", "load_classifier", "classify",
           "features", "accuracy", "as_unit_images", "load_judge"]

DEFAULT_CLASSIFIER_DIR = Path(__file__).resolve().parents[3] / "models" / "images" / "classifier"
WEIGHTS, CARD = "weights.safetensors", "card.json"
DEFAULT_JUDGE_DIR = DEFAULT_CLASSIFIER_DIR.parent / "judge_mlp"
COMMAND = "python -m molfuse.modalities.images.classifier --out models/images/classifier"
JUDGE_COMMAND = ("python -m molfuse.modalities.images.classifier --architecture digit_mlp --seed 1 --epochs 80 "
                 "--out models/images/judge_mlp")


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random rotation (±10°), scale (0.9-1.1) and shift (±1.4 px) of (batch, 1, 28, 28) images."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen) * 2 - 1
    ang, s, shift = u[:, 0] * math.radians(10), 1 + 0.1 * u[:, 1], 0.1 * u[:, 2:]
    theta = torch.stack([torch.stack([torch.cos(ang) / s, -torch.sin(ang) / s, shift[:, 0]], 1),
                         torch.stack([torch.sin(ang) / s, torch.cos(ang) / s, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int = 20, batch_size: int = 128,
                     lr: float = 3e-3, seed: int = 0, augment: bool = True, progress: bool = False,
                     config: dict[str, Any] | None = None,
                     architecture: str = "digit_classifier") -> tuple[DigitClassifier, dict[str, Any]]:
    """Train a digit classifier (:data:`~.classifier_net.FAMILIES`) with Adam and a cosine rate.

    Args:
        images: uint8 (n, H, W) in 0..255; labels: (n,) int.
        augment: random small rotations, scalings and shifts each step.
        architecture: ``"digit_classifier"`` (the CNN) or ``"digit_mlp"`` (the second judge).

    Returns:
        The trained network (eval mode) and a log: config, seed, seconds, final loss.
    """
    if architecture not in FAMILIES:
        raise ValueError(f"unknown classifier architecture {architecture!r}; known: {sorted(FAMILIES)}")
    defaults = ({"width": 32, "feature_dim": 128} if architecture == "digit_classifier"
                else {"hidden": 512, "feature_dim": 256})
    config = {"image_size": images.shape[-1], "num_classes": 10, **defaults, "dropout": 0.3, **(config or {})}
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = FAMILIES[architecture](**config)
    x, y = as_unit_images(images), torch.as_tensor(labels, dtype=torch.long)
    steps = epochs * math.ceil(len(x) / batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    start, losses = time.perf_counter(), []
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = _augment(x[idx], gen) if augment else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if progress:
            print(f"epoch {epoch + 1}/{epochs}  loss {np.mean(losses[-20:]):.4f}  {time.perf_counter() - start:.0f} s")
    net.eval()
    log = {"config": config, "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "augment": augment,
           "optimizer": "Adam, one-cycle cosine rate", "seconds": round(time.perf_counter() - start, 1),
           "threads": torch.get_num_threads(), "final_loss": float(np.mean(losses[-20:]))}
    return net, log


def save_classifier(net: DigitClassifier, out: str | Path, card: dict[str, Any]) -> Path:
    """Write ``weights.safetensors`` and ``card.json`` (with the weights' sha256) atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save as st_save

    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    blob = st_save(state)
    atomic_write(out / WEIGHTS, lambda fh: fh.write(blob))
    card = {**card, "weights": WEIGHTS, "sha256": sha256_bytes(blob)}
    write_text(out / CARD, json.dumps(card, indent=2) + "\n")
    return out


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The shipped classifier (eval mode), rebuilt from its card; the weights' sha256 is checked.

    Args:
        path: a folder with ``card.json`` and ``weights.safetensors`` (default: the shipped
            ``models/images/classifier``).

    Raises:
        FileNotFoundError: no card/weights (rebuild with the command in the module doc).
        ValueError: the weights do not match the card's sha256.
    """
    return _load(str(Path(path or DEFAULT_CLASSIFIER_DIR).resolve()))


def load_judge(path: str | Path | None = None) -> DigitClassifier:
    """The second judge (default the shipped MLP ``models/images/judge_mlp``), as :func:`load_classifier`."""
    return _load(str(Path(path or DEFAULT_JUDGE_DIR).resolve()))


@lru_cache(maxsize=4)
def _load(path: str) -> DigitClassifier:
    from safetensors.torch import load_file

    folder = Path(path)
    command = JUDGE_COMMAND if folder == DEFAULT_JUDGE_DIR else COMMAND
    if not (folder / CARD).is_file():
        raise FileNotFoundError(f"no classifier card at {folder / CARD}; rebuild it with: {command}")
    card = json.loads((folder / CARD).read_text())
    weights = folder / card.get("weights", WEIGHTS)
    if Path(card.get("weights", WEIGHTS)).name != card.get("weights", WEIGHTS):
        raise ValueError(f"{folder / CARD}: weights must be a file name inside the folder; got {card.get('weights')!r}")
    digest = sha256_file(weights)
    if digest != card["sha256"]:
        raise ValueError(f"{weights} has sha256 {digest} but the card says {card['sha256']}; rebuild: {command}")
    if card.get("architecture") not in FAMILIES:
        raise ValueError(f"{folder / CARD}: not a digit classifier card (architecture {card.get('architecture')!r}; "
                         f"known: {sorted(FAMILIES)})")
    net = FAMILIES[card["architecture"]](**card["config"])
    net.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=True)
    return net.eval()


def as_unit_images(images: np.ndarray | Tensor) -> Tensor:
    """uint8 pixels (0..255) or floats in [0, 1], shape (n, H, W) or (n, 1, H, W) -> float32 (n, 1, H, W).

    Floats are taken as intensities in [0, 1] (``samples.npy``, :func:`~.data.to_unit`);
    floats clearly outside (model space [-1, 1]) are refused. NaNs pass through.
    """
    arr = images.detach().cpu() if isinstance(images, Tensor) else torch.as_tensor(np.array(images, copy=True))
    if arr.dim() == 3:
        arr = arr[:, None]
    if arr.dim() != 4 or arr.shape[1] != 1:
        raise ValueError(f"images must be (n, H, W) or (n, 1, H, W); got {tuple(arr.shape)}")
    if arr.dtype == torch.uint8:
        return arr.to(torch.float32) / 255.0
    x = arr.to(torch.float32)
    finite = x[torch.isfinite(x)]
    if finite.numel() and (float(finite.min()) < -0.02 or float(finite.max()) > 1.02):
        raise ValueError("float images must be intensities in [0, 1]; model-space samples need to_unit(x) first")
    return x.clamp(0.0, 1.0)


def _run(images: np.ndarray | Tensor, net: DigitClassifier | None, batch_size: int) -> tuple[Tensor, Tensor, np.ndarray]:
    net = net if net is not None else load_classifier()
    x = as_unit_images(images)
    if x.shape[-1] != net.image_size or x.shape[-2] != net.image_size:
        raise ValueError(f"the classifier takes {net.image_size}x{net.image_size} images; got {tuple(x.shape[-2:])}")
    valid = torch.isfinite(x.flatten(1)).all(1)
    x = torch.where(valid[:, None, None, None], x, torch.zeros(()))
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            f = net.features(x[i:i + batch_size])
            feats.append(f)
            logits.append(net.head(f))
    if not feats:
        return torch.zeros(0, net.head.in_features), torch.zeros(0, net.head.out_features), valid.numpy()
    return torch.cat(feats), torch.cat(logits), valid.numpy()


def classify(images: np.ndarray | Tensor, classifier: DigitClassifier | None = None,
             batch_size: int = 500) -> pd.DataFrame:
    """One row per image: ``pred`` (int, -1 if invalid), ``prob_max``, ``valid``, ``reason``.

    Args:
        images: uint8 (n, 28, 28) pixels or float intensities in [0, 1]; (n, 1, 28, 28) too.
        classifier: default the shipped one (:func:`load_classifier`).
    """
    _, logits, valid = _run(images, classifier, batch_size)
    prob = torch.softmax(logits, dim=1)
    pmax, pred = prob.max(dim=1)
    return pd.DataFrame({
        "pred": np.where(valid, pred.numpy(), -1).astype(np.int64),
        "prob_max": np.where(valid, pmax.numpy().astype(np.float64), np.nan),
        "valid": valid,
        "reason": np.where(valid, "", "non-finite pixels"),
    })


def class_probabilities(images: np.ndarray | Tensor, classifier: DigitClassifier | None = None,
                        batch_size: int = 500) -> np.ndarray:
    """Softmax class probabilities, float64 (n, classes); rows of invalid images are NaN."""
    _, logits, valid = _run(images, classifier, batch_size)
    out = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    out[~valid] = np.nan
    return out


def features(images: np.ndarray | Tensor, classifier: DigitClassifier | None = None,
             batch_size: int = 500) -> np.ndarray:
    """Penultimate classifier features, float64 (n, F); rows of invalid images are NaN."""
    f, _, valid = _run(images, classifier, batch_size)
    out = f.numpy().astype(np.float64)
    out[~valid] = np.nan
    return out


def accuracy(classifier: DigitClassifier | None = None, split: str = "test") -> tuple[float, dict[int, float]]:
    """Accuracy of the classifier on a fixed MNIST split, overall and per class."""
    images, labels = load_mnist(split)
    pred = classify(images, classifier)["pred"].to_numpy()
    per = {int(c): float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
    return float((pred == labels).mean()), per
