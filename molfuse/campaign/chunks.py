"""A method's samples in resumable chunks: drawn with seeds from (seed, method, chunk), saved
atomically under ``samples/chunks/<method>/``, reused on a rerun of the same folder.

:func:`plan_chunks` lists the chunks still to draw, :func:`compute_chunk` draws and writes one
(in this process or on a worker, :mod:`molfuse.campaign.executors`), :func:`assemble_chunks`
reads a method's finished chunks back in order.

A chunk file that cannot be read (truncated, empty, from another config) is named in a
warning and drawn again. A member that returns NaN / inf does not stop the run: the chunk's
samples become invalid rows whose reason names the member and the time t.
"""

from __future__ import annotations

import math
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..base.io import atomic_write
from ..base.seeds import derive_seed
from ..errors import NonFiniteError, WorkflowError
from .executors import ChunkTask
from .registry import Prepared, sample_shape
from .spec import MethodSpec, Workflow

__all__ = ["assemble_chunks", "chunk_path", "chunk_sizes", "compute_chunk", "load_chunk", "plan_chunks"]

_KEYS = ("x", "mask", "ito", "fallbacks", "chosen", "reason")


def chunk_sizes(n: int, size: int) -> list[int]:
    return [min(size, n - s) for s in range(0, n, size)]


def chunk_path(folder: Path, method: str, i: int) -> Path:
    return folder / "samples" / "chunks" / method / f"chunk_{i:05d}.npz"


def load_chunk(path: Path, size: int, seed: int) -> dict | None:
    """A finished chunk, or None when missing. An unreadable chunk, or one another config made
    (size or seed differ), is reported, deleted and drawn again."""
    if not path.exists():
        return None
    why = None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        why = f"unreadable ({type(e).__name__}: {str(e)[:80] or 'empty file'})"
    else:
        if data.get("x") is None or len(data["x"]) != size or int(data.get("seed", -1)) != seed:
            why = "made by another configuration (size or seed differ)"
    if why is None:
        return data
    warnings.warn(f"{path} is {why}; drawing this chunk again", stacklevel=2)
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


def plan_chunks(wf: Workflow, m: MethodSpec) -> tuple[list[ChunkTask], int]:
    """The chunks of method ``m`` still to draw (a missing or unreadable file), and how many are reused."""
    todo, reused = [], 0
    for i, size in enumerate(chunk_sizes(wf.n_samples, wf.sampler.chunk_size)):
        seed = derive_seed(wf.seed, m.name, i)
        path = chunk_path(wf.folder, m.name, i)
        if load_chunk(path, size, seed) is None:
            todo.append(ChunkTask(m.name, i, size, seed, str(path)))
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
    data = _draw(prep, members, task.size, task.seed)
    atomic_write(task.path, lambda fh: np.savez(fh, **data))
    return float(data["wall_time_s"])


def assemble_chunks(wf: Workflow, m: MethodSpec, reused: int = 0) -> dict:
    """Method ``m``'s finished chunks concatenated in order, with per-sample chunk and seed.

    Raises:
        WorkflowError: a chunk is missing (its computation did not finish).
    """
    chunks = []
    for i, size in enumerate(chunk_sizes(wf.n_samples, wf.sampler.chunk_size)):
        path = chunk_path(wf.folder, m.name, i)
        data = load_chunk(path, size, derive_seed(wf.seed, m.name, i))
        if data is None:
            raise WorkflowError(f"{path}: chunk {i} of method {m.name} was not computed; rerun the same folder to resume")
        data["chunk"] = np.full(size, i)
        chunks.append(data)
    cols = sorted({k for c in chunks for k in c if k.startswith("col_")})
    out = {k: np.concatenate([c[k] if k in c else _filler(k, chunks, len(c["x"])) for c in chunks])
           for k in (*_KEYS, "chunk", *cols) if any(k in c for c in chunks)}
    out["seed"] = np.concatenate([np.full(len(c["x"]), int(c["seed"]), dtype=np.int64) for c in chunks])
    out["chunk_seeds"] = [int(c["seed"]) for c in chunks]
    out["wall_time_s"] = float(sum(float(c["wall_time_s"]) for c in chunks))
    out["reused"], out["generated"] = reused, len(chunks) - reused
    if not math.isfinite(out["wall_time_s"]):
        out["wall_time_s"] = math.nan
    return out
