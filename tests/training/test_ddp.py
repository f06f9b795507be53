"""Training on two CPU processes (Lightning DDP, gloo): the ranks end with identical weights, and
the run follows the single-process one on the same global batches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("lightning")
pytest.importorskip("safetensors")

from molfuse.errors import WorkflowError  # noqa: E402
from molfuse.training import TrainConfig, load_model  # noqa: E402

WF = {
    "name": "ddp_tiny", "seed": 4,
    "architecture": {"name": "mlp", "config": {"dim": 2, "hidden": 32, "depth": 1, "time_dim": 16, "num_classes": 2}},
    "data": {"kind": "gaussian_mixture_samples", "means": [[-2, 0], [2, 0]], "covs": [0.3, 0.3], "n": 256,
             "labels": True},
    "train": {"steps": 40, "batch_size": 64, "lr": "2e-3", "ema_decay": 0.9, "cond_drop_prob": 0.2,
              "log_every": 5, "checkpoint_every": 20, "threads": 1, "device": "cpu"},
}


def _train(tmp: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    path = tmp / "wf.yaml"
    path.write_text(yaml.safe_dump(WF))
    exe = shutil.which("molfuse", path=str(Path(sys.executable).parent)) or "molfuse"
    return subprocess.run([exe, "train", str(path), "--out", str(tmp / out), *extra], capture_output=True, text=True,
                          timeout=600, cwd=tmp)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    one, two = _train(tmp, "one"), _train(tmp, "two", "--devices", "2")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp / "one" / "ddp_tiny", tmp / "two" / "ddp_tiny", two


def test_two_processes_agree_and_the_card_says_so(runs):
    _, two, proc = runs
    card = json.loads((two / "checkpoint" / "card.json").read_text())
    assert card["session"]["world_size"] == 2 and card["session"]["ranks_identical"] is True
    assert card["training"]["devices"] == 2 and card["training"]["batch_size"] == 64
    assert "2 processes (DDP), 32 of each global batch of 64 per process" in proc.stdout
    assert proc.stdout.count("trained 40 steps") == 1  # rank 1 trains silently; rank 0 reports


def test_the_loss_curve_and_weights_follow_the_single_process_run(runs):
    one, two, _ = runs
    a, b = (pd.read_csv(f / "training_log.csv").dropna(subset=["train_loss"]) for f in (one, two))
    assert list(a["step"]) == list(b["step"]) and len(a) >= 8
    rel = ((a["train_loss"].to_numpy() - b["train_loss"].to_numpy()) / a["train_loss"].to_numpy())
    assert abs(rel).max() < 1e-4, rel
    wa, wb = (load_model(f / "checkpoint").state_dict() for f in (one, two))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_the_global_batch_must_split_evenly():
    with pytest.raises(WorkflowError, match="train.batch_size: 64 does not split into 3"):
        TrainConfig.from_dict({"batch_size": 64, "devices": 3})
    assert TrainConfig.from_dict({"batch_size": 64, "devices": 2, "num_nodes": 2}).world_size == 4
    assert torch.get_num_threads() >= 1
