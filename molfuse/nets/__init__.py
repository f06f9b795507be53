"""Shared network pieces (time embeddings, the vector MLP) and ``build``, used by checkpoints.

A checkpoint card names an architecture and its config; ``build(name, config)`` rebuilds the
network from the modality that registered that architecture (:mod:`molfuse.plugins`), so
loading never unpickles code (STYLE: no pickled code).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .. import plugins
from .style import STYLE_ARCHITECTURE, StyledNet

__all__ = ["build", "architectures"]


def build(name: str, config: dict[str, Any]) -> nn.Module:
    """A fresh network of architecture ``name`` from its config (as stored in a card).

    Raises:
        plugins.MissingModalityError: no modality registers ``name`` (or its dependencies
            are missing: the message says what to install).
    """
    if name == STYLE_ARCHITECTURE:  # a style student wraps a base architecture (MATH §5, DMM)
        return StyledNet.from_config(build, **config)
    return plugins.architecture(name)(**config)


def architectures() -> list[str]:
    """Every architecture the registered modalities provide."""
    return sorted({a for m in plugins.modalities() for a in m.architectures} | {STYLE_ARCHITECTURE})
