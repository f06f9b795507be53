"""molfuse: fuse pre-trained diffusion (score-based) models.

The core (schedules, state spaces, conversions, analytic models, samplers, density
estimators, losses) lives at the top level; fusion operators in :mod:`molfuse.fusion`,
training and checkpoints in :mod:`molfuse.training`, modalities in :mod:`molfuse.modalities`
(found through :mod:`molfuse.plugins`), workflows in :mod:`molfuse.campaign`. The layers and
what each may import: docs/architecture.md.
"""

from .base.provenance import VERSION as __version__
from .convert import PREDICTIONS, resolve_schedule, score_fn, to_score
from .density import ito_increment, log_likelihood, prior_log_prob
from .errors import (CheckpointError, ConventionError, MergeError, NonFiniteError, SamplerError, WeightsError,
                     WorkflowError)
from .losses import dsm_loss
from .models import Bound, CentredGaussianMixture, GaussianMixture, ScoreModel, bind
from .sampling import SampleResult, sample
from .schedules import Schedule, VPSchedule
from .spaces import Chain, Euclidean, MoleculeGraph, PointCloud, Space

__all__ = [
    "PREDICTIONS", "resolve_schedule", "score_fn", "to_score",
    "dsm_loss", "ito_increment", "log_likelihood", "prior_log_prob",
    "CheckpointError", "ConventionError", "MergeError", "NonFiniteError", "SamplerError", "WeightsError",
    "WorkflowError", "Bound", "CentredGaussianMixture", "GaussianMixture", "ScoreModel", "bind",
    "SampleResult", "sample", "Schedule", "VPSchedule", "Space", "Euclidean", "PointCloud", "Chain", "MoleculeGraph",
    "__version__",
]
