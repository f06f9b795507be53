"""Fusion operators. Each operator that returns a model is itself a score model, so they nest."""

from .barycenter import (Barycenter, BarycenterFit, LinearCombination, fit_barycenter_weights, guidance,
                         solve_simplex_qp)
from .ensemble import RULES, Ensemble, aggregate
from .soup import Soup, check_mergeable, soup
from .superposition import SuperpositionResult, and_weights, or_weights, superpose
from ._common import stack_scores
from .weights import LogWeights, as_weights

__all__ = [
    "Barycenter", "BarycenterFit", "LinearCombination", "fit_barycenter_weights", "guidance", "solve_simplex_qp",
    "Ensemble", "RULES", "aggregate", "Soup", "check_mergeable", "soup",
    "SuperpositionResult", "and_weights", "or_weights", "superpose", "LogWeights", "as_weights", "stack_scores",
]
