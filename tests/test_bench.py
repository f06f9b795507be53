"""Smoke test of bench/fusion_overhead.py: a --quick run prints every required metric."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

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


def test_molecule_bench_quick_run_prints_its_metrics():
    import pytest

    pytest.importorskip("e3nn")
    script = Path(__file__).resolve().parents[1] / "bench" / "molecules.py"
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split(": ") for line in proc.stdout.splitlines() if line and not line.startswith("#"))
    for name in ("sample_molecules_per_s", "superposition_overhead_k2", "superposition_and_overhead_k2",
                 "ito_vs_hutchinson_cost"):
        assert math.isfinite(float(values[name])) and float(values[name]) > 0, name
