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

Speed: Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``). Any explicit value turns off glibc's adaptive mmap
threshold, so every tensor above 128 kB is a fresh ``mmap``, zero-filled page by page and unmapped
when freed: the digits UNet drew 2-2.3x slower in a worker (6-7x the page faults, 4-5x the system time;
docs/scale.md). The local cluster's workers start without it; workers the user runs are checked and
a warning says how to start them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..errors import WorkflowError

__all__ = ["ChunkTask", "ExecutorSpec", "local_cluster", "parse_executor", "run_tasks", "worker_malloc_trim"]

_LOCAL = re.compile(r"^local(?::(?P<n>\d+))?$")
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|inproc|ucx)://)?[\w.\-\[\]:]+:\d+$")
_TRIM = "MALLOC_TRIM_THRESHOLD_"  # set by Dask's nanny; slows torch on the workers (module docstring)


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


@contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A Dask ``LocalCluster`` of ``workers`` processes of one thread each, whose workers start without
    ``MALLOC_TRIM_THRESHOLD_`` (module docstring), also when an earlier nanny of this process left it in
    the environment; the environment is restored when the cluster closes."""
    import dask
    from distributed import LocalCluster

    inherited = os.environ.pop(_TRIM, None)  # kept out while the cluster lives: a dead worker is respawned
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{_TRIM}": None}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        with cluster:
            yield cluster
    finally:
        if inherited is not None:
            os.environ[_TRIM] = inherited


def worker_malloc_trim(client: Any) -> dict[str, str | None]:
    """Every worker of a Dask ``client`` with its ``MALLOC_TRIM_THRESHOLD_`` (None: unset)."""
    return client.run(functools.partial(os.getenv, _TRIM))


def _warn_slow_workers(client: Any, address: str) -> None:
    found = worker_malloc_trim(client)
    slow = [v for v in found.values() if v is not None]
    if slow:
        warnings.warn(f"executor {address}: {len(slow)} of {len(found)} worker(s) run with {_TRIM}={slow[0]} (Dask's "
                      "nanny sets it), which makes torch draw about 2x slower there; start them with `dask worker "
                      f"--no-nanny` or with distributed.nanny.pre-spawn-environ.{_TRIM}: null in their Dask config "
                      "(docs/scale.md). The samples do not change.", stacklevel=3)


def run_tasks(spec: ExecutorSpec, tasks: Sequence[ChunkTask], compute: Callable[[ChunkTask, Any, int | None], float],
              payloads: dict[str, Any], on_done: Callable[[ChunkTask], None]) -> dict[str, float]:
    """Run ``compute(task, payloads[task.method], spec.threads)`` for every task; ``on_done`` after each.

    ``compute`` writes its chunk itself. On Dask each method's payload is sent to the workers
    once; a task whose worker dies is recomputed elsewhere (Dask's ``allowed-failures``), an
    exception inside ``compute`` is raised here after the other tasks are cancelled.

    Returns:
        ``start_s`` / ``stop_s``: seconds to start the local cluster (or reach the scheduler) and to
        close it; 0 on the serial path.

    Raises:
        WorkflowError: the distributed extra is missing or the scheduler cannot be reached.
    """
    if spec.kind == "serial" or not tasks:
        for task in tasks:
            compute(task, payloads[task.method], spec.threads)
            on_done(task)
        return {"start_s": 0.0, "stop_s": 0.0}
    t0 = time.perf_counter()
    with ExitStack() as stack:
        client = _client(spec, stack)
        start = time.perf_counter() - t0
        if spec.kind == "address":
            _warn_slow_workers(client, spec.address or "")
        _submit(client, spec, tasks, compute, payloads, on_done)
        t1 = time.perf_counter()
    return {"start_s": start, "stop_s": time.perf_counter() - t1}


def _client(spec: ExecutorSpec, stack: ExitStack) -> Any:
    """A Dask client of a new local cluster or of the scheduler at ``spec.address``, closed with ``stack``."""
    try:
        from distributed import Client
    except ImportError as e:
        raise WorkflowError(f"executor {spec.kind} needs the distributed extra: pip install 'molfuse[distributed]' "
                            f"({e})") from None
    try:
        if spec.kind == "local":
            return stack.enter_context(Client(stack.enter_context(local_cluster(spec.workers))))
        return stack.enter_context(Client(spec.address, timeout=f"{spec.connect_timeout}s"))
    except (OSError, TimeoutError) as e:
        raise WorkflowError(f"executor: cannot reach the Dask scheduler {spec.address or 'local'} ({e})") from None


_SEND_ROUNDS = 3  # times the payloads are sent before a run gives up on a cluster that keeps losing them


def _submit(client: Any, spec: ExecutorSpec, tasks: Sequence[ChunkTask], compute: Callable, payloads: dict[str, Any],
            on_done: Callable[[ChunkTask], None]) -> None:
    """Each method's payload scattered to every worker once, then one task per chunk; ``on_done`` as each ends.

    A worker that dies holding the only copy of a payload (a worker that joined after the scatter has
    none) takes it with it: Dask cancels the chunks that needed it. Those chunks are sent again with a
    fresh copy of the payload, up to ``_SEND_ROUNDS`` times; a chunk that ended is never sent again.

    Raises:
        WorkflowError: the payloads were lost ``_SEND_ROUNDS`` times.
    """
    from concurrent.futures import CancelledError

    from distributed import as_completed

    if spec.kind == "local":  # a scatter before every worker has joined leaves the late ones without a copy
        try:
            client.wait_for_workers(spec.workers, timeout=max(spec.connect_timeout, 60.0))
        except TimeoutError as e:  # distributed's WorkerStartTimeoutError is one
            raise WorkflowError(f"executor local:{spec.workers}: the workers did not start ({e})") from None
    pending = list(tasks)
    for _ in range(_SEND_ROUNDS):
        sent = {m: client.scatter(payloads[m], broadcast=True, hash=False) for m in {t.method for t in pending}}
        futures = {client.submit(compute, t, sent[t.method], spec.threads, pure=False,
                                 key=f"molfuse-chunk-{t.method}-{t.index}-{t.seed}-{time.time_ns()}"): t for t in pending}
        lost = []
        for fut in as_completed(futures):
            try:
                fut.result()
            except CancelledError:  # its payload went with a dead worker (we cancel only after raising)
                lost.append(futures[fut])
                continue
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
            on_done(futures[fut])
        if not lost:
            return
        pending = sorted(lost, key=lambda t: (t.method, t.index))
        warnings.warn(f"executor: {len(pending)} chunk(s) lost their payload with a dead worker; sending them again",
                      stacklevel=3)
    raise WorkflowError(f"executor: the workers lost the run's payload {_SEND_ROUNDS} times (workers dying as they "
                        f"start?); {len(pending)} chunk(s) not computed: "
                        + ", ".join(f"{t.method}#{t.index}" for t in pending[:8]))
