"""Chunks on Dask: the serial, local-cluster and scheduler-address paths give the same results; a
worker killed mid-chunk loses nothing and leaves nothing half-written."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molfuse import WorkflowError
from molfuse.base.io import atomic_write, remove_stale_temporaries
from molfuse.campaign import run_workflow
from molfuse.campaign.executors import ChunkTask, ExecutorSpec, local_cluster, parse_executor, run_tasks

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests

sys.path.insert(0, str(Path(__file__).parent))
from test_campaign import tiny  # noqa: E402


def test_parse_executor():
    assert parse_executor(None) == ExecutorSpec() and parse_executor("serial").kind == "serial"
    assert parse_executor("local") == ExecutorSpec("local", workers=2)
    assert parse_executor("local:3", threads=2) == ExecutorSpec("local", workers=3, threads=2)
    assert parse_executor("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_executor("node17:8786").address == "tcp://node17:8786"
    for bad in ("local:0", "mpi", "local:x", "http://x"):
        with pytest.raises(WorkflowError, match="executor"):
            parse_executor(bad)


def _same_results(a: Path, b: Path) -> None:
    """Samples and per-sample tables byte for byte; metrics but for the timing column."""
    names = sorted(p.name for p in (a / "samples").glob("*.npy"))
    assert names and names == sorted(p.name for p in (b / "samples").glob("*.npy"))
    for n in names:
        assert (a / "samples" / n).read_bytes() == (b / "samples" / n).read_bytes(), n
    assert (a / "per_sample.csv").read_bytes() == (b / "per_sample.csv").read_bytes()
    ma, mb = (pd.read_csv(f / "metrics.csv").drop(columns="wall_time_s") for f in (a, b))
    pd.testing.assert_frame_equal(ma, mb)
    for chunk in (a / "samples" / "chunks").rglob("*.npz"):
        other = b / chunk.relative_to(a)
        with np.load(chunk) as za, np.load(other) as zb:
            assert set(za.files) == set(zb.files)
            for k in za.files:
                if k != "wall_time_s":
                    np.testing.assert_array_equal(za[k], zb[k])


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serial")
    return run_workflow(tiny(tmp), progress=False, verbose=False)


def test_local_cluster_gives_the_serial_results(serial_run, tmp_path):
    res = run_workflow(tiny(tmp_path), progress=False, verbose=False, executor="local:2")
    _same_results(serial_run.folder, res.folder)
    assert not list(res.folder.rglob("*.tmp"))


def test_a_scheduler_address_gives_the_serial_results(serial_run, tmp_path):
    """Workers started by Dask's nanny as a user would: same samples, and a warning that they run slow."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  processes=True) as cluster:
        with pytest.warns(UserWarning, match=r"2 of 2 worker\(s\) run with MALLOC_TRIM_THRESHOLD_=65536.*--no-nanny"):
            res = run_workflow(tiny(tmp_path), progress=False, verbose=False, executor=cluster.scheduler_address)
    _same_results(serial_run.folder, res.folder)


def test_a_run_resumed_on_a_cluster_reuses_the_serial_chunks(serial_run, tmp_path):
    wf = tiny(tmp_path)
    first = run_workflow(wf, progress=False, verbose=False)
    gone = first.folder / "samples" / "chunks" / "or" / "chunk_00001.npz"
    gone.unlink()
    res = run_workflow(wf, progress=False, verbose=False, executor="local:2")
    assert res.provenance["chunks"] == {"reused": 11, "generated": 1}
    _same_results(serial_run.folder, res.folder)


def _dying_write(task: ChunkTask, marker_dir: str, threads) -> float:
    """Writes ``task.path``; the first attempt at chunk 1 dies half-way through writing it."""
    marker = Path(marker_dir) / f"attempt_{task.index}"
    first = not marker.exists()
    marker.touch()
    with open(Path(marker_dir) / "log", "a") as fh:
        fh.write(f"{task.index} {os.getpid()}\n")

    def write(fh):
        fh.write(b"x" * 1000)
        if first and task.index == 1:
            fh.flush()
            os._exit(1)  # the worker process dies with a half-written temporary file
        fh.write(np.full(10, task.seed, dtype=np.int64).tobytes())

    atomic_write(task.path, write)
    return 0.0


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(tmp_path):
    out, marks = tmp_path / "chunks", tmp_path / "marks"
    marks.mkdir()
    tasks = [ChunkTask("m", i, 10, 100 + i, str(out / f"chunk_{i}.bin")) for i in range(4)]
    done = []
    run_tasks(ExecutorSpec("local", workers=2), tasks, _dying_write, {"m": str(marks)}, done.append)
    assert sorted(t.index for t in done) == [0, 1, 2, 3]  # each chunk reported once
    log = [line.split() for line in (marks / "log").read_text().splitlines()]
    pids = [pid for i, pid in log if i == "1"]
    assert len(pids) == 2 and pids[0] != pids[1]  # chunk 1 ran twice: the first worker died
    for t in tasks:
        data = Path(t.path).read_bytes()
        assert len(data) == 1080 and np.frombuffer(data[1000:], dtype=np.int64).tolist() == [t.seed] * 10
    stale = remove_stale_temporaries(out)
    assert len(stale) == 1 and not list(out.glob(".*.tmp"))  # the dead writer's temporary, now gone
    assert sorted(p.name for p in out.iterdir()) == [f"chunk_{i}.bin" for i in range(4)]


