"""The OR experiment's picture: the first 25 samples of each method, side by side.

  python docs/images/or_grid.py results/superdiff_or_digits/issue13_seed0 --out docs/images/or_digits.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from molfuse.modalities.images import make_grid

METHODS = ["model_lo", "model_hi", "or_t1", "averaging", "model_all"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    panels = [make_grid(np.load(a.run / "samples" / f"{m}.npy")[:25], nrow=5) for m in a.methods.split(",")]
    gap = np.full((panels[0].shape[0], 12), 255, dtype=np.uint8)
    row = np.concatenate([x for pair in zip(panels, [gap] * len(panels)) for x in pair][:-1], axis=1)
    img = Image.fromarray(row).resize((row.shape[1] * 2, row.shape[0] * 2), Image.NEAREST)
    img.save(a.out)
    print(f"wrote {a.out}: {', '.join(a.methods.split(','))}")


if __name__ == "__main__":
    main()
