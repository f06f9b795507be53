"""Molecule members against training time: validity and one-fragment share per minute of one core.

Each row is one evaluated checkpoint: a label (the member), its step, the minutes of one CPU core
its training had taken at that step, and the results folder of a ``molfuse run`` that sampled it
(its ``metrics.csv``, one method). Writes a CSV and a two-panel PNG, one line per member.

How the README's rows were made (issue 25): each training ran on one thread of a 2-core machine
shared with another training; the EMA weights of its resumable ``last.ckpt`` at a step were
exported beside the finished run's card and sampled with ``unconditional_qm9*.yaml``'s settings
(250 reverse-SDE steps, seed 0). Minutes are steps divided by the steps per second the run's own
log measured.

usage:
  python bench/members_by_training_time.py --out docs/molecules/members_by_time \\
      --row "graph,16000,13.4,results/.../g16000" --row "point cloud,16000,29.4,results/.../p16000" ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

COLUMNS = ["validity", "connected", "valid_and_unique", "novelty", "geometry_agrees"]


def read_row(spec: str) -> dict:
    """``label,steps,minutes,folder`` -> one row with the folder's metrics."""
    try:
        label, steps, minutes, folder = [s.strip() for s in spec.split(",", 3)]
        steps_i, minutes_f = int(steps), float(minutes)
    except ValueError:
        raise SystemExit(f"--row must be 'label,steps,minutes,folder'; got {spec!r}") from None
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"--row {spec!r}: {path} does not exist (a `molfuse run` results folder is expected)")
    m = pd.read_csv(path)
    if len(m) != 1:
        raise SystemExit(f"{path} has {len(m)} methods; one is expected")
    row = {"member": label, "steps": steps_i, "minutes": minutes_f, "n": int(m["n"].iloc[0])}
    row.update({c: float(m[c].iloc[0]) if c in m else float("nan") for c in COLUMNS})
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", action="append", required=True, help="label,steps,minutes,results folder")
    p.add_argument("--out", required=True, help="output stem: writes <out>.csv and <out>.png")
    a = p.parse_args(argv)
    table = pd.DataFrame([read_row(r) for r in a.row]).sort_values(["member", "minutes"])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.4g")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, col, title in zip(axes, ["validity", "connected"], ["valid (RDKit sanitises)", "one fragment"]):
        for member, g in table.groupby("member", sort=False):
            ax.plot(g["minutes"], g[col], marker="o", label=member)
        ax.axhline(0.9, color="grey", lw=0.8, ls="--")
        ax.set(title=title, xlabel="training minutes (one CPU core)", ylim=(0, 1))
    axes[0].set_ylabel("share of samples")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(table.to_string(index=False))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