def test_a_lone_worker_that_dies_with_the_payload_gets_it_again(tmp_path):
    """One worker holds the only copy of the payload; it dies in chunk 1, and Dask cancels the chunks
    that needed the payload. They are sent again with a fresh copy: every chunk ends, each reported once."""
    out, marks = tmp_path / "chunks", tmp_path / "marks"
    marks.mkdir()
    tasks = [ChunkTask("m", i, 10, 100 + i, str(out / f"chunk_{i}.bin")) for i in range(3)]
    done = []
    with pytest.warns(UserWarning, match="lost their payload with a dead worker; sending them again"):
        run_tasks(ExecutorSpec("local", workers=1), tasks, _dying_write, {"m": str(marks)}, done.append)
    assert sorted(t.index for t in done) == [0, 1, 2]
    log = [line.split() for line in (marks / "log").read_text().splitlines()]
    assert len({pid for i, pid in log if i == "1"}) == 2  # chunk 1 ran in the first worker and its successor
    for t in tasks:
        data = Path(t.path).read_bytes()
        assert len(data) == 1080 and np.frombuffer(data[1000:], dtype=np.int64).tolist() == [t.seed] * 10


def test_an_error_inside_a_chunk_is_raised():
    def boom(task, payload, threads):
        raise ValueError(f"bad chunk {task.index}")

    with pytest.raises(ValueError, match="bad chunk"):
        run_tasks(ExecutorSpec("local", workers=1), [ChunkTask("m", 0, 1, 0, "/nonexistent")], boom, {"m": None},
                  lambda t: None)


def test_an_unreachable_scheduler_is_named(tmp_path):
    with pytest.raises(WorkflowError, match="cannot reach the Dask scheduler tcp://127.0.0.1:9"):
        run_tasks(ExecutorSpec("address", address="tcp://127.0.0.1:9", connect_timeout=2), [ChunkTask("m", 0, 1, 0, "x")],
                  lambda *a: 0.0, {"m": None}, lambda t: None)


def _record_worker_env(task: ChunkTask, payload, threads) -> float:
    """Writes the worker's MALLOC_TRIM_THRESHOLD_ (or 'unset') to ``task.path``."""
    Path(task.path).write_text(os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"))
    return 0.0


@pytest.mark.parametrize("inherited", [False, True])
def test_local_workers_keep_the_adaptive_malloc_threshold(tmp_path, monkeypatch, inherited):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive
    mmap threshold: torch then maps and faults in every activation afresh (the digits UNet drew 2.3x
    slower in a worker). The local cluster's workers start without it, also when an earlier nanny
    of this process left it in the environment."""
    if inherited:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    else:  # an earlier test's nanny may have left it in this process
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    tasks = [ChunkTask("m", i, 1, i, str(tmp_path / f"env_{i}")) for i in range(2)]
    run_tasks(ExecutorSpec("local", workers=2), tasks, _record_worker_env, {"m": None}, lambda t: None)
    assert [Path(t.path).read_text() for t in tasks] == ["unset", "unset"]
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == ("65536" if inherited else None)  # this process as it was


def test_workers_without_the_trim_setting_are_not_warned_about(tmp_path):
    with local_cluster(1) as cluster, warnings.catch_warnings():
        warnings.simplefilter("error")
        task = ChunkTask("m", 0, 1, 0, str(tmp_path / "env"))
        run_tasks(ExecutorSpec("address", address=cluster.scheduler_address), [task], _record_worker_env, {"m": None},
                  lambda t: None)
    assert Path(task.path).read_text() == "unset"
