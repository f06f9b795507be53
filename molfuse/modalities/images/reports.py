"""The image modality's cross-method report ``class_share``: the summed share of chosen classes
per method (e.g. after unlearning a shard, the removed classes' share must drop)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...base.checks import REQUIRED, as_int, fail
from ...base.io import atomic_write
from ...base.tables import markdown_table
from ...plugins import Report

__all__ = ["CLASS_SHARE"]


def _check(o: dict, path: str) -> dict:
    c = o["classes"]
    if not isinstance(c, list) or not c:
        fail(f"{path}.classes", f"expected a non-empty list of classes, got {c!r}")
    o["classes"] = [as_int(int(x) if isinstance(x, str) and x.isdigit() else x, f"{path}.classes", 0) for x in c]
    return o


def _write(folder: Path, name: str, metrics: pd.DataFrame, o: dict) -> tuple[str, list[str]]:
    cols = [f"frac_class_{k}" for k in o["classes"] if f"frac_class_{k}" in metrics]
    col = "share_" + "".join(map(str, o["classes"]))
    table = pd.DataFrame({"method": metrics["method"], col: metrics[cols].sum(axis=1, min_count=1)})
    atomic_write(Path(folder) / f"{col}.csv", lambda fh: table.to_csv(fh, index=False, float_format="%.6g"), text=True)
    title = f"## Share of samples classified as {', '.join(map(str, o['classes']))}"
    return "\n".join([title, "", markdown_table(table), ""]), []


CLASS_SHARE = Report(_write, {"classes": REQUIRED}, _check)
