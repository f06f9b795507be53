"""What plugs in: modalities and everything a modality brings, found by name.

A modality (images, molecules, proteins, a user's own) is one folder with a ``register()``
that calls :func:`register_modality` with a :class:`Modality`: its network architectures,
training data kinds, campaign model kinds, evaluator (with its YAML schema and metric
columns), reports, sample file writers and potentials for steering, the packages it needs
and the extra that installs them. Nothing else in molfuse names a modality: cards record
``modality``, and every path that needs one (loading a checkpoint, training, running a
workflow, the CLI) looks it up here, which first imports the modalities it can find
(:func:`discover`): the subpackages of ``molfuse.modalities`` and the entry points of group
``molfuse.modalities`` (third-party packages). A modality whose dependencies are missing is
remembered with its install hint, so the lookup says what to install instead of
"unknown". A modality may also be registered directly (tests, notebooks).

This module is plumbing of the core layer: it imports only the base layer; modalities are
imported at run time by name, never statically.
"""

from __future__ import annotations

from ..base.registry import UnknownNameError
from .contracts import (DataKind, EvalContext, Evaluated, Evaluator, FileJudge, MethodRun, MissingModalityError, Modality,
                        ModelKind, ObjectiveKind, Potential, Report, TrainingData, Writer)
from .registry import (ENTRY_POINT_GROUP, MODALITIES, OBJECTIVE_GROUP, architecture, data_kind, data_kind_modality,
                       discover, modalities, modality, model_kind, model_kinds, objective, register_model_kind,
                       register_modality, register_objective, register_report, report, reports, unavailable)

__all__ = ["Modality", "Potential", "DataKind", "TrainingData", "ModelKind", "Evaluator", "Evaluated", "EvalContext",
           "MethodRun", "Report", "FileJudge", "Writer", "ObjectiveKind", "MissingModalityError", "UnknownNameError",
           "register_modality", "modality", "modalities", "unavailable", "discover", "architecture", "data_kind",
           "data_kind_modality", "model_kind", "model_kinds", "register_model_kind", "report", "reports",
           "register_report", "objective", "register_objective", "MODALITIES", "ENTRY_POINT_GROUP", "OBJECTIVE_GROUP"]
