"""Shipped checkpoints: ``model.safetensors`` + ``card.json``, and one call to load them.

A checkpoint folder holds::

    model.safetensors   the (EMA) state dict; safetensors, so loading runs no pickled code
    card.json           how to rebuild and use it (written last; its presence marks a
                        complete checkpoint):
        format, format_version   "molfuse-checkpoint", 1
        architecture             {name, config}: molfuse.nets.build(name, config) rebuilds the net
        prediction               score | eps | x0 | v (MATH §1)
        schedule                 the schedule config, e.g. {kind: vp, beta_min, beta_max}
        normalisation            {scale, shift, ...}: x_model = scale * x_data + shift (numbers or
                                 per-feature lists; extra keys such as levels are kept)
        data                     description of the training data
        seed, steps, final_losses, training (hyper-parameters)
        weights                  {file, sha256, bytes}
        molfuse_version, created

Anything else the caller puts in the card (name, description, class names) is kept as is.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .convert import PREDICTIONS
from .nets import build
from .nets import mlp as _mlp  # noqa: F401  (registers the "mlp" architecture)
from .schedules import Schedule, VPSchedule

__all__ = ["CheckpointError", "save_checkpoint", "load_model", "read_card", "schedule_from_config",
           "to_model_space", "to_data_space", "IDENTITY", "WEIGHTS_FILE", "CARD_FILE"]

WEIGHTS_FILE, CARD_FILE, FORMAT = "model.safetensors", "card.json", "molfuse-checkpoint"
IDENTITY = {"scale": 1.0, "shift": 0.0}


class CheckpointError(ValueError):
    """A checkpoint is missing, tampered with, or does not fit the architecture its card names."""


def save_checkpoint(folder: str | Path, net: nn.Module, card: Mapping[str, Any]) -> Path:
    """Write ``net``'s state dict and its card to ``folder`` (each file atomically, card last).

    Args:
        folder: destination (created if needed; existing files are replaced).
        net: the network to ship (for a trained model: the EMA copy).
        card: at least ``architecture`` ({name, config}) and ``schedule`` (a config dict or
            a :class:`Schedule`); ``prediction`` defaults to ``net.prediction``,
            ``normalisation`` to the identity. Other keys are kept.

    Returns:
        The folder.

    Raises:
        CheckpointError: the card is incomplete, or ``build(architecture)`` would not accept
            these weights (so a card that cannot be loaded is never written).
    """
    from safetensors.torch import save as st_save

    from .campaign.files import _atomic, _jsonable  # imported here: the campaign package is the face

    folder = Path(folder)
    card = dict(card)
    for key in ("architecture", "schedule"):
        if key not in card:
            raise CheckpointError(f"card needs {key!r}")
    if isinstance(card["schedule"], Schedule):
        card["schedule"] = card["schedule"].config()
    card.setdefault("prediction", getattr(net, "prediction", "score"))
    card["normalisation"] = {**IDENTITY, **(card.get("normalisation") or {})}
    _check_card(card, "card")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    _check_state(build(card["architecture"]["name"], card["architecture"]["config"]), state, "the net being saved")
    blob = st_save(state, metadata={"format": FORMAT})
    card["weights"] = {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    card.setdefault("molfuse_version", _version())
    card.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    card = {"format": FORMAT, "format_version": 1, **card}
    _atomic(folder / WEIGHTS_FILE, lambda fh: fh.write(blob))
    _atomic(folder / CARD_FILE, lambda fh: fh.write(json.dumps(_jsonable(card), indent=2) + "\n"), text=True)
    return folder


def read_card(folder_or_card: str | Path) -> tuple[dict, Path]:
    """The card of a checkpoint (folder or ``card.json`` path) and the path it was read from."""
    path = Path(folder_or_card)
    path = path / CARD_FILE if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"no checkpoint card at {path} (a checkpoint folder holds {CARD_FILE} and "
                              f"{WEIGHTS_FILE}; train one with `molfuse train`)")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid JSON card: {e}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a molfuse checkpoint card (format must be {FORMAT!r})")
    _check_card(card, str(path))
    if not isinstance(card.get("weights"), dict) or "sha256" not in card["weights"]:
        raise CheckpointError(f"{path}: card has no weights.sha256")
    return card, path


def load_model(folder_or_card: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a shipped model, ready to sample: ``molfuse.sample(load_model(p), ...)``.

    The net is rebuilt with :func:`molfuse.nets.build` from the card (no pickled code), its
    weights are read with safetensors after checking their sha256 against the card, and
    keys / shapes must match exactly. The returned module is in eval mode with
    ``requires_grad`` off and carries ``prediction``, ``schedule`` (:class:`VPSchedule`),
    ``normalisation``, ``card``, ``checkpoint`` (weights path) and ``name``.

    Raises:
        CheckpointError: missing or unreadable files, sha256 mismatch (tampered / swapped
            weights), unknown architecture, or weights that do not fit it (the message names
            the missing, unexpected and mis-shaped keys).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    card, card_path = read_card(folder_or_card)
    weights = card_path.parent / card["weights"].get("file", WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(f"{card_path}: weights file {weights} is missing")
    blob = weights.read_bytes()  # hash and parse the same bytes
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card["weights"]["sha256"]:
        raise CheckpointError(f"{weights}: sha256 {digest[:16]}... does not match the card's "
                              f"{str(card['weights']['sha256'])[:16]}...; the weights were modified or belong to "
                              "another card. Refusing to load.")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file: {e}") from None
    arch = card["architecture"]
    try:
        net = build(arch["name"], arch["config"])
    except KeyError as e:
        raise CheckpointError(f"{card_path}: {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{card_path}: architecture {arch['name']!r} rejects config {arch['config']}: {e}") from None
    _check_state(net, state, str(weights))
    net.load_state_dict(state, strict=True)
    net.to(device).eval().requires_grad_(False)
    net.prediction = card["prediction"]
    net.schedule = schedule_from_config(card["schedule"])
    net.normalisation = dict(card["normalisation"])
    net.card, net.checkpoint = card, weights
    net.name = card.get("name") or card_path.parent.name
    return net


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """The :class:`Schedule` a card's ``schedule`` entry describes (``kind: vp`` only)."""
    kind = config.get("kind")
    if kind != "vp":
        raise CheckpointError(f"schedule kind {kind!r} is not supported (known: vp)")
    return VPSchedule(**{k: v for k, v in config.items() if k != "kind"})


