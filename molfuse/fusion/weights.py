"""Member weights of the fusion operators, validated once and carried in one form (MATH §2, §4).

- Barycenters, weighted ensembles and soups take weights on the simplex (:func:`as_weights`).
- Superposition takes per-member log-weights ℓ in nats (:class:`LogWeights`): OR uses them as
  logit offsets, ``κ = softmax(T log q + ℓ)``, so mixture weights ω enter as ``ℓ = log ω``
  and at ``T = 1`` the samples follow ``Σ softmax(ℓ)_i p_i``; AND uses them as rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import WeightsError

__all__ = ["as_weights", "LogWeights"]


def as_weights(weights: Any, k: int, what: str, simplex: bool = True, atol: float = 1e-6) -> Tensor:
    """(k,) float64 weights; on the simplex unless ``simplex=False`` (then only finite).

    Raises:
        WeightsError: wrong count, non-finite, or off the simplex where it is required.
    """
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() != k:
        raise WeightsError(f"{what}: {w.numel()} weights for {k} models")
    if not torch.isfinite(w).all():
        raise WeightsError(f"{what}: weights must be finite; got {w.tolist()}")
    if simplex and ((w < -atol).any() or abs(float(w.sum()) - 1.0) > atol):
        raise WeightsError(
            f"{what}: weights {[round(v, 6) for v in w.tolist()]} are off the simplex "
            f"(need >= 0 and sum 1, sum is {float(w.sum()):.6g})"
        )
    return w


@dataclass(frozen=True)
class LogWeights:
    """Per-member log-weights ℓ (K,) float64 in nats, checked once on construction.

    Use :meth:`from_weights` for mixture weights ω (``ℓ = log ω``, each ω > 0, on the simplex),
    :meth:`from_bias` for offsets given directly, :meth:`zeros` for none.
    """

    log: Tensor

    @classmethod
    def from_weights(cls, weights: Sequence[float], k: int, what: str = "weights") -> "LogWeights":
        w = as_weights(weights, k, what, simplex=True)
        if (w <= 0).any():
            raise WeightsError(f"{what}: mixture weights must be > 0 (ℓ = log ω); got {w.tolist()}")
        return cls(torch.tensor([math.log(float(x)) for x in w.tolist()], dtype=torch.float64))

    @classmethod
    def from_bias(cls, bias: Any, k: int, what: str = "bias") -> "LogWeights":
        return cls(as_weights(bias, k, what, simplex=False))

    @classmethod
    def zeros(cls, k: int) -> "LogWeights":
        return cls(torch.zeros(k, dtype=torch.float64))

    @classmethod
    def of(cls, value: Any, k: int, what: str = "bias") -> "LogWeights":
        """``value`` if already LogWeights (checked for K), zeros for None, else :meth:`from_bias`."""
        if isinstance(value, cls):
            if value.log.numel() != k:
                raise WeightsError(f"{what}: {value.log.numel()} log-weights for {k} models")
            return value
        return cls.zeros(k) if value is None else cls.from_bias(value, k, what)

    def mixture(self) -> list[float]:
        """``softmax(ℓ)``: the weights of the mixture OR at T = 1 samples."""
        return torch.softmax(self.log, 0).tolist()

    def tolist(self) -> list[float]:
        return self.log.tolist()
