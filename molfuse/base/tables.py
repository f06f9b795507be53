"""Tables for people: markdown rendering and column order."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["markdown_table", "ordered_columns"]


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-markdown table of ``df`` (floats to ``digits`` significant figures, NaN blank)."""

    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def ordered_columns(df: pd.DataFrame, order: Sequence[str], groups: Sequence[str] = ()) -> pd.DataFrame:
    """``df`` with the columns of ``order`` first; a key ending in ``_`` stands for the group
    ``key + g`` for each ``g`` of ``groups`` (e.g. one column per member, in workflow order)."""
    cols: list[str] = []
    for key in order:
        group = [key + g for g in groups] if key.endswith("_") else [key]
        cols += [c for c in group if c in df and c not in cols]
    return df[cols + [c for c in df if c not in cols]]
