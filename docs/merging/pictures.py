"""The docs/merging/README.md pictures from finished runs: side-by-side sample grids with titles.

    .venv/bin/python docs/merging/pictures.py results/dmm_fidelity_digits/seed0 results/dmm_mixing_digits/seed0

Reads each method's ``samples/<method>.png`` (written by the image writer) and writes
docs/merging/{forgetting_samples,mixing_samples}.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parent
PANELS = {
    "forgetting_samples.png": (0, ["teacher_0123", "student_0123", "add789_reg_0123", "add789_noreg_0123"],
                               ["teacher 0123", "student, style 0123", "after adding 789,\nregularised",
                                "after adding 789,\nno regulariser"]),
    "mixing_samples.png": (1, ["student_mixed_w", "superdiff_or", "barycenter_w", "soup"],
                           ["student, ẽ = 0.4 e₀₁₂₃ + 0.3 e₄₅₆ + 0.3 e₇₈₉", "SuperDiff OR (ω = w)",
                            "barycenter (score average, w)", "weight soup"]),
}


def main(folders: list[str]) -> None:
    for name, (which, methods, titles) in PANELS.items():
        folder = Path(folders[which])
        fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.6))
        for ax, m, title in zip(axes, methods, titles):
            ax.imshow(mpimg.imread(folder / "samples" / f"{m}.png"), cmap="gray")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(OUT / name, dpi=90)
        plt.close(fig)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main(sys.argv[1:])
