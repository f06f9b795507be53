"""What a results folder records about where its numbers came from: version, git, machine, time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["VERSION", "REPO_ROOT", "now", "git_state", "machine", "config_diff"]

VERSION = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parents[2]  # a source checkout's root (relative model paths start here)


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_state(root: str | Path = REPO_ROOT) -> dict:
    """``{commit, dirty}`` of the checkout at ``root`` (``{commit: None}`` outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode:
            return {"commit": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def machine(dev: torch.device) -> dict:
    """Python, platform, torch / numpy versions, cores, torch threads and the device used."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": np.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(dev), "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}


def config_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Readable differences ``"path: old -> new"`` between two nested configs."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [d for k in dict.fromkeys([*a, *b]) for d in config_diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in config_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {_short(a)} -> {_short(b)}"]


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
