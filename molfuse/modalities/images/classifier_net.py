"""A small CNN digit classifier used as a metric (class histograms, feature Fréchet distance).

The images modality registers it as architecture ``"digit_classifier"``. Not a score model.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["DigitClassifier"]


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

