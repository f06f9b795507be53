"""The campaign's own extension point, operators by name, and what an operator gets and returns.

Model kinds, evaluators, reports and writers plug in through :mod:`molfuse.plugins` (a
modality brings them); operators are the fusion methods a workflow can name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..base.registry import Registry
from ..base.seeds import derive_seed
from ..sampling import sample
from ..schedules import Schedule
from ..spaces import draw_node_counts, node_count_distribution, node_masks, resolve_space
from .spec import MethodSpec

__all__ = ["Operator", "OPERATORS", "register_operator", "check_for_modality", "RunContext", "Draw", "Prepared",
           "sample_shape"]


@dataclass(frozen=True)
class Operator:
    """A fusion operator a method can name.

    ``prepare(method, members, ctx) -> Prepared`` runs once per method (e.g. fits weights);
    ``options`` maps each allowed option key to its default (or REQUIRED);
    ``check(options, k, model_names, path) -> options`` validates them (raise with ``path``);
    ``check_modality(options, modality, path) -> options`` checks what only the models' modality
    knows (``steer``: the names of its potentials), once it is known, still while the workflow is read.
    """

    prepare: Callable[..., "Prepared"]
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict, int, Sequence[str], str], dict] | None = None
    min_models: int = 1
    max_models: int | None = None
    check_modality: Callable[[dict, Any, str], dict] | None = None


OPERATORS: Registry[Operator] = Registry("operator")


def register_operator(name: str, prepare: Callable[..., "Prepared"], options: Mapping[str, Any] | None = None,
                      check: Callable[[dict, int, Sequence[str], str], dict] | None = None,
                      min_models: int = 1, max_models: int | None = None, replace: bool = False,
                      check_modality: Callable[[dict, Any, str], dict] | None = None) -> None:
    """Make ``methods[i].operator: <name>`` runnable (see :class:`Operator`)."""
    OPERATORS.register(name, Operator(prepare, dict(options or {}), check, min_models, max_models, check_modality),
                       replace=replace)


def check_for_modality(method: MethodSpec, modality: Any, path: str) -> MethodSpec:
    """``method`` with its options checked by its operator's ``check_modality`` (unchanged without one)."""
    op = OPERATORS.get(method.operator)
    if op.check_modality is None:
        return method
    return dataclasses.replace(method, options=op.check_modality(dict(method.options), modality, path))


def sample_shape(model: Any) -> tuple[int, ...]:
    """Shape of one sample: ``model.sample_shape`` or ``(model.dim,)``.

    Raises:
        ValueError: the model declares neither.
    """
    shape = getattr(model, "sample_shape", None)
    if shape is None and getattr(model, "dim", None) is not None:
        shape = (model.dim,)
    if shape is None:
        raise ValueError(f"{type(model).__name__} declares neither sample_shape nor dim; the sampler needs one")
    return tuple(int(s) for s in shape)


@dataclass
class RunContext:
    """What operators need at run time: the convention, the built models, sampler settings."""

    schedule: Schedule
    models: dict[str, Any]
    steps: int
    t_end: float
    device: torch.device
    seed: int
    grid_power: float = 1.0
    denoise: bool = False

    def generator(self, *parts: Any) -> torch.Generator:
        """A CPU generator seeded from (workflow seed, *parts) (portable across devices)."""
        return torch.Generator().manual_seed(derive_seed(self.seed, *parts))

    def layout(self, members: Sequence[Any], n: int, g: torch.Generator, rule: str = "product",
               weights: Sequence[float] | None = None) -> tuple[tuple[int, ...], torch.Tensor | None]:
        """The batch shape and node mask of ``n`` samples of a method over ``members``.

        Dense states: ``(n, *shape)`` and no mask (nothing is drawn). Point clouds (MATH §6):
        node counts drawn from the members' size histograms (``node_counts``) combined by
        ``rule`` (:func:`molfuse.spaces.node_count_distribution`: ``"mixture"`` for OR,
        ``"product"`` for AND, barycenters and ensembles), before any noise.
        """
        shape = (n, *sample_shape(members[0]))
        if resolve_space(members).trivial:
            return shape, None
        dist = node_count_distribution([getattr(m, "node_counts", None) for m in members], weights, rule)
        return shape, node_masks(draw_node_counts(dist, n, g), shape[1]).to(self.device)

    def sde(self, model: Any, n: int, g: torch.Generator, track: bool):
        """Reverse-SDE samples of one score model (sizes from its own histogram)."""
        shape, mask = self.layout([model], n, g)
        return sample(model, self.schedule, shape, steps=self.steps, t_end=self.t_end, grid_power=self.grid_power, generator=g,
                      denoise=self.denoise, track_log_density=track, device=self.device, mask=mask)


@dataclass
class Draw:
    """One chunk from an operator: samples (n, ...), node masks (n, N) or None, Itô log q per
    member (n, K) float64 with NaN where not tracked, AND fallback counts (n,), chosen member
    per sample (n,), and the operator's own per-sample numbers ``columns`` (name -> (n,); e.g.
    FKC's final log-weight and its chunk's ESS), which become ``per_sample.csv`` columns;
    ``reason`` (n,) says why a sample failed ("" for a good one) when only some of a chunk's
    samples failed (random choice: one member's trajectories)."""

    x: torch.Tensor
    mask: torch.Tensor | None = None
    ito: torch.Tensor | None = None
    fallbacks: torch.Tensor | None = None
    chosen: torch.Tensor | None = None
    columns: dict[str, torch.Tensor] = field(default_factory=dict)
    reason: list[str] | None = None


@dataclass
class Prepared:
    """A method ready to draw chunks: ``draw(n, generator) -> Draw``; the member weights it
    uses (given or fitted), extra provenance (fit losses, warnings) and, for operators whose
    samples follow one score model (single, barycenter, ensemble), that ``model``; for those
    whose samples follow a mixture of the members' densities (random_choice, OR at T = 1),
    its weights ``mixture`` (one per member, on the simplex)."""

    draw: Callable[[int, torch.Generator], Draw]
    weights: list[float] | None = None
    info: dict = field(default_factory=dict)
    model: Any = None  # the method's score model when it has one (likelihood and DSM metrics)
    mixture: list[float] | None = None  # samples follow sum_i w_i p_i of the members (likelihood)
    metric_columns: tuple[str, ...] = ()  # Draw.columns whose mean over samples goes into metrics.csv
