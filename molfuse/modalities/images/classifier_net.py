"""The digit classifiers used as metrics: the CNN (class histograms, feature Fréchet distance)
and an MLP of another family, the second judge (agreement, memorisation in its own features).

Architectures ``"digit_classifier"`` (:class:`DigitClassifier`) and ``"digit_mlp"``
(:class:`DigitMLP`); :data:`FAMILIES` maps the card's architecture name to the class. Not
score models.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["DigitClassifier", "DigitMLP", "FAMILIES"]


class DigitClassifier(nn.Module):
    """Two conv stages (conv-conv-maxpool, widths ``width`` and ``2 width``), a ``feature_dim``
    hidden layer (the *features*), a linear head.

    Input (batch, 1, H, W) intensities in [0, 1] (H, W divisible by 4); output logits
    (batch, num_classes). :meth:`features` gives the penultimate ReLU activations
    (batch, feature_dim).
    """

    def __init__(self, image_size: int = 28, num_classes: int = 10, width: int = 32, feature_dim: int = 128,
                 dropout: float = 0.3):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4; got {image_size}")
        self.image_size = image_size
        w = width
        self.convs = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.hidden = nn.Linear(2 * w * (image_size // 4) ** 2, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (batch, feature_dim) for images (batch, 1, H, W) in [0, 1]."""
        h = self.convs(x - 0.5)  # centre intensities; the weights are trained with this offset
        return F.relu(self.hidden(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.features(x)))



class DigitMLP(nn.Module):
    """A fully connected judge of another family than the CNN: no convolution, no pooling.

    ``hidden`` ReLU layers with dropout on the flattened pixels; the last hidden layer
    (``feature_dim``) is the *features*, then a linear head. Same interface as
    :class:`DigitClassifier`: input (batch, 1, H, W) intensities in [0, 1], logits out,
    :meth:`features` (batch, feature_dim).
    """

    def __init__(self, image_size: int = 28, num_classes: int = 10, hidden: int = 512, feature_dim: int = 256,
                 dropout: float = 0.3):
        super().__init__()
        self.image_size = image_size
        self.body = nn.Sequential(nn.Linear(image_size * image_size, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, feature_dim))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Last hidden activations (batch, feature_dim) for images (batch, 1, H, W) in [0, 1]."""
        return F.relu(self.body((x - 0.5).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.features(x)))


FAMILIES = {"digit_classifier": DigitClassifier, "digit_mlp": DigitMLP}
