"""The built-in operators a method can name: single, superpose, barycenter, ensemble, random_choice, fkc, steer."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import torch

from .. import fusion, plugins
from ..base.checks import REQUIRED, as_bool, as_choice, as_float, as_floats, as_int, as_simplex, fail, fields
from ..base.seeds import derive_seed
from ..errors import NonFiniteError, SamplerError
from ..sampling import sample
from ..training.data import build_data, check_data_spec, check_states, data_source
from .registry import Draw, Prepared, RunContext, register_operator, sample_shape
from .potentials import check_potential_list, energy_columns, probe_potentials, resolve_potentials, total_energy
from .spec import MethodSpec

__all__: list[str] = []  # the operators are reached through the registry (molfuse.campaign.OPERATORS)


def _prepare_single(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    model = members[0]

    def draw(n: int, g: torch.Generator) -> Draw:
        r = ctx.sde(model, n, g, track=True)
        return Draw(r.x, mask=r.mask, ito=r.log_density[:, None])

    return Prepared(draw, model=model)


def _check_superpose(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["mode"] = as_choice(o["mode"], f"{path}.mode", fusion.superposition.MODES)
    o["temperature"] = as_float(o["temperature"], f"{path}.temperature")
    _fusion_rule(path, fusion.superposition.check_superpose_options, o["mode"], o["temperature"])
    if o["bias"] is not None and o["weights"] is not None:
        fail(path, "give bias or weights (bias = log weights), not both")
    if o["bias"] is not None:
        o["bias"] = as_floats(o["bias"], f"{path}.bias", k)
    if o["weights"] is not None:
        o["weights"] = as_simplex(o["weights"], f"{path}.weights", k, positive=True)
    if o["ito_correction"] is not None:
        as_bool(o["ito_correction"], f"{path}.ito_correction")
    try:  # the Python API's rule: left out means the exact estimator (corrected for AND)
        o["ito_correction"] = fusion.superposition.ito_correction_for(o["mode"], o["ito_correction"])
    except ValueError as e:
        fail(f"{path}.ito_correction", str(e))
    return o


def _prepare_superpose(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    o, k = method.options, len(members)
    ell = (fusion.LogWeights.from_weights(o["weights"], k, f"{method.name}.weights") if o["weights"] is not None
           else fusion.LogWeights.of(o["bias"], k, f"{method.name}.bias"))  # validated once, one form (nats)
    sizes = ("mixture", ell.mixture()) if o["mode"] == "or" else ("product", None)  # node counts (MATH §6)

    def draw(n: int, g: torch.Generator) -> Draw:
        shape, mask = ctx.layout(members, n, g, *sizes)
        r = fusion.superpose(members, ctx.schedule, shape, mode=o["mode"], temperature=o["temperature"],
                             bias=ell, steps=ctx.steps, generator=g, t_end=ctx.t_end, device=ctx.device, grid_power=ctx.grid_power,
                             denoise=ctx.denoise, ito_correction=o["ito_correction"], mask=mask)
        return Draw(r.x, mask=r.mask, ito=r.log_q, fallbacks=r.fallbacks)

    # OR at T = 1 has score grad log sum_i e^{l_i} q_i: its target is that mixture (MATH §4)
    mixture = ell.mixture() if o["mode"] == "or" and o["temperature"] == 1.0 else None
    bias = None if o["weights"] is None and o["bias"] is None else ell.tolist()
    return Prepared(draw, None, {"mode": o["mode"], "temperature": o["temperature"], "bias_nats": bias,
                                 "ito_correction": o["ito_correction"]}, mixture=mixture)


_FIT = {"data_from": None, "data": None, "n": None, "window": "full", "n_mc": 20000, "heldout_fraction": 0.2}


def _check_barycenter(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    if o["fit"] is not None and o["weights"] is not None:
        fail(path, "give weights or fit, not both")
    if o["fit"] is None:
        o["weights"] = as_simplex([1.0 / k] * k if o["weights"] is None else o["weights"], f"{path}.weights", k)
        return o
    p = f"{path}.fit"
    f = fields(o["fit"], p, _FIT)
    if (f["data_from"] is None) == (f["data"] is None):
        fail(p, "give data_from (a model to sample) with n, or data (a dataset spec, e.g. "
             "{kind: mnist_population, weights: {7: 0.6, 9: 0.4}, n: 64, seed: 0})")
    if f["data"] is not None:
        f["data"] = check_data_spec(f["data"], f"{p}.data")
        if f["n"] is not None:
            fail(f"{p}.n", "with fit.data the number of samples is the dataset's (data.n)")
    else:
        if f["data_from"] not in names:
            fail(f"{p}.data_from", f"unknown model {f['data_from']!r}; known: {', '.join(names)}")
        if f["n"] is None:
            fail(f"{p}.n", "required field is missing (how many samples of data_from to fit on)")
        f["n"] = as_int(f["n"], f"{p}.n", 2)
    f["window"] = as_choice(f["window"], f"{p}.window", fusion.barycenter.WINDOWS)
    f["n_mc"] = as_int(f["n_mc"], f"{p}.n_mc", 1)
    f["heldout_fraction"] = as_float(f["heldout_fraction"], f"{p}.heldout_fraction", 0.0, 0.9)
    o["fit"] = f
    return o


def _fit_data(f: dict, ctx: RunContext, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """The data λ is fitted on (model space) and its node masks: ``f["n"]`` samples of a model
    (``sample`` may return ``(x, mask)`` for point clouds), or a data kind's data."""
    if f["data"] is None:
        source = ctx.models[f["data_from"]]
        if not hasattr(source, "sample"):
            raise ValueError(f"fit.data_from: model {f['data_from']!r} cannot draw samples (it has no .sample)")
        drawn = source.sample(f["n"], generator=g)
        x, mask = drawn if isinstance(drawn, tuple) else (drawn, None)
        return x.to(ctx.device), None if mask is None else mask.to(ctx.device), {"data_from": f["data_from"],
                                                                                 "n": f["n"]}
    data = build_data(f["data"], "fit.data")
    x = data.x.to(ctx.device, torch.get_default_dtype())
    return x, None if data.mask is None else data.mask.to(ctx.device), {"data": data.description, "n": len(x)}


