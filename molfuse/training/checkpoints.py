"""Checkpoints: ``model.safetensors`` + ``card.json``, and one call to load them.

A checkpoint folder holds::

    model.safetensors   the (EMA) state dict; safetensors, so loading runs no pickled code
    card.json           how to rebuild and use it (written last; its presence marks a
                        complete checkpoint):
        format, format_version   "molfuse-checkpoint", 2
        modality                 the modality that owns the card (molfuse.plugins): it provides
                                 the architecture and checks normalisation / conditioning
        architecture             {name, config}: molfuse.nets.build(name, config) rebuilds the net
        prediction               score | eps | x0 | v (MATH §1)
        schedule                 the schedule config, e.g. {kind: vp, beta_min, beta_max}
        space                    the state space (MATH §6), e.g. {kind: euclidean} or
                                 {kind: point_cloud, centred: 3}
        shape                    one sample's shape, e.g. [1, 28, 28] (point clouds: [max nodes, channels])
        node_counts?             {n: count}: the sizes of the training clouds (drawn when sampling);
                                 point clouds only, 1 <= n <= shape[0], counts >= 0, one positive
        node_counts_by_condition?  {"3" or "3,4": {n: count}}: the same per whole-number
                                 condition value (a prompted sampler draws n from p(n | c))
        node_counts_by_style?    {style: {n: count}}: the same per style of a style student
        normalisation            the modality's map between data and model space (e.g. images:
                                 x_model = scale * pixels + shift, with levels)
        conditioning             {kind: none | class_label | properties, null_cond, cond_drop_prob}
        data                     description of the training data
        seed, steps, final_losses, training (hyper-parameters), licence, rebuild
        weights                  {file, sha256, bytes}: file is a bare name inside the folder (a
                                 card or weights file that is a link out of the folder is refused)
        molfuse_version, created

Anything else the caller puts in the card (name, description, class names) is kept as is.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import torch
from torch import nn

from .. import plugins
from ..base.io import atomic_write, jsonable, sha256_bytes, write_text
from ..base.provenance import VERSION
from ..convert import PREDICTIONS
from ..errors import CheckpointError, ConventionError
from ..nets import build
from ..schedules import Schedule, schedule_from_config
from ..spaces import Space, size_histogram, space_from_config

__all__ = ["CheckpointError", "save_checkpoint", "load_model", "read_card", "check_state", "check_card", "check_sizes",
           "check_modality_card", "inside_folder", "WEIGHTS_FILE", "CARD_FILE", "FORMAT", "FORMAT_VERSION",
           "CONDITIONS", "SIZE_FIELDS"]

WEIGHTS_FILE, CARD_FILE, FORMAT, FORMAT_VERSION = "model.safetensors", "card.json", "molfuse-checkpoint", 2
CONDITIONS = ("none", "class_label", "properties", "style")
SIZE_FIELDS = ("node_counts", "node_counts_by_condition", "node_counts_by_style")  # size histograms (MATH §6)


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_checkpoint(folder: str | Path, net: nn.Module, card: Mapping[str, Any], storage: str | None = None) -> Path:
    """Write ``net``'s state dict and its card to ``folder`` (each file atomically, card last).

    Args:
        folder: destination (created if needed; existing files are replaced).
        net: the network to ship (for a trained model: the EMA copy).
        card: at least ``modality``, ``architecture`` ({name, config}), ``schedule`` (a config
            or a :class:`Schedule`) and ``shape``; ``prediction`` defaults to ``net.prediction``,
            ``space`` to Euclidean, ``normalisation`` to ``{}``, ``conditioning`` to none.
        storage: ``"float16"`` / ``"bfloat16"`` store floating tensors at half size (the card's
            ``weights.dtype`` says so; :func:`load_model` casts back to the net's dtype); None
            keeps the net's dtypes.

    Returns:
        The folder.

    Raises:
        CheckpointError: the card is incomplete, its modality refuses it, or
            ``build(architecture)`` would not accept these weights (so a card that cannot be
            loaded is never written).
    """
    st_save = _safetensors().save
    folder = Path(folder)
    card = dict(card)
    for key in ("modality", "architecture", "schedule", "shape"):
        if key not in card:
            raise CheckpointError(f"card needs {key!r}")
    if isinstance(card["schedule"], Schedule):
        card["schedule"] = card["schedule"].config()
    card.setdefault("prediction", getattr(net, "prediction", "score"))
    card.setdefault("space", {"kind": "euclidean"})
    card["normalisation"] = dict(card.get("normalisation") or {})
    card["conditioning"] = {"kind": "none", "null_cond": None, "cond_drop_prob": 0.0, **(card.get("conditioning") or {})}
    card["shape"] = [int(s) for s in card["shape"]]
    check_card(card, "card")
    check_modality_card(card, "card")
    if storage is not None and storage not in STORAGE_DTYPES:
        raise CheckpointError(f"storage dtype {storage!r}: expected one of {sorted(STORAGE_DTYPES)}")
    cast = STORAGE_DTYPES.get(storage)
    state = {k: (v.detach().to("cpu", cast) if cast is not None and v.is_floating_point() else v.detach().to("cpu"))
             .contiguous().clone() for k, v in net.state_dict().items()}
    check_state(build(card["architecture"]["name"], card["architecture"]["config"]), state, "the net being saved")
    blob = st_save(state, metadata={"format": FORMAT})
    card["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_bytes(blob), "bytes": len(blob),
                       **({"dtype": storage} if storage not in (None, "float32") else {})}
    card.setdefault("molfuse_version", VERSION)
    card.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    card = {"format": FORMAT, "format_version": FORMAT_VERSION, **card}
    atomic_write(folder / WEIGHTS_FILE, lambda fh: fh.write(blob))
    write_text(folder / CARD_FILE, json.dumps(jsonable(card), indent=2) + "\n")
    return folder


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object that names a key twice is refused (json keeps the last one without a word)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"key {key!r} is given twice in one object; JSON would silently keep the last one")
        out[key] = value
    return out


def read_card(folder_or_card: str | Path) -> tuple[dict, Path]:
    """The card of a checkpoint (folder or ``card.json`` path), checked, and the path it was read from."""
    path = Path(folder_or_card)
    path = path / CARD_FILE if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"no checkpoint card at {path} (a checkpoint folder holds {CARD_FILE} and "
                              f"{WEIGHTS_FILE}; train one with `molfuse train`)")
    inside_folder(path, path, "the card")
    try:
        card = json.loads(path.read_text(), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid JSON card: {e}") from None
    except _DuplicateKey as e:
        raise CheckpointError(f"{path}: {e}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a molfuse checkpoint card (format must be {FORMAT!r})")
    if card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: card format_version {card.get('format_version')!r}; this molfuse reads "
                              f"{FORMAT_VERSION} (cards of version 1 name no modality, space or shape: add them, "
                              "or retrain with `molfuse train`)")
    check_card(card, str(path))
    weights = card.get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise CheckpointError(f"{path}: card has no weights.sha256")
    name = weights.get("file", WEIGHTS_FILE)
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise CheckpointError(f"{path}: weights.file must be a file name inside the checkpoint folder; got {name!r}")
    return card, path


def load_model(folder_or_card: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a checkpoint's model, ready to sample: ``molfuse.sample(load_model(p), ...)``.

    The card's modality provides the architecture (:mod:`molfuse.plugins`); the net is rebuilt
    with :func:`molfuse.nets.build` (no pickled code), its weights are read with safetensors
    after checking their sha256 against the card, and keys / shapes must match exactly. The
    returned module is in eval mode with ``requires_grad`` off and carries ``prediction``,
    ``schedule``, ``space``, ``modality``, ``normalisation``, ``card``, ``checkpoint`` (weights
    path) and ``name``.

    Raises:
        CheckpointError: missing or unreadable files, a card or weights file that is a symbolic
            link out of the checkpoint folder, sha256 mismatch (tampered / swapped weights),
            unknown or unavailable modality or architecture, or weights that do not fit it (the
            message names the missing, unexpected and mis-shaped keys).
    """
    st = _safetensors()
    card, card_path = read_card(folder_or_card)
    weights = card_path.parent / card["weights"].get("file", WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(f"{card_path}: weights file {weights} is missing")
    inside_folder(weights, card_path, f"the weights file {weights.name}")
    blob = weights.read_bytes()  # hash and parse the same bytes
    digest = sha256_bytes(blob)
    if digest != card["weights"]["sha256"]:
        raise CheckpointError(f"{weights}: sha256 {digest[:16]}... does not match the card's "
                              f"{str(card['weights']['sha256'])[:16]}...; the weights were modified or belong to "
                              "another card. Refusing to load.")
    try:
        state = st.load(blob)
    except (st.SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file: {e}") from None
    net = _build(card, card_path)
    check_state(net, state, str(weights))
    own = net.state_dict()  # half-precision storage (card weights.dtype) back to the net's dtypes
    state = {k: v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v
             for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    net.to(device).eval().requires_grad_(False)
    net.prediction = card["prediction"]
    net.schedule = schedule_from_config(card["schedule"])
    net.space = space_from_config(card["space"])
    net.modality = card["modality"]
    net.normalisation = dict(card["normalisation"])
    net.card, net.checkpoint = card, weights
    net.name = card.get("name") or card_path.parent.name
    return net


def inside_folder(path: Path, card_path: Path, what: str) -> None:
    """Refuse a file of a checkpoint whose real location (symbolic links followed) is not in the
    checkpoint folder: a folder holds its own files (the folder itself may be a link).

    Raises:
        CheckpointError: naming the file, where it leads and the folder.
    """
    folder = card_path.parent.resolve()
    real = path.resolve()
    if real.parent != folder:
        raise CheckpointError(f"{card_path}: {what} is a link to {real}, outside the checkpoint folder "
                              f"{folder}; a checkpoint reads only its own files (copy the file in: cp -L)")


def _safetensors() -> Any:
    """``safetensors.torch`` (with ``SafetensorError``), or a CheckpointError naming the extra."""
    try:
        import safetensors.torch as st
        from safetensors import SafetensorError
    except ImportError:
        raise CheckpointError("reading and writing checkpoints needs safetensors: pip install 'molfuse[train]'") from None
    return SimpleNamespace(save=st.save, load=st.load, SafetensorError=SafetensorError)


def check_modality_card(card: Mapping[str, Any], where: str) -> None:
    """The entries the card's modality owns (normalisation, shape, ...), checked by the modality.

    Raises:
        CheckpointError: ``"<where>: <the modality's message>"``, or the modality is unknown or
            not installed (with its install hint).
    """
    try:
        modality = plugins.modality(card["modality"])
        if modality.check_card is not None:
            modality.check_card(card)
    except (plugins.MissingModalityError, CheckpointError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def _build(card: dict, card_path: Path) -> nn.Module:
    arch = card["architecture"]
    check_modality_card(card, str(card_path))
    try:
        return build(arch["name"], arch["config"])
    except plugins.MissingModalityError as e:
        raise CheckpointError(f"{card_path}: {e}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{card_path}: architecture {arch['name']!r} rejects config {arch['config']}: {e}") from None


def check_card(card: Mapping[str, Any], where: str) -> None:
    """The entries every card needs, with the right types (the modality checks its own)."""
    if not isinstance(card.get("modality"), str) or not card["modality"]:
        raise CheckpointError(f"{where}: modality must name the modality that owns the card; got {card.get('modality')!r}")
    arch = card.get("architecture")
    if not isinstance(arch, Mapping) or not isinstance(arch.get("name"), str) or not isinstance(arch.get("config"), Mapping):
        raise CheckpointError(f"{where}: architecture must be {{name: str, config: mapping}}; got {arch!r}")
    if card.get("prediction") not in PREDICTIONS:
        raise CheckpointError(f"{where}: prediction must be one of {PREDICTIONS}; got {card.get('prediction')!r}")
    shape = card.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise CheckpointError(f"{where}: shape must be one sample's shape, a list of positive integers; got {shape!r}")
    if not isinstance(card.get("normalisation"), Mapping):
        raise CheckpointError(f"{where}: normalisation must be a mapping (the modality's); got {card.get('normalisation')!r}")
    cond = card.get("conditioning")
    if not isinstance(cond, Mapping) or cond.get("kind") not in CONDITIONS:
        raise CheckpointError(f"{where}: conditioning must be {{kind: one of {', '.join(CONDITIONS)}, null_cond, "
                              f"cond_drop_prob}}; got {cond!r}")
    try:
        schedule_from_config(card.get("schedule"))
        space = space_from_config(card.get("space"))
        check_sizes(card, space)
    except ConventionError as e:
        raise CheckpointError(f"{where}: {e}") from None


def check_sizes(card: Mapping[str, Any], space: Space) -> None:
    """The card's size histograms (``node_counts`` and its per-condition / per-style versions): each
    a :func:`~molfuse.spaces.size_histogram` of node counts up to ``shape[0]``, on cards of a masked
    space only (point clouds, chains).

    Raises:
        ConventionError: naming the field (``node_counts_by_condition['3']``) and the bad entry.
    """
    for field in SIZE_FIELDS:
        value = card.get(field)
        if value is None:
            continue
        if space.trivial:
            raise ConventionError(f"{field}: only cards of a masked space (point clouds, chains) have node counts; "
                                  f"this card's space is {space.config()}")
        if field == "node_counts":
            size_histogram(value, card["shape"][0], field)
            continue
        if not isinstance(value, Mapping):
            raise ConventionError(f"{field}: expected a mapping {{key: {{node count: how many}}}}; got {value!r}")
        for key, hist in value.items():
            if hist is not None or field != "node_counts_by_style":  # a teacher without sizes: its style has none
                size_histogram(hist, card["shape"][0], f"{field}[{key!r}]")


def check_state(net: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
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
