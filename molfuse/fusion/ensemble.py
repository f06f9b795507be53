"""Ensembles: per-step aggregation of member scores (MATH §2 "Ensembles").

Every rule acts per element across the member axis, so it is invariant to member order
and to the other samples in the batch. The result is itself a score model, so ensembles
nest with every other operator (``Ensemble([Ensemble([a, b]), c])``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor

from ..errors import WeightsError
from ..models import names
from ..schedules import Schedule
from ._common import check_members, member_fns, stack_scores
from .weights import as_weights

__all__ = ["RULES", "Ensemble", "aggregate", "trim_count"]

RULES = ("mean", "weighted", "median", "trimmed", "sum")


def trim_count(k: int, trim: float) -> int:
    """Members dropped from EACH end by the trimmed mean: ``floor(trim * k)``.

    A tolerance of 1e-9 keeps e.g. ``0.29 * 100`` (28.999...) from rounding down to 28.

    Raises:
        ValueError: ``trim`` is outside ``[0, 0.5]`` or nothing would remain.
    """
    if not (0.0 <= trim <= 0.5):
        raise ValueError(f"trim must be in [0, 0.5]; got {trim}")
    m = int(math.floor(trim * k + 1e-9))
    if k - 2 * m < 1:
        raise ValueError(f"trimmed mean with trim={trim} drops {m} of {k} members from each end; nothing remains")
    return m


def aggregate(scores: Tensor, rule: str, weights: Tensor | None = None, trim: float = 0.2) -> Tensor:
    """Aggregate member scores along dim 1 (MATH §2 "Ensembles").

    Args:
        scores: (batch, K, ...) member scores, as from ``stack_scores``.
        rule: one of :data:`RULES`.
        weights: (K,) simplex weights, only for ``rule="weighted"``.
        trim: fraction dropped from each end by ``rule="trimmed"``.

    Returns:
        (batch, ...) aggregated score.
    """
    k = scores.shape[1]
    if rule == "mean":
        return scores.mean(dim=1)
    if rule == "weighted":
        if weights is None:
            raise WeightsError("rule='weighted' needs weights")
        w = weights.to(dtype=scores.dtype, device=scores.device)
        return (w.reshape((1, k) + (1,) * (scores.dim() - 2)) * scores).sum(dim=1)
    if rule == "sum":
        return scores.sum(dim=1)  # product of experts: density ∝ Π p_i
    if rule in ("median", "trimmed"):
        ordered = scores.sort(dim=1).values  # coordinate-wise order statistics
        if rule == "median":
            # Even K: mean of the two middle values (torch.median would return the lower).
            return 0.5 * (ordered[:, (k - 1) // 2] + ordered[:, k // 2])
        m = trim_count(k, trim)
        return ordered[:, m : k - m].mean(dim=1)
    raise ValueError(f"unknown ensemble rule {rule!r}; expected one of {RULES}")


class Ensemble:
    """Per-step aggregation of K >= 2 score models; itself a score model (MATH §2).

    Members may predict score, eps, x0 or v: each is converted to a score in the one shared
    convention (``member_fns``) before aggregation, so mixed members combine correctly.

    Rules (per element, across members):

    - ``"mean"``: arithmetic mean. Its DSM loss is never above the members' average DSM
      loss, per sample (ambiguity decomposition / Jensen).
    - ``"weighted"``: ``Σ_i w_i s_i`` with ``weights`` required and on the simplex.
    - ``"median"``: coordinate-wise median; for even K the average of the two middle values,
      so the rule is symmetric in the members.
    - ``"trimmed"``: coordinate-wise sort, drop ``floor(trim * K)`` values from each end and
      average the rest. When ``floor(trim * K) == 0`` (e.g. K = 3, trim = 0.2) nothing is
      dropped and it equals the mean. Refused if nothing would remain.
    - ``"sum"``: product of experts, ``Σ_i s_i`` (density ∝ Π_i p_i). K identical members
      give K times the member's score, i.e. the density ``p^K``, not ``p``.

    Args:
        models: K >= 2 score models.
        rule: one of :data:`RULES`.
        weights: (K,) simplex weights; only with ``rule="weighted"``.
        schedule: convention to express every member in; must match members that declare one.
        trim: fraction trimmed from each end by ``rule="trimmed"`` (in [0, 0.5]).

    Raises:
        ValueError: unknown rule, weights with a rule other than "weighted", bad trim.
        WeightsError: weights missing for "weighted", wrong count, or off the simplex.
        ConventionError: members declare different schedules.
    """

    prediction = "score"

    def __init__(
        self,
        models: Sequence[Any],
        rule: str = "mean",
        weights: Any = None,
        schedule: Schedule | None = None,
        trim: float = 0.2,
    ):
        self.models = check_members(models, "Ensemble", minimum=2)
        if rule not in RULES:
            raise ValueError(f"unknown ensemble rule {rule!r}; expected one of {RULES}")
        k = len(self.models)
        if weights is not None and rule != "weighted":
            raise ValueError(f"Ensemble: weights were given with rule={rule!r}; they are only used by rule='weighted'")
        if rule == "weighted" and weights is None:
            raise WeightsError("Ensemble: rule='weighted' needs weights (K numbers on the simplex)")
        self.weights = as_weights(weights, k, "Ensemble", simplex=True) if weights is not None else None
        if rule == "trimmed":
            trim_count(k, trim)  # refuse early rather than at the first call
        self.rule, self.trim = rule, float(trim)
        self._fns, self.schedule, self.space = member_fns(self.models, schedule)
        self.name = f"Ensemble[{rule}]({', '.join(names(self.models))})"

    def __call__(self, x: Tensor, t: Tensor | float, cond: Any = None, mask: Tensor | None = None) -> Tensor:
        """Aggregated score at ``(x, t)``.

        Args:
            x: (batch, ...) noisy input.
            t: float or (batch,) times.
            cond: optional condition passed to every member.
            mask: node mask of point-cloud states (MATH §6), passed to every member.

        Returns:
            (batch, ...) score in the shared convention.
        """
        scores = stack_scores(self._fns, x, t, cond, mask)  # (batch, K, ...)
        return aggregate(scores, self.rule, self.weights, self.trim)

    def __repr__(self) -> str:
        return self.name
