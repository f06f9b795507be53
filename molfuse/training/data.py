"""Training data: states with their masks and conditions, and the data kinds workflows name.

A data kind (``data: {kind: ..., ...}`` in a training workflow, or ``fit.data`` of a fitted
barycenter) is provided by a modality (:class:`molfuse.plugins.DataKind`) and builds a
:class:`~molfuse.plugins.TrainingData`: states in model space, optional node masks and
conditions, and the card entries (normalisation, conditioning, space, node counts). Training
reads it as a :class:`StateDataset`. Nothing here needs lightning.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .. import plugins
from ..base.checks import REQUIRED, fail, fields
from ..base.seeds import derive_seed
from ..errors import DataError, WorkflowError
from ..schedules import Schedule

__all__ = ["StateDataset", "as_state_dataset", "split", "check_data_spec", "build_data", "check_states", "state_limit",
           "data_source", "PRIOR_SDS"]

PRIOR_SDS = 10.0  # how far (in prior standard deviations) alpha_1 x may lie from the prior's centre


class StateDataset(Dataset):
    """States ``x`` (n, ...) with optional node masks (n, N) and conditions (n,) / (n, k).

    ``dataset[i]`` (an int, a slice or an index tensor) is a dict ``{"x", "mask"?, "cond"?}``:
    batches carry their mask and condition with them (MATH §6).
    """

    def __init__(self, x: Tensor, mask: Tensor | None = None, cond: Tensor | None = None):
        n = x.shape[0]
        for name, t in (("mask", mask), ("cond", cond)):
            if t is not None and t.shape[0] != n:
                raise ValueError(f"{name} has {t.shape[0]} rows for {n} states")
        if mask is not None and (mask.dim() != 2 or mask.dtype != torch.bool):
            raise ValueError(f"mask must be bool (n, nodes); got {mask.dtype} {tuple(mask.shape)}")
        self.x, self.mask, self.cond = x, mask, cond

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx: Any) -> dict:
        out = {"x": self.x[idx]}
        if self.mask is not None:
            out["mask"] = self.mask[idx]
        if self.cond is not None:
            out["cond"] = self.cond[idx]
        return out

    def subset(self, idx: Tensor) -> "StateDataset":
        return StateDataset(self.x[idx], None if self.mask is None else self.mask[idx],
                            None if self.cond is None else self.cond[idx])

    def without_cond(self) -> "StateDataset":
        return StateDataset(self.x, self.mask, None)


def as_state_dataset(data: Any) -> StateDataset:
    """A :class:`StateDataset` from one, a :class:`~molfuse.plugins.TrainingData`, or a
    ``TensorDataset(x0)`` / ``TensorDataset(x0, labels)``.

    Raises:
        ValueError: anything else, or an empty dataset.
    """
    if isinstance(data, plugins.TrainingData):
        data = StateDataset(data.x, data.mask, data.cond)
    elif isinstance(data, TensorDataset) and len(data.tensors) in (1, 2):
        data = StateDataset(data.tensors[0], None, data.tensors[1] if len(data.tensors) == 2 else None)
    if not isinstance(data, StateDataset):
        raise ValueError("training data must be a StateDataset, a TrainingData or TensorDataset(x0[, labels]); "
                         f"got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the training data are empty")
    return data


def split(dataset: StateDataset, fraction: float, seed: int) -> tuple[StateDataset, StateDataset | None]:
    """A seeded train / validation split (validation None when ``fraction`` is 0)."""
    n_val = round(fraction * len(dataset))
    if n_val == 0:
        return dataset, None
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(derive_seed(seed, "split")))
    return dataset.subset(perm[n_val:]), dataset.subset(perm[:n_val])


def check_data_spec(d: Any, path: str) -> dict:
    """A ``{kind: ..., ...}`` mapping of a known data kind, with the kind's defaults filled in.

    Raises:
        WorkflowError: naming ``path`` (missing or unknown kind — or a kind whose modality
            is not installed, with the install hint — or bad fields).
    """
    if not isinstance(d, Mapping) or "kind" not in d:
        fail(f"{path}.kind", "required field is missing (a data kind, e.g. mnist_population)")
    try:
        spec = plugins.data_kind(d["kind"]).fields
    except plugins.MissingModalityError as e:
        fail(f"{path}.kind", str(e))
    return dict(d) if spec is None else fields(d, path, {"kind": REQUIRED, **spec})


def build_data(spec: Mapping[str, Any], path: str = "data") -> plugins.TrainingData:
    """Build the data a checked spec describes; a builder's ValueError / TypeError names ``path``."""
    kind = spec["kind"]
    try:
        return plugins.data_kind(kind).build({k: v for k, v in spec.items() if k != "kind"})
    except (ValueError, TypeError) as e:
        raise e if isinstance(e, WorkflowError) else WorkflowError(f"{path} ({kind}): {e}") from None


def state_limit(schedule: Schedule) -> float:
    """The largest ``|x|`` (model space) a training state may have under ``schedule``: noised to
    ``t = 1`` its mean ``alpha_1 x`` must lie within :data:`PRIOR_SDS` standard deviations of the
    prior N(0, prior_std² I) the samplers start from (MATH §1); 1522 for the default VP path."""
    return PRIOR_SDS * schedule.prior_std() / float(schedule.alpha(1.0))


def data_source(description: Any) -> str:
    """A short name of training data for messages: ``"qm9, source small"`` from its description."""
    if not isinstance(description, Mapping):
        return "the training data"
    parts = [str(description.get("kind", "data"))]
    if description.get("source") is not None:
        parts.append(f"source {description['source']}")
    return ", ".join(parts)


def check_states(x: Tensor, mask: Tensor | None, schedule: Schedule, source: str,
                 shape: Sequence[int] | None = None) -> None:
    """Refuse training states no model of ``schedule`` can learn from (before any training).

    Args:
        x: (n, ...) states in model space (after the modality's normalisation).
        mask: (n, N) bool node masks of point clouds, or None.
        schedule: the noising path; sets the range (:func:`state_limit`).
        source: names the data in messages (:func:`data_source`).
        shape: the model's one-sample shape (a card's ``shape``), if it is fixed already.

    Raises:
        DataError: naming ``source``: states of another shape than the model's (for point clouds,
            more real nodes than the model has), NaN / inf values, or values beyond the range, with
            how many entries of how many samples.
    """
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        nodes = "" if mask is None else (f": masks of up to {int(mask.sum(1).max())} real nodes (padded to "
                                         f"{x.shape[1]}) on a model of {shape[0]} nodes")
        raise DataError(f"{source}: states of shape {list(x.shape[1:])} do not fit the model's shape "
                        f"{list(shape)}{nodes}")
    flat = x.reshape(len(x), -1)
    limit = state_limit(schedule)
    lo, hi = (float(v) for v in torch.aminmax(flat))  # NaN if any value is; no copy of the data
    if math.isfinite(lo) and math.isfinite(hi) and max(-lo, hi) <= limit:
        return
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        raise DataError(f"{source}: {int(bad.sum())} of {flat.numel()} values are NaN or inf (in "
                        f"{int(bad.any(1).sum())} of {len(x)} samples)")
    big = flat.abs() > limit
    if bool(big.any()):
        raise DataError(f"{source}: {int(big.sum())} of {flat.numel()} values (in {int(big.any(1).sum())} of {len(x)} "
                        f"samples) exceed {limit:.4g} in size (largest {float(flat.abs().max()):.3g}); noised to t = 1 "
                        f"by {schedule.config()} they would lie over {PRIOR_SDS:g} standard deviations from the N(0, I) "
                        "prior. Check the data's units and the modality's normalisation")