def to_model_space(x: Tensor, normalisation: Mapping[str, Any]) -> Tensor:
    """``scale * x + shift`` (data -> model space); scale / shift are numbers or per-feature lists."""
    scale, shift = _coeffs(normalisation, x)
    return scale * x + shift


def to_data_space(x: Tensor, normalisation: Mapping[str, Any]) -> Tensor:
    """``(x - shift) / scale`` (model -> data space), the inverse of :func:`to_model_space`."""
    scale, shift = _coeffs(normalisation, x)
    return (x - shift) / scale


def _coeffs(normalisation: Mapping[str, Any], x: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.as_tensor(normalisation.get(k, d), dtype=x.dtype, device=x.device) for k, d in IDENTITY.items())


def _check_card(card: Mapping[str, Any], where: str) -> None:
    arch = card.get("architecture")
    if not isinstance(arch, Mapping) or not isinstance(arch.get("name"), str) or not isinstance(arch.get("config"), Mapping):
        raise CheckpointError(f"{where}: architecture must be {{name: str, config: mapping}}; got {arch!r}")
    if card.get("prediction") not in PREDICTIONS:
        raise CheckpointError(f"{where}: prediction must be one of {PREDICTIONS}; got {card.get('prediction')!r}")
    if not isinstance(card.get("schedule"), Mapping):
        raise CheckpointError(f"{where}: schedule must be a config mapping; got {card.get('schedule')!r}")
    norm = card.get("normalisation")
    if not isinstance(norm, Mapping) or not set(IDENTITY) <= set(norm):
        raise CheckpointError(f"{where}: normalisation must hold scale and shift (other keys, e.g. levels, are kept); "
                              f"got {norm!r}")
    schedule_from_config(card["schedule"])


def _check_state(net: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """Keys and shapes of ``state`` equal ``net``'s; otherwise name the differences."""
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} {got[k]} != {want[k]}" for k in want if k in got and got[k] != want[k]]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(v)}): {', '.join(v[:8])}{', ...' if len(v) > 8 else ''}"
                 for label, v in (("missing keys", missing), ("unexpected keys", unexpected),
                                  ("shape mismatches", shapes)) if v]
        raise CheckpointError(f"{where} does not fit architecture {type(net).__name__}: " + "; ".join(parts))


def _version() -> str:
    from . import __version__

    return __version__
