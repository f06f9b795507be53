"""Distillation merge (DMM, Song et al. CVPR 2025; MATH §5): many teachers into one style student.

The student ``ε(x, t, i; θ)`` (any net with a style codebook, :class:`molfuse.nets.style.StyledNet`)
learns, for each style ``i``, the score of teacher ``i`` at the same noised points:

- score distillation ``σ_t² ‖s_student(x_t, t, i) − s_teacher_i(x_t, t)‖²`` per degree of freedom
  (for ε-networks: ``‖ε̂_student − ε̂_teacher‖²``, the teacher's DSM loss units);
- feature imitation ``λ_feat Σ_layers mean ‖F_student − F_teacher_i‖²`` on named submodules,
  read by forward hooks (:class:`FeatureTap`), no fork of the architecture;
- an optional multi-class adversarial term ``λ_adv``: a 2N-way discriminator on predicted
  ``x̂_0`` learns "teacher i" (class i) from "student in style i" (class N + i); the student is
  pushed towards class i.

Incremental merging: styles whose teacher is gone take their targets from the frozen previous
student (``previous``), the regulariser that keeps old styles from drifting.
The objective is a module whose ``forward(student, batch, generator)`` returns per-sample losses
and extra scalar terms; :class:`molfuse.training.module.DiffusionModule` trains it through the
same Lightning path as denoising.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..base.seeds import derive_seed
from ..convert import resolve_schedule, score_fn
from ..schedules import Schedule
from ..spaces import Space, resolve_space
from ._common import check_members

__all__ = ["FeatureTap", "Distillation", "x0_from_score", "style_errors"]


class FeatureTap:
    """Context manager that records the outputs of named submodules (forward hooks).

    ``with FeatureTap(net, ["down.1", "mid"]) as tap: net(x, t)`` leaves ``tap.features[name]``
    (the module's output, the first tensor of a tuple). Hooks are removed on exit.
    """

    def __init__(self, module: nn.Module, names: Sequence[str]):
        self.module, self.names = module, list(names)
        self.features: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "FeatureTap":
        for name in self.names:
            try:
                sub = self.module.get_submodule(name)
            except AttributeError:
                raise ValueError(f"feature layer {name!r}: {type(self.module).__name__} has no such submodule") from None
            self._handles.append(sub.register_forward_hook(self._keeper(name)))
        return self

    def _keeper(self, name: str) -> Any:
        def keep(module: nn.Module, inputs: Any, out: Any) -> None:
            self.features[name] = out[0] if isinstance(out, (tuple, list)) else out
        return keep

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def x0_from_score(score: Tensor, x: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """Tweedie's ``x̂_0 = (x_t + σ_t² s) / α_t`` (MATH §1, ``x̂_0 = (x − σ ε̂)/α``), (batch, ...)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    a = schedule.alpha(t).to(x.dtype).reshape(shape)
    s2 = schedule.sigma2(t).to(x.dtype).reshape(shape)
    return (x + s2 * score) / a


def _base(net: nn.Module) -> nn.Module:
    """The network whose layers the feature names refer to (a style student's base net)."""
    return getattr(net, "net", net) if hasattr(net, "codebook") else net


class Distillation(nn.Module):
    """The DMM objective for a style student (MATH §5).

    Args:
        teachers: score models in the molfuse convention (same schedule and space; any prediction
            type, converted); teacher ``k`` is learned as style ``styles[k]``.
        schedule: the noising convention.
        num_styles: the student's codebook size (2N classes for the discriminator).
        styles: codebook rows of the teachers (default ``0 .. K-1``).
        previous: the frozen previous student (incremental merging) and ``previous_styles``, the
            old styles it supplies targets for (its regulariser); None: no regulariser.
        feature_layers, feature_weight: submodule names of the base nets to imitate, and λ_feat.
        adversarial_weight, discriminator: λ_adv and a module ``D(x0_hat, t, mask) -> (batch, 2N)``.
        t_min, t_power: time draws ``t_min + (1 - t_min) u^p`` as in denoising.
        space: the state space (default the teachers').
    """

    def __init__(self, teachers: Sequence[Any], schedule: Schedule, num_styles: int, styles: Sequence[int] | None = None,
                 previous: nn.Module | None = None, previous_styles: Sequence[int] = (),
                 feature_layers: Sequence[str] = (), feature_weight: float = 0.0, adversarial_weight: float = 0.0,
                 discriminator: nn.Module | None = None, t_min: float = 1e-3, t_power: float = 1.0,
                 space: Space | None = None):
        super().__init__()
        teachers = check_members(teachers, "distillation", minimum=1)
        styles = list(range(len(teachers))) if styles is None else [int(s) for s in styles]
        old = [int(s) for s in previous_styles]
        _check_styles(styles, old, num_styles, len(teachers), previous is not None)
        if adversarial_weight > 0 and discriminator is None:
            raise ValueError("adversarial_weight > 0 needs a discriminator D(x0_hat, t, mask) -> (batch, 2 * num_styles)")
        if feature_weight > 0 and not feature_layers:
            raise ValueError("feature_weight > 0 needs feature_layers (submodule names of the base nets)")
        self.schedule, self.num_styles, self.t_min, self.t_power = schedule, num_styles, t_min, t_power
        members = list(teachers) + ([previous] if previous is not None else [])
        resolve_schedule(members, schedule)  # MATH §1: a teacher in another convention is refused here
        self.space = resolve_space(members, space)
        # targets per style: (model, cond passed to it); kept out of the state dict (frozen, not trained)
        self._sources = {s: (m, None) for s, m in zip(styles, teachers)}
        self._sources.update({s: (previous, s) for s in old})
        self._frozen = list(teachers) + ([previous] if previous is not None else [])
        for m in self._frozen:
            if isinstance(m, nn.Module):
                m.eval().requires_grad_(False)
        self.active = sorted(self._sources)
        self.feature_layers, self.feature_weight = list(feature_layers), float(feature_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.discriminator = discriminator if adversarial_weight > 0 else None

    def forward(self, student: nn.Module, batch: Mapping[str, Tensor], generator: torch.Generator,
                training: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample score distillation loss (batch,) and extra terms ``{feature, adversarial,
        discriminator}`` (scalars, already weighted) for one batch ``{x, mask?, cond?}``.

        ``cond`` holds style indices (batch,); a batch without it gets a style per sample drawn
        uniformly from the active styles.
        """
        x0, mask = batch["x"], batch.get("mask")
        self._to(x0.device)
        style = self._styles(batch, x0, generator)
        t, eps = self._draws(x0, mask, generator)
        xt = self.schedule.diffuse(x0, t, eps)  # MATH §1 noising path
        loss = x0.new_zeros(x0.shape[0])
        extras: dict[str, list[Tensor]] = {"feature": [], "adversarial": [], "discriminator": []}
        for s in self.active:
            idx = (style == s).nonzero().flatten()
            if idx.numel():
                sub = None if mask is None else mask[idx]
                loss = loss.index_copy(0, idx, self._group(student, s, xt[idx], t[idx], sub, extras, training))
        out = {k: torch.stack(v).mean() for k, v in extras.items() if v}
        return loss, out

    def _group(self, student: nn.Module, s: int, xt: Tensor, t: Tensor, mask: Tensor | None,
               extras: dict[str, list[Tensor]], training: bool) -> Tensor:
        """Per-sample loss of the samples of style ``s``; appends their feature / adversarial terms."""
        source, cond = self._sources[s]
        feats = self.feature_layers if training and self.feature_weight > 0 else []
        with torch.no_grad(), FeatureTap(_base(source), feats) as tap_t:
            target = score_fn(source, self.schedule, self.space)(xt, t, cond, mask)
        with FeatureTap(_base(student), feats) as tap_s:
            pred = score_fn(student, self.schedule, self.space)(xt, t, s, mask)
        sigma2 = self.schedule.sigma2(t).to(xt.dtype).reshape((-1,) + (1,) * (xt.dim() - 1))
        r = pred - target
        dof = xt[0].numel() if self.space.trivial else self.space.dof(xt.shape, mask).to(xt)
        per = (sigma2 * r.pow(2)).flatten(1).sum(1) if self.space.trivial else sigma2.flatten() * self.space.sqnorm(r, mask).to(xt)
        if feats:
            extras["feature"].append(self.feature_weight * _feature_loss(tap_s.features, tap_t.features))
        if training and self.discriminator is not None:
            self._adversarial(s, xt, t, mask, pred, target, extras)
        return per / dof

    def _adversarial(self, s: int, xt: Tensor, t: Tensor, mask: Tensor | None, pred: Tensor, target: Tensor,
                     extras: dict[str, list[Tensor]]) -> None:
        """2N-way terms: D learns teacher ``s`` -> class s, student(style s) -> class N + s (inputs
        detached); the student is pushed to class s through D with its parameters detached."""
        x_s, x_t = x0_from_score(pred, xt, t, self.schedule), x0_from_score(target, xt, t, self.schedule)
        n = xt.shape[0]
        real = torch.full((n,), s, dtype=torch.long, device=xt.device)
        d = self.discriminator
        ce = nn.functional.cross_entropy
        # D's own loss is scaled by λ_adv too: Adam's steps do not depend on the scale, but a gradient-norm
        # clip over all parameters would otherwise be dominated by D's gradients and shrink the student's
        extras["discriminator"].append(self.adversarial_weight * (ce(d(x_t.detach(), t, mask), real)
                                                                  + ce(d(x_s.detach(), t, mask), real + self.num_styles)))
        frozen = {k: v.detach() for k, v in d.named_parameters()}
        extras["adversarial"].append(self.adversarial_weight * ce(functional_call(d, frozen, (x_s, t, mask)), real))

    def _styles(self, batch: Mapping[str, Tensor], x0: Tensor, g: torch.Generator) -> Tensor:
        style = batch.get("cond")  # a distillation's data carry style indices as their condition
        if style is None:
            pick = torch.randint(len(self.active), (x0.shape[0],), generator=g, device=g.device).to(x0.device)
            return torch.as_tensor(self.active, device=x0.device)[pick]
        style = style.to(x0.device).long().reshape(-1)
        unknown = sorted(set(style.tolist()) - set(self.active))
        if unknown:
            raise ValueError(f"batch styles {unknown} have no teacher and no previous student; active styles {self.active}")
        return style

    def _draws(self, x0: Tensor, mask: Tensor | None, g: torch.Generator) -> tuple[Tensor, Tensor]:
        u = torch.rand(x0.shape[0], generator=g, device=g.device, dtype=x0.dtype).to(x0.device)
        t = self.t_min + (1.0 - self.t_min) * (u if self.t_power == 1.0 else u**self.t_power)
        return t, self.space.noise(x0.shape, mask, g, x0.device, x0.dtype)

    def _to(self, device: torch.device) -> None:
        for m in self._frozen:
            if isinstance(m, nn.Module):
                p = next(m.parameters(), None)
                if p is not None and p.device != device:
                    m.to(device)


def _feature_loss(student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> Tensor:
    """Mean over layers of the mean squared difference of their outputs."""
    terms = []
    if not teacher:
        raise ValueError("no feature layer produced an output: name modules that are called in forward (e.g. a block "
                         "'mid.1', not a ModuleList 'mid')")
    for name, f_t in teacher.items():
        f_s = student.get(name)
        if f_s is None or f_s.shape != f_t.shape:
            raise ValueError(f"feature layer {name!r}: student output {None if f_s is None else tuple(f_s.shape)} vs "
                             f"teacher {tuple(f_t.shape)}; feature imitation needs the same architecture there")
        terms.append((f_s - f_t).pow(2).mean())
    return torch.stack(terms).mean()


def _check_styles(styles: list[int], old: list[int], num_styles: int, k: int, has_previous: bool) -> None:
    if len(styles) != k:
        raise ValueError(f"styles: one codebook row per teacher; got {len(styles)} rows for {k} teachers")
    if old and not has_previous:
        raise ValueError("previous_styles needs previous (the frozen previous student that supplies their targets)")
    both = styles + old
    if len(set(both)) != len(both):
        raise ValueError(f"styles {styles} and previous_styles {old} must not repeat or overlap")
    bad = [s for s in both if not 0 <= s < num_styles]
    if bad:
        raise ValueError(f"styles {bad} are outside the student's codebook 0..{num_styles - 1}")


@torch.no_grad()
def style_errors(student: nn.Module, teachers: Mapping[int, Any], x0: Tensor, schedule: Schedule, n_t: int = 4,
                 seed: int = 0, mask: Tensor | None = None, space: Space | None = None, t_min: float = 1e-3,
                 batch_size: int = 128) -> dict[int, float]:
    """Score-level fidelity per style: ``E σ_t² ‖s_student(x_t, t, i) − s_teacher_i(x_t, t)‖²`` per
    degree of freedom on states ``x0`` (batch, ...), ``n_t`` draws of (t, ε) per state, the same
    draws for every style (common random numbers). ``teachers`` maps style index -> score model.
    0 means the student reproduces teacher i exactly there; comparing before and after a change
    (an added teacher) measures drift (forgetting) without sampling."""
    out = {}
    for s, teacher in teachers.items():
        obj = Distillation([teacher], schedule, student.num_styles, styles=[s], t_min=t_min, space=space)
        total, count = 0.0, 0
        for j in range(n_t):
            for start in range(0, x0.shape[0], batch_size):
                g = torch.Generator().manual_seed(derive_seed(seed, "style_errors", j, start))
                xb = x0[start:start + batch_size]
                cond = torch.full((xb.shape[0],), s, dtype=torch.long)
                batch = {"x": xb, "cond": cond} if mask is None else {"x": xb, "cond": cond,
                                                                      "mask": mask[start:start + batch_size]}
                loss, _ = obj(student, batch, g, training=False)
                total, count = total + float(loss.sum()), count + loss.numel()
        out[s] = total / count
    return out

