"""molfuse: fuse pre-trained diffusion (score-based) models.

The core (schedules, conversions, analytic models, samplers, density estimators) lives at
the top level; fusion operators in :mod:`molfuse.fusion`.
"""

from .convert import PREDICTIONS, resolve_schedule, score_fn, to_score
from .density import ito_increment, log_likelihood, prior_log_prob
from .losses import dsm_loss
from .errors import ConventionError, MergeError, SamplerError, WeightsError, WorkflowError
from .models import Bound, GaussianMixture, ScoreModel, bind
from .sampling import SampleResult, sample
from .schedules import Schedule, VPSchedule

__version__ = "0.1.0"

__all__ = [
    "PREDICTIONS", "resolve_schedule", "score_fn", "to_score",
    "dsm_loss", "ito_increment", "log_likelihood", "prior_log_prob",
    "ConventionError", "MergeError", "SamplerError", "WeightsError", "WorkflowError",
    "Bound", "GaussianMixture", "ScoreModel", "bind",
    "SampleResult", "sample", "Schedule", "VPSchedule", "__version__",
]
