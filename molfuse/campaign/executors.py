"""Where a run's chunks are computed: in this process (the default), on a local Dask cluster of
N worker processes, or on a Dask scheduler the user runs (a SLURM / PBS / LSF cluster through
dask-jobqueue, or ``dask scheduler`` + ``dask worker`` by hand).

Every chunk keeps the seed derived from (seed, method, chunk), so which process computes it
does not change its samples: the results are those of the serial run. Workers write their
chunks into the run folder themselves, atomically (a shared file system is assumed for a
scheduler address); the run's folder lock stays with the process that runs the workflow. A
worker that dies mid-chunk leaves at most a temporary file, never a chunk: Dask hands the chunk
to another worker, and the temporaries of dead writers are removed after the chunks are done.

The executor is an option of the run (``molfuse run --executor local:2``), not of the workflow:
it does not change a result, so a run started serially may be resumed on a cluster.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import WorkflowError

__all__ = ["ChunkTask", "ExecutorSpec", "parse_executor", "run_tasks"]

_LOCAL = re.compile(r"^local(?::(?P<n>\d+))?$")
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|inproc|ucx)://)?[\w.\-\[\]:]+:\d+$")


@dataclass(frozen=True)
class ExecutorSpec:
    """``kind`` serial | local | address; ``workers`` for local; ``address`` of a scheduler;
    ``threads`` torch threads per chunk on a worker (1: workers sharing cores thrash at torch's
    default); ``connect_timeout`` seconds to reach a scheduler."""

    kind: str = "serial"
    workers: int = 1
    address: str | None = None
    threads: int | None = 1
    connect_timeout: float = 30.0

    def describe(self) -> str:
        if self.kind == "serial":
            return "serial (this process)"
        where = f"{self.workers} local worker process(es)" if self.kind == "local" else f"scheduler {self.address}"
        per = f"{self.threads} torch thread(s)" if self.threads else "torch's default threads"
        return f"dask, {where}, {per} per chunk"


@dataclass(frozen=True)
class ChunkTask:
    """One chunk to compute: the method, its index, size and derived seed, the file it goes to and
    the run's config hash (recorded in the chunk)."""

    method: str
    index: int
    size: int
    seed: int
    path: str
    config_hash: str = ""


def parse_executor(text: str | None, threads: int | None = 1) -> ExecutorSpec:
    """``serial`` (or None), ``local`` / ``local:N`` (N worker processes on this machine, default 2)
    or a scheduler address (``tcp://host:8786``, ``host:8786``).

    Raises:
        WorkflowError: anything else, or local:0.
    """
    if text is None or text.strip() in ("", "serial"):
        return ExecutorSpec(threads=threads)
    t = text.strip()
    m = _LOCAL.match(t)
    if m:
        n = int(m["n"]) if m["n"] else 2
        if n < 1:
            raise WorkflowError(f"executor {t!r}: a local cluster needs at least 1 worker")
        return ExecutorSpec("local", workers=n, threads=threads)
    if _ADDRESS.match(t):
        return ExecutorSpec("address", address=t if "://" in t else f"tcp://{t}", threads=threads)
    raise WorkflowError(f"executor {t!r}: expected serial, local, local:N or a Dask scheduler address "
                        "such as tcp://host:8786")


def run_tasks(spec: ExecutorSpec, tasks: Sequence[ChunkTask], compute: Callable[[ChunkTask, Any, int | None], float],
              payloads: dict[str, Any], on_done: Callable[[ChunkTask], None]) -> None:
    """Run ``compute(task, payloads[task.method], spec.threads)`` for every task; ``on_done`` after each.

    ``compute`` writes its chunk itself. On Dask each method's payload is sent to the workers
    once; a task whose worker dies is recomputed elsewhere (Dask's ``allowed-failures``), an
    exception inside ``compute`` is raised here after the other tasks are cancelled.

    Raises:
        WorkflowError: the distributed extra is missing or the scheduler cannot be reached.
    """
    if spec.kind == "serial":
        for task in tasks:
            compute(task, payloads[task.method], spec.threads)
            on_done(task)
        return
    if not tasks:
        return
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise WorkflowError(f"executor {spec.kind} needs the distributed extra: pip install 'molfuse[distributed]' "
                            f"({e})") from None
    cluster = None
    try:
        if spec.kind == "local":
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(spec.address, timeout=f"{spec.connect_timeout}s")
    except (OSError, TimeoutError) as e:
        if cluster is not None:
            cluster.close()
        raise WorkflowError(f"executor: cannot reach the Dask scheduler {spec.address or 'local'} ({e})") from None
    try:
        sent = {m: client.scatter(payloads[m], broadcast=True, hash=False) for m in {t.method for t in tasks}}
        futures = {client.submit(compute, t, sent[t.method], spec.threads, pure=False,
                                 key=f"molfuse-chunk-{t.method}-{t.index}-{t.seed}-{time.time_ns()}"): t for t in tasks}
        for fut in as_completed(futures):
            try:
                fut.result()
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
            on_done(futures[fut])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
