"""YAML workflow -> validated dataclasses -> run -> results folder (RESULTS.md).

Schema (``?`` = optional, default after ``=``)::

    name: str                    # required, [A-Za-z0-9_.-]+; results go to <output>/<name>/<run_name>/
    description?: str = ""       # copied into summary.md
    seed?: int = 0               # every chunk and fit seed derives from it (stable hash, see derive_seed); CLI --seed
    output?: str = results       # base folder
    run_name?: str = <timestamp> # YYYYmmdd-HHMMSS; rerunning the same folder resumes it
    schedule?: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    models:                      # required, name -> spec; kinds are a registry (register_model_kind)
      a: {kind: gaussian_mixture, means: [[x, y], ...], covs: [...], weights?: [...]}
      b: {kind: checkpoint, path: models/images/<name>, cond?: <class label> | null,
          guidance?: <w >= 0>}     # classifier-free guidance (1 + w) s(.|cond) - w s(.|null)
                                 # path: absolute, or relative to the repository root (not the
                                 # workflow file's folder); the card must match `schedule`; cond is
                                 # bound with molfuse.bind; shape from the card (data.shape / arch)
      c: {kind: soup, paths: [<checkpoint>, ...], weights?: [w_i] = uniform, remove?: [<one of paths>],
          cond?: <label>}        # weight soup (MATH §5); remove: Soup.remove from the uniform soup
    target?: <model name>        # evaluation: exact log q under it (log_q_nats_target)
    n_samples?: int = 1000       # per method
    sampler?: {steps: 500, t_end: 0.001, chunk_size: 250, device: cpu|cuda|auto, threads: null}
    methods:                     # required, list; operators are a registry (register_operator)
      - {name: str, operator: single, models: [a]}
      - {name, operator: superpose, models: [a, b, ...], mode?: or|and = or,
         temperature?: float = 1.0 (or only), bias?: [ℓ_i nats] | weights?: [ω_i] (ℓ = log ω),
         ito_correction?: bool = (mode == and)}   # exact Itô log q along AND paths
      - {name, operator: barycenter, models: [...], weights?: [λ_i] = uniform
         | fit: {data_from: <model>, n: int | data: {kind: <dataset kind>, ...},
                 window?: full|vanilla = full, n_mc?: 20000, heldout_fraction?: 0.2}}
                                 # λ learned from n samples of data_from, or from a dataset
                                 # (the training data kinds, e.g. mnist_population with n, seed)
      - {name, operator: ensemble, models: [...], rule?: mean|weighted|median|trimmed|sum = mean,
         weights?: [...] (weighted only), trim?: 0.2 (trimmed only)}
      - {name, operator: random_choice, models: [...], weights?: [p_i] = uniform}
    evaluation?:                 # image models only (an error for vectors)
      target_classes?: {7: 0.6, 9: 0.4}   # class -> weight: class_mixture_tv, coverage
      reference_classes?: [7, 9]          # real test images for feature_frechet (default: target's, else all)
      classifier?: <folder>               # default the shipped models/images/classifier
      heldout?: {n: 64, seed: 0, classes?: [...] | weights?: {...}}   # real test images (default:
                                          # target_classes) for the two model metrics below
      bits_per_dim?: {steps: 20, rho: 7.0, t_start: 1.0e-5}   # per method with a score model
      dsm_loss?: {n_t: 8, t_min: 1.0e-3}                      # (single, barycenter, ensemble)
    reports?:                    # cross-method sections of summary.md (register_report)
      - {kind: by_n, metrics: [test_bpd, ...], reference?: [<method>, ...]}
                                 # methods named <family>_n<N>_seed<S>: by_n.csv, by_n.png
      - {kind: class_share, classes: [7, 8, 9]}   # share_789.csv: their summed class fractions

Evaluation is chosen by the models' modality (``modality_of``; ``register_evaluator``):
``vectors`` (exact log q, ``evaluation/vectors.py``; samples/<method>.npy (N, D)) or
``images`` (digit classifier, ``modalities/images/evaluate.py``; samples/<method>.npy
(N, H, W) in [0, 1], samples/<method>.png, class fractions, TV, coverage, feature Fréchet).

Every error is a :class:`~molfuse.errors.WorkflowError` naming the field path, e.g.
``methods[2].models: unknown model 'c'; known: a, b``. Unknown keys are errors (typos).
YAML 1.1 reads ``1e-3`` as a string: numeric strings are accepted wherever a number is.

A run draws each method's ``n_samples`` in chunks with seeds from (seed, method, chunk),
saves each chunk atomically under ``samples/chunks/<method>/``, so rerunning the same
folder keeps finished chunks; a rerun with a different resolved config is refused.

Modules, each importing only ones listed before it: ``checks`` (field checks), ``registry``
(extension points), ``spec`` (dataclasses, load_workflow), ``kinds`` (model kinds),
``operators`` (built-in operators), ``files`` (atomic writes), ``evaluators`` (built-in
evaluators), ``report`` (picture,
provenance, summary), ``reports`` (cross-method sections: by_n, class_share), ``run`` (run_workflow, chunks, resume).
"""

from __future__ import annotations

from . import evaluators  # noqa: F401  (registers the built-in evaluators)
from . import operators  # noqa: F401  (registers the built-in operators)
from . import reports  # noqa: F401  (registers the built-in reports)
from .checks import REQUIRED
from .kinds import CheckpointModel, build_models, checkpoint_path, data_shape
from .registry import (Draw, Evaluated, Evaluator, ModelKind, Operator, Prepared, Report, RunContext, derive_seed,
                       modality_of, register_evaluator, register_model_kind, register_operator, register_report)
from .registry import _EVALUATORS, _MODEL_KINDS, _OPERATORS  # noqa: F401  (the registries; tests patch them)
from .run import RunResult, run_workflow
from .spec import MethodSpec, ModelSpec, SamplerSpec, Workflow, build_schedule, load_workflow

__all__ = ["REQUIRED", "Workflow", "ModelSpec", "MethodSpec", "SamplerSpec", "ModelKind", "Operator", "RunContext",
           "Draw", "Prepared", "RunResult", "Evaluator", "Evaluated", "CheckpointModel", "register_model_kind",
           "register_operator", "register_evaluator", "register_report", "Report", "modality_of", "load_workflow",
           "build_schedule", "build_models", "checkpoint_path", "data_shape", "derive_seed", "run_workflow"]
