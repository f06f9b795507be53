"""Digit images molfuse did not draw, judged like its own (``molfuse evaluate``).

A folder of PNG files (one image each; colour is read as luminance) or a ``.npy`` array of
images ((n, H, W) or (n, 1, H, W); uint8 0–255, or floats in [0, 1] with NaN for a failed image)
goes through :func:`~.evaluate.evaluate_images` with the ``evaluation:`` settings of a workflow
(target classes, reference classes, classifier, second judge, memorisation against the whole
train split, since no checkpoint card says what the images' generator saw). An unreadable PNG,
one of another size than the classifier reads, or a NaN image is a row with the reason.
The model metrics (``bits_per_dim``, ``dsm_loss``) need a score model and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...base.checks import fail
from ...plugins import Evaluated, FileJudge
from ._classifier import load_classifier
from .evaluate import EVALUATOR, judge_setting, evaluate_images
from .grid import save_grid
from .memorisation import train_split

__all__ = ["FILES", "judge_images", "read_images"]


def _pngs(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() == ".png")


def _accepts(path: Path) -> bool:
    path = Path(path)
    return bool(_pngs(path)) if path.is_dir() else path.suffix.lower() == ".npy"


def read_images(path: str | Path, size: int) -> tuple[np.ndarray, list[str], list[str]]:
    """``(images (n, size, size) float64 in [0, 1] with NaN for unusable ones, names, reasons)``
    from a PNG folder or a ``.npy`` file; a problem with the whole input raises a WorkflowError."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = _pngs(path)
        out, names, reasons = np.full((len(files), size, size), np.nan), [], []
        for i, f in enumerate(files):
            names.append(str(f.relative_to(path)))
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
            except Exception as e:  # noqa: BLE001 - an unreadable file is a row, whatever PIL raises
                reasons.append(f"unreadable PNG: {type(e).__name__}: {str(e)[:120]}")
                continue
            if a.shape != (size, size):
                reasons.append(f"{a.shape[0]}x{a.shape[1]} pixels; the classifier reads {size}x{size}")
                continue
            out[i] = a
            reasons.append("")
        return out, names, reasons
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        fail(f"input {path}", f"not a readable .npy array of images ({type(e).__name__}: {str(e)[:120]})")
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (size, size):
        fail(f"input {path}", f"expected images (n, {size}, {size}) or (n, 1, {size}, {size}); got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
            fail(f"input {path}", f"values from {finite.min():.3g} to {finite.max():.3g}; expected intensities in "
                                  "[0, 1] (or uint8 0-255)")
    else:
        fail(f"input {path}", f"dtype {a.dtype}; expected uint8 or floats in [0, 1]")
    return np.clip(a, 0.0, 1.0), [f"{i}" for i in range(len(a))], ["" for _ in range(len(a))]


def judge_images(path: str | Path, settings: Mapping[str, Any], folder: Path, name: str) -> Evaluated:
    """The images at ``path`` judged under ``settings`` (the image evaluator's, parsed); draws
    ``samples/<name>.png`` under ``folder``."""
    for key in ("bits_per_dim", "dsm_loss"):
        if key in settings:
            fail(f"evaluation.{key}", "needs the score model that drew the images; molfuse evaluate has only the images")
    size = load_classifier(settings.get("classifier")).image_size
    unit, names, reasons = read_images(path, size)
    mem = settings.get("memorisation", True)
    table, row = evaluate_images(unit, settings.get("target_classes"), settings.get("reference_classes"),
                                 settings.get("classifier"), judge_setting(settings, size),
                                 train_split(size) if mem else None)
    if mem:
        row["train_seen_from"] = "train split"
    table.insert(0, "file", names)
    bad = np.array([bool(r) for r in reasons])
    table["reason"] = np.where(bad, reasons, table["reason"])
    table["valid"] = table["valid"].to_numpy(bool) & ~bad
    row.pop("n_valid", None)
    pictures = []
    if len(unit):
        save_grid(np.nan_to_num(unit[:64]), Path(folder) / "samples" / f"{name}.png")
        pictures.append(f"samples/{name}.png")
    return Evaluated(table, row, pictures)


def _caveats(settings: Mapping[str, Any]) -> list[str]:
    return ["Classes are read by the shipped digit classifier (and a second judge); memorisation is measured against "
            "the whole train split, since no checkpoint card says what the images' generator saw. feature_frechet "
            "is biased upwards for fewer than 128 images; compare inputs at equal n."]


FILES = FileJudge(
    kinds=("a folder of *.png", "*.npy"), accepts=_accepts, judge=judge_images, caveats=_caveats,
    provenance=lambda s: {"classifier": s.get("classifier") or "models/images/classifier (shipped)",
                          "memorisation_reference": "train split" if s.get("memorisation", True) else None},
    notes=EVALUATOR.notes, metric_columns=EVALUATOR.metric_columns,
    sample_columns=("file", *EVALUATOR.sample_columns))
