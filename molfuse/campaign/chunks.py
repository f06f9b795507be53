"""A method's samples in resumable chunks: drawn with seeds from (seed, method, chunk), saved
atomically under ``samples/chunks/<method>/``, reused on a rerun of the same folder.

:func:`plan_chunks` lists the chunks still to draw, :func:`compute_chunk` draws and writes one
(in this process or on a worker, :mod:`molfuse.campaign.executors`), :func:`assemble_chunks`
reads a method's finished chunks back in order.

A chunk proves it belongs to the run: it records the run's config hash
(:meth:`~.spec.Workflow.config_sha256`), its seed, the fields the method produced and the
sha256 of its content. A chunk that cannot be read, or whose record does not match (another
config or seed, a field missing, samples of another shape or size, content edited since it was
written) is named in a warning with what differs and drawn again. A member that returns NaN /
inf does not stop the run: the chunk's samples become invalid rows whose reason names the
member and the time t.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..base.io import atomic_write, sha256_file
from ..base.seeds import derive_seed
from ..errors import NonFiniteError, WorkflowError
from .executors import ChunkTask
from .registry import Prepared, sample_shape
from .spec import MethodSpec, Workflow

__all__ = ["assemble_chunks", "chunk_path", "chunk_sizes", "compute_chunk", "load_chunk", "plan_chunks",
           "chunk_problem", "content_digest"]

_KEYS = ("x", "mask", "ito", "fallbacks", "chosen", "reason")
_RECORD = ("config_hash", "seed", "fields", "digest", "wall_time_s")  # what a chunk says about itself


def chunk_sizes(n: int, size: int) -> list[int]:
    return [min(size, n - s) for s in range(0, n, size)]


def chunk_path(folder: Path, method: str, i: int) -> Path:
    return folder / "samples" / "chunks" / method / f"chunk_{i:05d}.npz"


def content_digest(data: dict) -> str:
    """sha256 over a chunk's arrays (name, dtype, shape and bytes, by name) but its ``digest`` and
    timing, so that the same chunk drawn in this process or on a worker has the same digest."""
    h = hashlib.sha256()
    for key in sorted(k for k in data if k not in ("digest", "wall_time_s")):
        a = np.ascontiguousarray(data[key])
        h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def chunk_problem(data: dict, size: int, seed: int, config_hash: str, shape: tuple[int, ...] | None) -> str | None:
    """Why a chunk read from disk is not this run's chunk (a phrase after its path), or None.

    Args:
        data: the chunk's arrays.
        size, seed: the chunk's sample count and derived seed in this run.
        config_hash: this run's :meth:`~.spec.Workflow.config_sha256`.
        shape: one sample's shape (the models'), or None not to check it.
    """
    missing = [k for k in _RECORD if k not in data]
    if missing:
        return f"records no {', '.join(missing)} (written by an older molfuse, or not by molfuse)"
    if str(data["config_hash"]) != config_hash:
        return (f"was made by another configuration (config hash {str(data['config_hash'])[:12]}, this run's "
                f"{config_hash[:12]})")
    if int(data["seed"]) != seed:
        return f"records seed {int(data['seed'])}, but this chunk's seed is {seed}"
    lacks = [str(k) for k in np.atleast_1d(data["fields"]) if str(k) not in data]
    if lacks:
        return f"lacks {', '.join(lacks)}, which this method produces"
    x = data["x"]
    if x.ndim < 1 or len(x) != size or (shape is not None and tuple(x.shape[1:]) != tuple(shape)):
        want = f"({size}, {', '.join(map(str, shape))})" if shape is not None else f"{size} samples"
        return f"holds x of shape {tuple(x.shape)}, but this chunk is {want}"
    rows = [f"{k} {tuple(v.shape)}" for k, v in data.items() if k not in _RECORD and (v.ndim < 1 or len(v) != size)]
    if rows:
        return f"has fields of the wrong length for {size} samples: {', '.join(rows)}"
    if str(data["digest"]) != content_digest(data):
        return "does not match the content digest recorded when it was written (edited since)"
    return None


def load_chunk(path: Path, size: int, seed: int, config_hash: str, shape: tuple[int, ...] | None = None
               ) -> dict | None:
    """A finished chunk of this run, or None when missing. An unreadable chunk, or one that is not
    this run's (:func:`chunk_problem`), is named in a warning saying what differs, deleted and
    drawn again.

    Raises:
        WorkflowError: a folder, or a file in the way of the chunk's folder, sits where the chunk
            goes (molfuse does not delete folders).
    """
    blocked = [(p, "a file") for p in path.parents[:3] if p.exists() and not p.is_dir()]  # method, chunks/, samples/
    blocked += [(path, "a folder")] if path.is_dir() else []
    if blocked:
        where, what = blocked[-1]
        raise WorkflowError(f"{where} is {what} where molfuse keeps the run's chunks ({path.name} goes in "
                            f"{path.parent}); move it away or use another run name (--name)")
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        why = f"is unreadable ({type(e).__name__}: {str(e)[:80] or 'empty file'})"
    else:
        why = chunk_problem(data, size, seed, config_hash, shape)
    if why is None:
        return data
    warnings.warn(f"{path} {why}; drawing this chunk again", stacklevel=2)
    path.unlink(missing_ok=True)
    return None


def _filler(key: str, chunks: list[dict], size: int) -> np.ndarray:
    """What a chunk that failed (NaN samples, a reason) has in place of ``key``."""
    ref = next(c[key] for c in chunks if key in c)
    fill = np.nan if key.startswith("col_") else {"reason": "", "mask": True, "ito": np.nan, "fallbacks": 0,
                                                   "chosen": -1}[key]
    return np.full((size, *ref.shape[1:]), fill, dtype=ref.dtype)


def _draw(prep: Prepared, members: list, size: int, seed: int) -> dict:
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            d = prep.draw(size, torch.Generator().manual_seed(seed))
    except NonFiniteError as e:  # every sample of the chunk is an invalid row naming the member and t
        shape = sample_shape(members[0])
        data = {"x": np.full((size, *shape), np.nan, dtype=np.float32), "reason": np.array([str(e)] * size)}
        warnings.warn(f"{e}; {size} samples marked invalid", stacklevel=3)
    else:
        data = {k: getattr(d, k).detach().cpu().numpy() for k in ("x", "mask", "ito", "fallbacks", "chosen")
                if getattr(d, k) is not None}
        data.update({f"col_{k}": torch.as_tensor(v).detach().cpu().numpy() for k, v in d.columns.items()})
        if d.reason is not None and any(d.reason):  # some samples failed, named per sample
            data["reason"] = np.array(d.reason, dtype=str)
    data.update(seed=np.int64(seed), wall_time_s=np.float64(time.perf_counter() - t0))
    return data


def _sealed(data: dict, config_hash: str) -> dict:
    """``data`` with its record: the run's config hash, the fields the method produced, its digest."""
    data = {**data, "config_hash": np.str_(config_hash),
            "fields": np.array(sorted(k for k in data if k not in _RECORD), dtype=str)}
    data["digest"] = np.str_(content_digest(data))
    return data


