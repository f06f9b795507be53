"""The molfuse command: help, doctor, run, demo (click CliRunner, in-process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from molfuse import cli

TINY = {
    "name": "clitiny", "seed": 1,
    "models": {"a": {"kind": "gaussian_mixture", "means": [[-1.0, 0.0]], "covs": [0.5]},
               "b": {"kind": "gaussian_mixture", "means": [[1.0, 0.0]], "covs": [0.5]}},
    "n_samples": 16, "sampler": {"steps": 10, "chunk_size": 8, "threads": 1},
    "methods": [{"name": "a", "operator": "single", "models": ["a"]},
                {"name": "or", "operator": "superpose", "models": ["a", "b"]}],
}


def test_help():
    res = CliRunner().invoke(cli.main, ["--help"])
    assert res.exit_code == 0
    for command in ("run", "demo", "doctor"):
        assert command in res.output


def test_doctor():
    res = CliRunner().invoke(cli.main, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "torch" in res.output and "nats" in res.output and "ok" in res.output
    assert "modality images" in res.output and "modality vectors" in res.output and "extra   train" in res.output
    assert "workflow demo.yaml" in res.output and "shipped workflows can run here" in res.output


def test_run_tiny_workflow(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(cli.main, ["run", str(path), "--out", str(tmp_path / "out"), "--name", "r",
                                        "--device", "cpu"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "out" / "clitiny" / "r"
    assert (folder / "metrics.csv").is_file() and (folder / "summary.md").is_file()
    assert "device cpu" in res.output and str(folder) in res.output


def test_run_seed_override_makes_a_replicate(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    for name, extra in (("s1", []), ("s7", ["--seed", "7"]), ("s7b", ["--seed", "7"])):
        res = CliRunner().invoke(cli.main, ["run", str(path), "--out", str(out), "--name", name, *extra])
        assert res.exit_code == 0, res.output
    x = {n: np.load(out / "clitiny" / n / "samples" / "or.npy") for n in ("s1", "s7", "s7b")}
    assert yaml.safe_load((out / "clitiny" / "s7" / "config.yaml").read_text())["seed"] == 7
    assert np.array_equal(x["s7"], x["s7b"]) and not np.allclose(x["s1"], x["s7"])
    bad = CliRunner().invoke(cli.main, ["run", str(path), "--out", str(out), "--seed", "-1"])
    assert bad.exit_code != 0 and "--seed" in bad.output


def test_run_reports_workflow_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "methods": [{"name": "x", "operator": "single", "models": ["c"]}]}))
    res = CliRunner().invoke(cli.main, ["run", str(path), "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert "methods[0].models: unknown model 'c'; known: a, b" in res.output


def test_demo_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "demo_path", lambda: tmp_path / "nowhere" / "demo.yaml")
    res = CliRunner().invoke(cli.main, ["demo", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "demo workflow not found" in res.output


def test_demo_workflow_ships_and_validates():
    from molfuse.campaign import load_workflow

    path = cli.demo_path()
    assert path.is_file() and path.parent.name == "workflows"
    wf = load_workflow(path, run_name="check")
    assert {m.operator for m in wf.methods} == {"single", "superpose", "barycenter", "ensemble", "random_choice"}
    assert Path(wf.output).name == "results"


def test_python_dash_m_molfuse_runs_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "molfuse", "--help"], capture_output=True, text=True, timeout=120,
                         cwd=Path(cli.__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("Usage: molfuse ") and "doctor" in out.stdout


def test_no_bare_aborted_for_an_empty_input_file(tmp_path):
    """`molfuse train` on an empty npz (np.load raises EOFError) printed click's bare `Aborted!`."""
    (tmp_path / "empty.npz").write_bytes(b"")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "output": str(tmp_path / "out"),
        "architecture": {"name": "protein_se3", "config": {"scalars": 8, "vectors": 4, "layers": 1}},
        "data": {"kind": "protein_backbones", "source": str(tmp_path / "empty.npz"), "length": 64},
        "train": {"steps": 2, "batch_size": 4}}))
    res = CliRunner().invoke(cli.main, ["train", str(path)])
    assert res.exit_code == 1 and "Aborted!" not in res.output and "Traceback" not in res.output, res.output
    assert "empty.npz" in res.output or "a file ended before its content did" in res.output, res.output


def test_the_command_turns_interrupts_and_file_errors_into_messages():
    import click

    @click.command("boom")
    @click.argument("what")
    def boom(what: str) -> None:
        raise {"eof": EOFError("No data left in file"), "ctrl-c": KeyboardInterrupt(),
               "os": IsADirectoryError(21, "Is a directory", "/x/metrics.csv")}[what]

    cli.main.add_command(boom)
    try:
        said = {w: CliRunner().invoke(cli.main, ["boom", w]) for w in ("eof", "ctrl-c", "os")}
    finally:
        cli.main.commands.pop("boom")
    for res in said.values():
        assert "Aborted!" not in res.output and "Traceback" not in res.output, res.output
    assert said["eof"].exit_code == 1 and "EOFError: No data left in file" in said["eof"].output
    assert said["ctrl-c"].exit_code == 130 and "interrupted (Ctrl-C)" in said["ctrl-c"].output
    assert said["os"].exit_code == 1 and "/x/metrics.csv: Is a directory (IsADirectoryError)" in said["os"].output
