"""Exceptions that name the problem (bad shapes, conventions, weights, merges, workflows)."""

from __future__ import annotations

__all__ = ["ConventionError", "MergeError", "WeightsError", "WorkflowError", "SamplerError"]


class ConventionError(ValueError):
    """Models disagree on (or do not declare) prediction type, schedule or data space."""


class WeightsError(ValueError):
    """Fusion weights are malformed (wrong count, off the simplex where it is required)."""


class MergeError(ValueError):
    """State dicts cannot be merged (keys, shapes, dtypes or integer buffers differ)."""


class SamplerError(ValueError):
    """Sampler settings that are invalid, or that break an estimator the caller asked for."""


class WorkflowError(ValueError):
    """A campaign file is malformed; the message names the offending field."""
