"""Score-level fidelity of the image style students to each teacher, before and after a teacher is
added (issue 12, incremental merging): ``molfuse.fusion.style_errors`` on held-out real test digits.

    .venv/bin/python docs/merging/forgetting.py     # writes docs/merging/forgetting.{csv,png}

For each student and style i: E σ_t² ‖s_student(x_t, t, i) − s_teacher_i(x_t, t)‖² per pixel over
the 1,000 test digits, 4 (t, ε) draws each, the same draws for every student and style (seed 0).
Reference rows: the teachers' common parent and each other teacher measured against teacher i,
i.e. what "not reproducing teacher i" costs on the same scale.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from molfuse.fusion import style_errors
from molfuse.modalities.images import load_mnist, to_model
from molfuse.schedules import VPSchedule
from molfuse.training.checkpoints import load_model

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
TEACHERS = {"0123": "shard_0123", "456": "shard_456", "789": "shard_789"}
STUDENTS = ["dmm_shards", "dmm_shards_2", "dmm_add789_reg", "dmm_add789_noreg"]


class _AsStyled(torch.nn.Module):
    """A plain net answering any style (to score the parent and the other teachers on the same scale)."""

    def __init__(self, net, n):
        super().__init__()
        self.net, self.num_styles, self.prediction, self.schedule = net, n, net.prediction, net.schedule

    def forward(self, x, t, cond=None, mask=None):
        return self.net(x, t)


def main() -> None:
    torch.set_num_threads(1)
    images, _ = load_mnist("test")
    norm = load_model(ROOT / "models/images/digits_all").normalisation
    x0 = to_model(images, norm)  # (1000, 1, 28, 28)
    sched = VPSchedule()
    teachers = {k: load_model(ROOT / "models/images" / v) for k, v in TEACHERS.items()}
    rows = []
    for name in STUDENTS:
        net = load_model(ROOT / "models/images" / name)
        targets = {i: teachers[s] for i, s in enumerate(net.card["styles"])}
        for i, err in style_errors(net, targets, x0, sched, n_t=4, seed=0).items():
            rows.append({"model": name, "style": net.card["styles"][i], "error": err})
        print(name, "done", flush=True)
    for other in ["digits_all", *TEACHERS.values()]:
        net = _AsStyled(load_model(ROOT / "models/images" / other), 3)
        targets = {i: teachers[s] for i, s in enumerate(TEACHERS) if TEACHERS[s] != other}
        for i, err in style_errors(net, targets, x0, sched, n_t=4, seed=0).items():
            rows.append({"model": other, "style": list(TEACHERS)[i], "error": err})
    table = pd.DataFrame(rows).pivot(index="model", columns="style", values="error")
    table = table.reindex(STUDENTS + ["digits_all", *TEACHERS.values()])
    table.to_csv(OUT / "forgetting.csv", float_format="%.6g")
    print(table.to_string(float_format=lambda v: f"{v:.2e}"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    table.plot.bar(ax=ax, logy=True)
    ax.set(ylabel="σ² ‖s_model − s_teacher‖² per pixel", title="score error to each teacher (held-out digits)")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(OUT / "forgetting.png", dpi=110)


if __name__ == "__main__":
    main()
