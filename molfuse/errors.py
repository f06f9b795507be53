"""Exceptions that name the problem (bad shapes, conventions, weights, merges, workflows).

Part of the base layer: imported by everything, importing nothing of molfuse.
"""

from __future__ import annotations

__all__ = ["ConventionError", "MergeError", "WeightsError", "WorkflowError", "SamplerError", "NonFiniteError",
           "CheckpointError", "FolderLockedError", "DataError"]


class ConventionError(ValueError):
    """Models disagree on (or do not declare) prediction type, schedule or data space."""


class WeightsError(ValueError):
    """Fusion weights are malformed (wrong count, off the simplex where it is required)."""


class MergeError(ValueError):
    """State dicts cannot be merged (keys, shapes, dtypes or integer buffers differ)."""


class SamplerError(ValueError):
    """Sampler settings that are invalid, or that break an estimator the caller asked for.
    ``field`` names the offending option when one does (``"temperature"``), so a workflow can
    report it under its own path."""

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field


class NonFiniteError(SamplerError):
    """A model returned NaN / inf; the message names the model and the time t."""


class WorkflowError(ValueError):
    """A campaign file is malformed; the message names the offending field."""


class CheckpointError(ValueError):
    """A checkpoint is missing, tampered with, or does not fit the architecture its card names."""


class FolderLockedError(WorkflowError):
    """Another process is writing the same results folder."""


class DataError(ValueError):
    """A data file or array is unusable (not a numeric npz, non-finite or absurd values, masks that do
    not fit the model); the message names the source and what is wrong."""
