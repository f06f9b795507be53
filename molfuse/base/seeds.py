"""Seeds derived from a run's seed and names, stable across processes and Python versions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["derive_seed", "seeded_generator"]


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from ``(seed, *parts)``: first 8 bytes of sha256 of their JSON (stable
    across processes and Python versions, unlike ``hash()``)."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seeded_generator(seed: int, *parts: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``derive_seed(seed, *parts)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *parts))