def _prepare_barycenter(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    o, info = method.options, {}
    weights = o["weights"]
    if o["fit"] is not None:
        weights, info = _fit_weights(method, members, ctx)
    model = fusion.Barycenter(members, weights, ctx.schedule)

    def draw(n: int, g: torch.Generator) -> Draw:
        shape, mask = ctx.layout(members, n, g, "product", weights)  # node counts of Π p_i^λ_i (MATH §6)
        r = _sample(ctx, model, shape, mask, g)
        return Draw(r.x, mask=r.mask)

    return Prepared(draw, [float(w) for w in weights], info, model)


def _sample(ctx: RunContext, model, shape, mask, g: torch.Generator):
    """Untracked reverse-SDE samples of a fused score model with a given layout."""
    return sample(model, ctx.schedule, shape, steps=ctx.steps, t_end=ctx.t_end, grid_power=ctx.grid_power, generator=g, device=ctx.device,
                  denoise=ctx.denoise, mask=mask)


def _fit_weights(method: MethodSpec, members: list, ctx: RunContext) -> tuple[list[float], dict]:
    """λ from ``fit.n`` samples of ``fit.data_from`` (MATH §2), seeded by (seed, method, "fit")."""
    f = method.options["fit"]
    g = ctx.generator(method.name, "fit")
    data, mask, source = _fit_data(f, ctx, g)
    what = f"fit.data ({data_source(source['data'])})" if "data" in source else f"fit.data_from ({f['data_from']})"
    check_states(data, mask, ctx.schedule, what, sample_shape(members[0]))  # e.g. 12-node clouds, 9-node members
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fusion.fit_barycenter_weights(members, data, ctx.schedule, window=f["window"], n_mc=f["n_mc"],
                                            heldout_fraction=f["heldout_fraction"], generator=g, mask=mask)
    for w in caught:
        warnings.warn(f"{method.name}: {w.message}", stacklevel=2)
    info = {"fit": {"seed": derive_seed(ctx.seed, method.name, "fit"), **source,
                    "window": f["window"], "t_window": list(fit.window), "n_train": fit.n_train,
                    "n_heldout": fit.n_heldout, "train_dsm_loss": fit.train_loss, "heldout_dsm_loss": fit.heldout_loss,
                    "per_model": fit.per_model.to_dict("records"), "warnings": [str(w.message) for w in caught]}}
    return [float(w) for w in fit.weights], info


def _check_ensemble(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["rule"] = as_choice(o["rule"], f"{path}.rule", fusion.ensemble.RULES)
    if o["rule"] == "weighted":
        if o["weights"] is None:
            fail(f"{path}.weights", "rule 'weighted' needs weights (one per model, on the simplex)")
        o["weights"] = as_simplex(o["weights"], f"{path}.weights", k)
    elif o["weights"] is not None:
        fail(f"{path}.weights", f"weights only apply to rule 'weighted' (rule is {o['rule']!r})")
    if o["rule"] == "trimmed":
        o["trim"] = as_float(0.2 if o["trim"] is None else o["trim"], f"{path}.trim", 0.0, 0.5)
        try:
            fusion.ensemble.trim_count(k, o["trim"])
        except ValueError as e:
            fail(f"{path}.trim", str(e))
    elif o["trim"] is not None:
        fail(f"{path}.trim", f"trim only applies to rule 'trimmed' (rule is {o['rule']!r})")
    return o


def _prepare_ensemble(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    o = method.options
    model = fusion.Ensemble(members, rule=o["rule"], weights=o["weights"], schedule=ctx.schedule,
                            trim=0.2 if o["trim"] is None else o["trim"])
    exponents = o["weights"] if o["rule"] == "weighted" else None if o["rule"] == "sum" else [1.0 / len(members)] * len(members)

    def draw(n: int, g: torch.Generator) -> Draw:
        shape, mask = ctx.layout(members, n, g, "product", exponents)
        r = _sample(ctx, model, shape, mask, g)
        return Draw(r.x, mask=r.mask)

    return Prepared(draw, o["weights"], model=model)


def _check_random_choice(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["weights"] = as_simplex([1.0 / k] * k if o["weights"] is None else o["weights"], f"{path}.weights", k)
    return o


def _prepare_random_choice(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    """Each sample runs one member, drawn with probabilities ``weights`` (MATH §4 baseline); its
    size (point clouds) follows that member's histogram."""
    shape, k = sample_shape(members[0]), len(members)
    probs = torch.tensor(method.options["weights"], dtype=torch.float64)

    def draw(n: int, g: torch.Generator) -> Draw:
        chosen = torch.multinomial(probs, n, replacement=True, generator=g)
        x = torch.full((n, *shape), math.nan, dtype=torch.get_default_dtype())
        ito = torch.full((n, k), math.nan, dtype=torch.float64)
        mask, reason = None, [""] * n
        for i, model in enumerate(members):
            idx = (chosen == i).nonzero().flatten()
            if not len(idx):
                continue
            try:
                r = ctx.sde(model, len(idx), g, track=True)
            except NonFiniteError as e:  # only this member's trajectories failed: the others stand
                warnings.warn(f"{e}; its {len(idx)} samples marked invalid", stacklevel=2)
                for j in idx.tolist():
                    reason[j] = str(e)
                continue
            x[idx], ito[idx, i] = r.x.cpu().to(x.dtype), r.log_density.cpu()
            if r.mask is not None:
                if mask is None:  # a failed member's rows keep all nodes, as a failed chunk's do
                    mask = torch.ones(n, shape[0], dtype=torch.bool)
                mask[idx] = r.mask.cpu()
        return Draw(x, mask=mask, ito=ito, chosen=chosen, reason=reason)

    return Prepared(draw, method.options["weights"], mixture=list(method.options["weights"]))


def _check_fkc(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o["exponents"] = [1.0] * k if o["exponents"] is None else as_floats(o["exponents"], f"{path}.exponents", k)
    o["noise_ratio"] = as_float(o["noise_ratio"], f"{path}.noise_ratio")
    o["ess_threshold"] = as_float(o["ess_threshold"], f"{path}.ess_threshold")
    o["resampling"] = as_choice(o["resampling"], f"{path}.resampling", fusion.fkc.RESAMPLING)
    _fusion_rule(path, fusion.fkc.check_fkc_options, k, o["exponents"], o["noise_ratio"], o["ess_threshold"],
                 o["resampling"])
    return o


def _fusion_rule(path: str, check: Callable[..., Any], *args: Any) -> None:
    """Run a fusion operator's own option check (each rule lives there once) while the workflow is
    read; its SamplerError becomes a WorkflowError under the option's path."""
    try:
        check(*args)
    except SamplerError as e:
        fail(f"{path}.{e.field}" if e.field else path, str(e))


_FKC_METRICS = ("fkc_ess_min", "fkc_ess_final", "fkc_resamples", "fkc_ancestors")


def _fkc_draw(o: dict, members: list, ctx: RunContext,
              steering: dict | None = None) -> Callable[[int, torch.Generator], Draw]:
    """``draw(n, g)`` of Feynman–Kac particles; ``steering``: the ``potential``, ``ramp`` and
    ``columns(x, mask)`` (energies of the final samples) of a steered method (MATH §8)."""
    steer = steering or {}

    def draw(n: int, g: torch.Generator) -> Draw:
        shape, mask = ctx.layout(members, n, g, "product", o["exponents"])
        r = fusion.fkc_sample(members, ctx.schedule, shape, exponents=o["exponents"], steps=ctx.steps, generator=g,
                              t_end=ctx.t_end, noise_ratio=o["noise_ratio"], ess_threshold=o["ess_threshold"],
                              resampling=o["resampling"], device=ctx.device, mask=mask, grid_power=ctx.grid_power,
                              denoise=ctx.denoise, potential=steer.get("potential"), ramp=steer.get("ramp", "alpha2"))
        ito = r.log_q if r.log_q is not None else torch.full((n, len(members)), math.nan, dtype=torch.float64)
        per_chunk = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
        extra = steer["columns"](r.x, r.mask) if steer else {}
        return Draw(r.x, mask=r.mask, ito=ito, columns={
            "fkc_log_weight": r.log_weight, "fkc_ess_min": per_chunk(r.ess.min()),
            "fkc_ess_final": per_chunk(r.ess[-1]), "fkc_resamples": per_chunk(r.resamples),
            "fkc_ancestors": per_chunk(len(torch.unique(r.ancestors))), **extra})

    return draw


def _fkc_info(o: dict) -> dict:
    return {"exponents": o["exponents"], "noise_ratio": o["noise_ratio"], "ess_threshold": o["ess_threshold"],
            "resampling": o["resampling"]}


def _prepare_fkc(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    """Feynman–Kac corrected samples of Π q_i^{b_i} (MATH §7). A chunk is one particle set: its
    ``chunk_size`` particles are resampled among themselves and end equally weighted."""
    o = method.options
    return Prepared(_fkc_draw(o, members, ctx), None, _fkc_info(o), metric_columns=_FKC_METRICS)


def _check_steer(o: dict, k: int, names: Sequence[str], path: str) -> dict:
    o = _check_fkc(o, k, names, path)
    o["ramp"] = as_choice(o["ramp"], f"{path}.ramp", fusion.steer.RAMPS)
    o["potentials"] = check_potential_list(o["potentials"], f"{path}.potentials")
    return o


def _check_steer_modality(o: dict, modality: plugins.Modality, path: str) -> dict:
    o["potentials"] = resolve_potentials(o["potentials"], modality, f"{path}.potentials")
    return o


def _prepare_steer(method: MethodSpec, members: list, ctx: RunContext) -> Prepared:
    """Feynman–Kac particles of Π q_i^{b_i} exp(−Σ_j w_j U_j) (MATH §8): the fkc operator's
    proposal, weights and columns, plus the potentials on the denoised estimate, ramped in, and
    each potential's energy of the final samples (``energy_<name>``)."""
    o, modality = method.options, plugins.modality(members[0].modality)
    norm = getattr(members[0], "normalisation", None) or {}
    potential = total_energy(o["potentials"], modality, norm)
    probe_potentials(potential, members, ctx.layout, ctx.generator(method.name, "potential-probe"), ctx.device)
    columns = lambda x, mask: energy_columns(o["potentials"], modality, norm, x, mask)  # noqa: E731
    draw = _fkc_draw(o, members, ctx, {"potential": potential, "ramp": o["ramp"], "columns": columns})
    info = {**_fkc_info(o), "ramp": o["ramp"], "potentials": [dict(p) for p in o["potentials"]]}
    energies = tuple(f"energy_{p['name']}" for p in o["potentials"])
    return Prepared(draw, None, info, metric_columns=(*_FKC_METRICS, *energies))


register_operator("single", _prepare_single, min_models=1, max_models=1)
register_operator("superpose", _prepare_superpose, {"mode": "or", "temperature": 1.0, "bias": None, "weights": None,
                                                       "ito_correction": None},
                  _check_superpose, min_models=2)
register_operator("barycenter", _prepare_barycenter, {"weights": None, "fit": None}, _check_barycenter, min_models=2)
register_operator("ensemble", _prepare_ensemble, {"rule": "mean", "weights": None, "trim": None}, _check_ensemble,
                  min_models=2)
register_operator("random_choice", _prepare_random_choice, {"weights": None}, _check_random_choice, min_models=2)
_FKC_OPTIONS = {"exponents": None, "noise_ratio": 1.0, "ess_threshold": 0.5, "resampling": "systematic"}
register_operator("fkc", _prepare_fkc, _FKC_OPTIONS, _check_fkc, min_models=1)
register_operator("steer", _prepare_steer, {**_FKC_OPTIONS, "potentials": REQUIRED, "ramp": "alpha2"}, _check_steer,
                  min_models=1, check_modality=_check_steer_modality)
