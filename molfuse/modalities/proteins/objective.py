"""``backbone_geometry``: the denoising loss of an angle model plus a loss on the trace its clean
estimate decodes to (training objective ``objective: {kind: backbone_geometry}``).

An angle model learns each residue's angles, but a backbone's global shape is the NeRF product of
every angle before it: a few degrees of error spread along a chain place residues 20 apart into
each other (the clashes that make angle members invalid, docs/proteins/README.md). Models of the field
that train on frames or angles add losses on the structure the prediction implies (FrameDiff's
2-D distance loss on the denoised estimate at small t). This objective does the same for angle
states:

- the per-sample denoising loss, exactly :func:`molfuse.losses.denoising_loss`'s (the logged
  ``loss``; the score model it trains is the same kind);
- at times ``t < t_max`` only, the clean estimate ``x̂0 = (x_t + σ_t² s) / α_t`` (Tweedie) is decoded
  (atan2, NeRF at 3.80 Å, differentiable) and its Cα distances ``d̂`` are compared with the real
  fragment's ``d`` over pairs ``|i − j| >= min_separation``:
  ``distance``: mean of ``((d̂ − d) / 10 Å)²`` over pairs with ``d < cutoff`` (the fragment's
  contacts and packing); ``clash``: the sum of ``(relu(min(clash, d) − d̂) / 10 Å)²`` over the
  pairs (each once; a pair brought closer than ``clash`` Å where the data is not: like the clash
  potential, it counts clashes, it does not average them away over ~2,000 pairs).
  Each term is averaged over the batch (zero for samples at ``t >= t_max``) and added with its
  weight; both are logged beside the loss.

The extra terms change what the network is pulled towards at small t (the decoded posterior mean
is asked to keep the data's distances), as such losses do in the field; the fusion operators take
whatever score the network gives, so their exactness is untouched.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from molfuse import plugins
from molfuse.convert import score_fn
from molfuse.errors import WorkflowError
from molfuse.losses import training_draws
from molfuse.schedules import Schedule
from molfuse.spaces import Space, space_from_config

from .angles import nerf, state_to_angles

__all__ = ["BackboneGeometry", "build_backbone_geometry", "FIELDS", "OBJECTIVE", "register"]

FIELDS = {"distance_weight": 1.0, "clash_weight": 1.0, "t_max": 0.25, "cutoff": 10.0, "clash": 4.0,
          "min_separation": 3}
SCALE = 10.0  # Å: distances enter the extra terms in nm, so an error of 3 Å costs 0.09


class BackboneGeometry(nn.Module):
    """``(per-sample denoising loss, {"distance": ..., "clash": ...})`` for a batch ``{x, mask?}`` of
    angle states; the module's training step adds the extras to the loss.

    Args:
        schedule, space: the noising convention and the state space (the chain of angle rows).
        mean, std: the channels' standardisation (the card's ``normalisation``).
        distance_weight, clash_weight: weights of the two terms (0 turns one off).
        t_max: the terms apply to samples drawn at ``t < t_max``.
        cutoff: Å, pairs closer than this in the real fragment enter ``distance``.
        clash: Å, the distance below which ``clash`` penalises a pair the data keeps apart.
        min_separation: pairs ``|i − j|`` below it are fixed by the angles alone and skipped.
        t_min, t_power: the time draws of :func:`molfuse.losses.training_draws`.
    """

    def __init__(self, schedule: Schedule, space: Space, mean: list[float], std: list[float],
                 distance_weight: float = 1.0, clash_weight: float = 1.0, t_max: float = 0.25,
                 cutoff: float = 10.0, clash: float = 4.0, min_separation: int = 3, t_min: float = 1e-3,
                 t_power: float = 1.0):
        super().__init__()
        self.schedule, self.space, self.mean, self.std = schedule, space, list(mean), list(std)
        self.weights = {"distance": float(distance_weight), "clash": float(clash_weight)}
        self.t_max, self.cutoff, self.clash = float(t_max), float(cutoff), float(clash)
        self.min_separation, self.t_min, self.t_power = int(min_separation), float(t_min), float(t_power)

    def forward(self, net: nn.Module, batch: Mapping[str, Tensor], g: torch.Generator | None,
                training: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        x0, mask = batch["x"], batch.get("mask")
        if batch.get("cond") is not None:
            raise WorkflowError("objective backbone_geometry trains unconditional angle models; this batch "
                                "carries conditions (drop data.properties or use the denoising objective)")
        t, eps = training_draws(x0, self.space, g, self.t_min, self.t_power, mask)
        xt = self.schedule.diffuse(x0, t, eps)
        s = score_fn(net, self.schedule, self.space)(xt, t, None, mask)
        shape = (x0.shape[0],) + (1,) * (x0.dim() - 1)
        sigma = self.schedule.sigma(t).to(x0.dtype).reshape(shape)
        alpha = self.schedule.alpha(t).to(x0.dtype).reshape(shape)
        dsm = self.space.sqnorm(sigma * s + eps, mask).to(x0.dtype) / self.space.dof(x0.shape, mask).to(x0)
        low = t < self.t_max
        extras = {k: x0.new_zeros(()) for k in self.weights}
        if bool(low.any()):
            x0_hat = self.space.project((xt[low] + sigma[low] ** 2 * s[low]) / alpha[low], None if mask is None
                                        else mask[low])
            terms = self.trace_terms(x0_hat, x0[low], None if mask is None else mask[low])
            extras = {k: self.weights[k] * v.sum() / x0.shape[0] for k, v in terms.items()}
        return dsm, extras

    def trace_terms(self, x_hat: Tensor, x0: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        """Per-sample ``distance`` and ``clash`` terms (b,) between the traces of ``x_hat`` and ``x0``."""
        d_hat, pairs = self._distances(x_hat, mask)
        with torch.no_grad():
            d, _ = self._distances(x0, mask)
        near = pairs & (d < self.cutoff)
        err = ((d_hat - d) / SCALE) ** 2
        over = (torch.relu(torch.clamp(d, max=self.clash) - d_hat) / SCALE) ** 2
        return {"distance": (err * near).sum((1, 2)) / near.sum((1, 2)).clamp_min(1),
                "clash": (over * pairs).sum((1, 2)) / 2}  # each pair once

    def _distances(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Cα distances (b, N, N) Å of the traces the states decode to, and the pairs that count."""
        theta, tau = state_to_angles(x, mask, self.mean, self.std)
        ca = nerf(theta, tau, mask)
        d = (ca[:, :, None, :] - ca[:, None, :, :]).pow(2).sum(-1).add(1e-8).sqrt()
        n = x.shape[1]
        idx = torch.arange(n, device=x.device)
        pairs = ((idx[None, :] - idx[:, None]).abs() >= self.min_separation)[None].expand(x.shape[0], n, n)
        if mask is not None:
            pairs = pairs & mask[:, :, None] & mask[:, None, :]
        return d, pairs