def plan_chunks(wf: Workflow, m: MethodSpec, shape: tuple[int, ...] | None = None) -> tuple[list[ChunkTask], int]:
    """The chunks of method ``m`` still to draw (missing, unreadable or not this run's), and how
    many are reused. ``shape``: one sample's shape, checked against each chunk's ``x``."""
    todo, reused, config_hash = [], 0, wf.config_sha256
    for i, size in enumerate(chunk_sizes(wf.n_samples, wf.sampler.chunk_size)):
        seed = derive_seed(wf.seed, m.name, i)
        path = chunk_path(wf.folder, m.name, i)
        if load_chunk(path, size, seed, config_hash, shape) is None:
            todo.append(ChunkTask(m.name, i, size, seed, str(path), config_hash))
        else:
            reused += 1
    return todo, reused


def compute_chunk(task: ChunkTask, payload: tuple[Prepared, list], threads: int | None = None) -> float:
    """Draw one chunk with its seed and write it atomically to ``task.path``; returns the seconds taken.

    ``payload`` is the method's prepared sampler and its members. ``threads``, when given, sets
    torch's thread count for the draw (a worker process starts at torch's default).
    """
    if threads:
        torch.set_num_threads(threads)
    prep, members = payload
    data = _sealed(_draw(prep, members, task.size, task.seed), task.config_hash)
    atomic_write(task.path, lambda fh: np.savez(fh, **data))
    return float(data["wall_time_s"])


def assemble_chunks(wf: Workflow, m: MethodSpec, reused: int = 0, shape: tuple[int, ...] | None = None) -> dict:
    """Method ``m``'s finished chunks concatenated in order, with per-sample chunk and seed, and
    each chunk file's sha256 (``chunk_sha256``, for provenance.json).

    Raises:
        WorkflowError: a chunk is missing (its computation did not finish) or not this run's.
    """
    chunks, digests, config_hash = [], [], wf.config_sha256
    for i, size in enumerate(chunk_sizes(wf.n_samples, wf.sampler.chunk_size)):
        path = chunk_path(wf.folder, m.name, i)
        data = load_chunk(path, size, derive_seed(wf.seed, m.name, i), config_hash, shape)
        if data is None:
            raise WorkflowError(f"{path}: chunk {i} of method {m.name} was not computed; rerun the same folder to resume")
        digests.append(sha256_file(path))
        data = {k: v for k, v in data.items() if k not in ("config_hash", "fields", "digest")}
        data["chunk"] = np.full(size, i)
        chunks.append(data)
    cols = sorted({k for c in chunks for k in c if k.startswith("col_")})
    out = {k: np.concatenate([c[k] if k in c else _filler(k, chunks, len(c["x"])) for c in chunks])
           for k in (*_KEYS, "chunk", *cols) if any(k in c for c in chunks)}
    out["seed"] = np.concatenate([np.full(len(c["x"]), int(c["seed"]), dtype=np.int64) for c in chunks])
    out["chunk_seeds"] = [int(c["seed"]) for c in chunks]
    out["chunk_sha256"] = digests
    out["wall_time_s"] = float(sum(float(c["wall_time_s"]) for c in chunks))
    out["reused"], out["generated"] = reused, len(chunks) - reused
    if not math.isfinite(out["wall_time_s"]):
        out["wall_time_s"] = math.nan
    return out
