"""Shared network pieces and the architecture registry used by checkpoints.

A checkpoint card names an architecture and its config; ``build(name, config)`` rebuilds
the network, so loading never unpickles code (STYLE: no pickled code).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

__all__ = ["register_architecture", "build", "architectures"]

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``name`` buildable from a config dict: ``builder(**config) -> nn.Module``."""
    if name in _ARCHITECTURES and _ARCHITECTURES[name] is not builder:
        raise ValueError(f"architecture {name!r} is already registered")
    _ARCHITECTURES[name] = builder


def build(name: str, config: dict[str, Any]) -> nn.Module:
    """A fresh network of architecture ``name`` from its config (as stored in a card)."""
    if name not in _ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_ARCHITECTURES)) or 'none'} "
                       "(import the modality that defines it, e.g. molfuse.modalities.images)")
    return _ARCHITECTURES[name](**config)


def architectures() -> list[str]:
    return sorted(_ARCHITECTURES)
