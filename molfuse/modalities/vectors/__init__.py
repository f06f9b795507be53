"""Vectors: plain (n, D) states — analytic Gaussian mixtures, MLP score nets, exact-density evaluation.

Registers modality ``vectors``: architecture ``mlp`` (:class:`molfuse.nets.mlp.MLPScoreNet`),
data kind ``gaussian_mixture_samples``, model kind ``gaussian_mixture``, the exact-density
evaluator, the ``.npy`` sample writer and the potentials ``linear`` and ``quadratic`` (steering,
:mod:`.potentials`). Needs nothing beyond molfuse's core dependencies.
"""

from __future__ import annotations

from ... import plugins
from ...nets.mlp import MLPScoreNet
from .data import DATA_KIND, MODEL_KIND, gaussian_mixture_model, gaussian_mixture_samples
from .evaluate import EVALUATOR, write_npy
from .metrics import coordinates, exact_log_q, method_metrics, per_sample_table, set_distance
from .potentials import POTENTIALS, linear_energy, quadratic_energy

__all__ = ["MODALITY", "register", "gaussian_mixture_samples", "gaussian_mixture_model", "coordinates", "exact_log_q",
           "method_metrics", "per_sample_table", "set_distance", "POTENTIALS", "linear_energy", "quadratic_energy"]

MODALITY = plugins.Modality(
    name="vectors", description="plain vectors (toy / tabular data) with exact densities where members have them",
    architectures={"mlp": MLPScoreNet}, data_kinds={"gaussian_mixture_samples": DATA_KIND},
    model_kinds={"gaussian_mixture": MODEL_KIND}, evaluator=EVALUATOR, writers={"npy": write_npy},
    set_distance=set_distance, potentials=POTENTIALS)


def register() -> None:
    """Register modality ``vectors`` (idempotent)."""
    plugins.register_modality(MODALITY)
