"""YAML workflow -> validated dataclasses -> run -> results folder (RESULTS.md).

Schema (``?`` = optional, default after ``=``)::

    name: str                    # required, [A-Za-z0-9_.-]+; results go to <output>/<name>/<run_name>/
    description?: str = ""       # copied into summary.md
    seed?: int = 0               # every chunk and fit seed derives from it (stable hash, see derive_seed); CLI --seed
    output?: str = results       # base folder
    run_name?: str = <timestamp> # YYYYmmdd-HHMMSS; rerunning the same folder resumes it
    schedule?: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    models:                      # required, name -> spec; kinds: the campaign's (checkpoint, soup, merge)
                                 # and the modalities' (molfuse.plugins), e.g. vectors':
      a: {kind: gaussian_mixture, means: [[x, y], ...], covs: [...], weights?: [...]}
      b: {kind: checkpoint, path: models/images/<name>, cond?: <class label | [property values] |
          style index or name | [style weights] | {style: weight}> | null,
          guidance?: <w >= 0>,     # classifier-free guidance (1 + w) s(.|cond) - w s(.|null)
          sizes?: {n: weight}}     # node counts to draw (e.g. {128: 1}: 128-residue chains only)
                                 # instead of the card's histogram; within the model's capacity
                                 # path: absolute, or relative to the repository root (not the
                                 # workflow file's folder); the card must match `schedule`; cond is
                                 # checked against the card's conditioning kind (property values: one
                                 # per property, numbers or numeric strings, within 50 training sd of
                                 # the mean; checked while the workflow is read) and bound with
                                 # molfuse.bind; shape, space and modality from the card
      c: {kind: soup, paths: [<checkpoint>, ...], weights?: [w_i] = uniform, remove?: [<one of paths>],
          cond?: <label>}        # weight soup (MATH §5); remove: Soup.remove from the uniform soup
      d: {kind: merge, rule: weighted_sum | task_arithmetic | ties | dare, paths: [...], parent?: <ckpt>,
          weights?, scale?, density?, drop?, seed?, combine?, cond?,
          select?: {option, values: [...], data: {kind: ...}, n: 256, n_t: 4, seed: 0}}
                                 # weight merges of fine-tunes of `parent` (molfuse.campaign.merges)
    target?: <model name>        # evaluation: exact log q under it (log_q_nats_target)
    n_samples?: int = 1000       # per method; refused when every method's samples and rows cannot fit in memory
    sampler?: {steps: 500, t_end: 0.001, chunk_size: 250, device: cpu|cuda|auto, threads: null,
               grid_power: 1.0,   # time grid t_k = t_end + (1 - t_end)(1 - k/steps)^p; p > 1: finer near t_end
               denoise: false}    # true: end with one Tweedie step to E[x_0 | x_t_end] on the method's score
                                  # threads null: 1 on CPU (runs sharing cores thrash at torch's default)
    methods:                     # required, list; operators are a registry (register_operator)
      - {name: str, operator: single, models: [a]}
      - {name, operator: superpose, models: [a, b, ...], mode?: or|and = or,
         temperature?: float = 1.0 (or only), bias?: [ℓ_i nats] | weights?: [ω_i] (ℓ = log ω),
         ito_correction?: bool (and only) = true}   # exact Itô log q along AND paths; false: uncorrected
      - {name, operator: barycenter, models: [...], weights?: [λ_i] = uniform
         | fit: {data_from: <model>, n: int | data: {kind: <dataset kind>, ...},
                 window?: full|vanilla = full, n_mc?: 20000, heldout_fraction?: 0.2}}
                                 # λ learned from n samples of data_from, or from a dataset
                                 # (the training data kinds, e.g. mnist_population with n, seed)
      - {name, operator: ensemble, models: [...], rule?: mean|weighted|median|trimmed|sum = mean,
         weights?: [...] (weighted only), trim?: 0.2 (trimmed only)}
      - {name, operator: random_choice, models: [...], weights?: [p_i] = uniform}
    evaluation?: {...}           # the settings of the models' modality's evaluator, its own schema:
                                 # images: molfuse.modalities.images.schema (target_classes, heldout,
                                 # bits_per_dim, dsm_loss, ...); vectors: none (exact densities)
    reports?:                    # cross-method sections of summary.md (the campaign's or a modality's)
      - {kind: by_n, metrics: [test_bpd, ...], reference?: [<method>, ...]}
                                 # methods named <family>_n<N>_seed<S>: by_n.csv, by_n.png
      - {kind: class_share, classes: [7, 8, 9]}   # images: share_789.csv, summed class fractions

All models of a workflow share one modality (their ``modality``: a checkpoint card's, or the
modality owning the model kind); its evaluator judges every method, owns the ``evaluation``
schema and its metric columns, and its writers put the samples under ``samples/`` in the
modality's formats (vectors: ``<method>.npy`` (N, D); images: ``<method>.npy`` (N, H, W) in
[0, 1] and ``<method>.png``). Point-cloud models (MATH §6) draw each sample's node count from
their cards' ``node_counts`` (OR: the ω-mixture of the members' histograms; AND, barycenter,
ensemble: their normalised product).

Every error is a :class:`~molfuse.errors.WorkflowError` naming the field path, e.g.
``methods[2].models: unknown model 'c'; known: a, b``. Unknown keys are errors (typos).
YAML 1.1 reads ``1e-3`` as a string: numeric strings are accepted wherever a number is.

A run locks its folder (a second run on it is refused), checks and writes ``config.yaml``
before any work (a rerun with a different resolved config is refused), draws each method's
``n_samples`` in chunks with seeds from (seed, method, chunk) and saves each chunk atomically
under ``samples/chunks/<method>/``, so rerunning the same folder keeps finished chunks. Each chunk
records the run's config hash, its seed, the fields its method produced and a digest of its
content; an unreadable chunk, or one whose record does not match this run (another config or
seed, a missing field, samples of another shape, content edited since), is named with what
differs and drawn again; ``provenance.json`` lists every chunk file's sha256 (``chunk_files``).
A member returning NaN / inf makes its chunk's samples invalid rows naming the member and t;
``molfuse run`` then exits with status 2.

Modules, each importing only ones listed before it: ``registry`` (operators, what they get
and return), ``spec`` (dataclasses), ``parse`` (load_workflow), ``kinds`` (checkpoint and soup
model kinds, style conditions), ``merges`` (the merge model kind: weight merges with provenance and
held-out selection), ``distill`` (the training objective ``distill``, the DMM merge),
``operators`` (built-in operators), ``chunks`` (resumable chunks), ``report`` (provenance,
summary), ``reports`` (by_n, fidelity, rank_agreement), ``run`` (run_workflow), ``replicates``
(replicate runs of one workflow combined: mean ± sd per method; ``molfuse replicates``).
"""

from __future__ import annotations

from . import operators  # noqa: F401  (registers the built-in operators)
from . import distill  # noqa: F401  (registers the training objective distill, the DMM merge)
from . import reports  # noqa: F401  (registers the campaign's report, by_n)
from .kinds import CheckpointModel, build_models, checkpoint_path
from . import merges  # noqa: F401  (registers the merge model kind: task arithmetic, TIES, DARE)
from .parse import load_workflow
from .registry import OPERATORS, Draw, Operator, Prepared, RunContext, register_operator, sample_shape
from .run import RunResult, run_workflow
from .spec import MethodSpec, ModelSpec, SamplerSpec, Workflow

__all__ = ["Workflow", "ModelSpec", "MethodSpec", "SamplerSpec", "Operator", "OPERATORS", "RunContext", "Draw",
           "Prepared", "RunResult", "CheckpointModel", "register_operator", "load_workflow", "build_models",
           "checkpoint_path", "sample_shape", "run_workflow"]
