"""Fusion operators. Each operator that returns a model is itself a score model, so they nest."""

from .barycenter import (Barycenter, BarycenterFit, LinearCombination, fit_barycenter_weights, guidance,
                         solve_simplex_qp)
from .distill import Distillation, FeatureTap, style_errors, x0_from_score
from .ensemble import RULES, Ensemble, aggregate
from .fkc import FKCResult, fkc_log_weight_rate, fkc_sample
from .merge import RULES as MERGE_RULES, dare, merge, rule_options, task_arithmetic, task_vectors, ties, weighted_sum
from .selection import choose_by_heldout, heldout_dsm, heldout_losses
from .soup import Soup, check_mergeable, soup
from .steer import RAMPS, Tilt, denoised, ramp_fraction
from .superposition import SuperpositionResult, and_weights, or_weights, superpose
from ._common import stack_scores
from .weights import LogWeights, as_weights

__all__ = ["Distillation", "FeatureTap", "style_errors", "x0_from_score",
    "Barycenter", "BarycenterFit", "LinearCombination", "fit_barycenter_weights", "guidance", "solve_simplex_qp",
    "Ensemble", "RULES", "aggregate", "FKCResult", "fkc_log_weight_rate", "fkc_sample", "Soup", "check_mergeable", "soup",
    "RAMPS", "Tilt", "denoised", "ramp_fraction",
    "SuperpositionResult", "and_weights", "or_weights", "superpose", "LogWeights", "as_weights", "stack_scores",
    "MERGE_RULES", "choose_by_heldout", "dare", "heldout_dsm", "heldout_losses", "merge",
    "rule_options", "task_arithmetic", "task_vectors", "ties", "weighted_sum",
]