def build_backbone_geometry(spec: dict, net: Any, schedule: Schedule, data: Any, modality: str, seed: int,
                            folder: Any = None, say: Callable = print, config: Any = None
                            ) -> tuple[BackboneGeometry, Any, dict]:
    """The ``backbone_geometry`` objective of a training workflow: (objective, training data, card entries)."""
    norm = data.normalisation or {}
    if modality != "proteins" or norm.get("representation") != "ca_angles":
        raise WorkflowError(f"objective backbone_geometry needs angle-state protein data (data.kind: protein_angles); "
                            f"got modality {modality!r}, representation {norm.get('representation')!r}")
    bad = [f"{k}={spec[k]!r}" for k in ("distance_weight", "clash_weight") if not float(spec[k]) >= 0]
    bad += [f"{k}={spec[k]!r}" for k in ("t_max", "cutoff", "clash") if not float(spec[k]) > 0]
    if not isinstance(spec["min_separation"], int) or spec["min_separation"] < 1:
        bad.append(f"min_separation={spec['min_separation']!r}")
    if bad:
        raise WorkflowError("objective (backbone_geometry): weights must be >= 0, t_max / cutoff / clash > 0 and "
                            f"min_separation a whole number >= 1; got {', '.join(bad)}")
    objective = BackboneGeometry(schedule, space_from_config(data.space), norm["channel_mean"], norm["channel_std"],
                                 **{k: spec[k] for k in FIELDS}, t_min=getattr(config, "t_min", 1e-3),
                                 t_power=getattr(config, "t_power", 1.0))
    entry = {"kind": "backbone_geometry", **{k: spec[k] for k in FIELDS}}
    return objective, data, {"objective": entry}


OBJECTIVE = plugins.ObjectiveKind(build_backbone_geometry, FIELDS)


def register() -> None:
    """Make the ``backbone_geometry`` objective known (idempotent)."""
    plugins.register_objective("backbone_geometry", OBJECTIVE)
