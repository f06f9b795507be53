"""Files that are either complete or absent, plain JSON, hashes, and a lock per results folder.

Every file molfuse writes goes through :func:`atomic_write`: a temporary name in the same
folder, flushed and fsynced, then ``os.replace`` onto the final name and the folder fsynced,
so a killed process never leaves a half-written file under a final name (RESULTS.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import socket
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import DataError, FolderLockedError, WorkflowError

__all__ = ["atomic_write", "write_text", "write_json", "jsonable", "sha256_bytes", "sha256_file",
           "remove_stale_temporaries", "FolderLock", "TMP_SUFFIX", "read_yaml", "parse_yaml", "load_npz"]

TMP_SUFFIX = ".tmp"
_TMP = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp$")  # .<name>.<pid>.tmp


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None], text: bool = False) -> Path:
    """Write ``path`` through a temporary file: ``write(fh)`` fills it, then fsync and rename.

    Args:
        path: the final file; its folder is created. An existing folder of that name is refused.
        write: called once with an open binary (or text, UTF-8, ``newline=""``) file handle.
        text: open the temporary file in text mode.

    Raises:
        IsADirectoryError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; cannot write a file there")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, content: str) -> Path:
    """:func:`atomic_write` of a UTF-8 string."""
    return atomic_write(path, lambda fh: fh.write(content), text=True)


def write_json(path: str | Path, obj: Any) -> Path:
    """:func:`atomic_write` of ``jsonable(obj)``, indented, with a final newline."""
    return write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def jsonable(v: Any) -> Any:
    """Plain JSON values (NaN / inf -> None, numpy and torch scalars / arrays -> Python)."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.generic, np.ndarray, torch.Tensor)):
        v = v.item() if getattr(v, "ndim", 0) == 0 else v.tolist()
        return jsonable(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files (``.<name>.<pid>.tmp``) below ``folder`` left by dead processes.

    A process killed between creating its temporary file and renaming it leaves one behind;
    it never looks like a finished file, but it wastes space and confuses people. Files of
    live processes (another writer) are kept. Returns the paths removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.rglob(f".*{TMP_SUFFIX}"):
        m = _TMP.match(p.name)
        if m and p.is_file() and not (int(m["pid"]) != os.getpid() and _alive(int(m["pid"]))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class FolderLock:
    """An exclusive lock on a results folder for the life of a ``with`` block.

    ``fcntl.flock`` on ``<folder>/.lock``: the operating system releases it when the process
    dies (``kill -9`` included), so a stale lock never blocks a rerun. The lock file records
    the holder (pid, host, start time) for the message another process gets.

    Raises:
        FolderLockedError: another process holds the lock (the message names it), or the folder
            is a file.
        WorkflowError: the folder cannot be created or written (the message names it and why).
    """

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        import fcntl

        if self.folder.exists() and not self.folder.is_dir():
            raise FolderLockedError(f"{self.folder} is a file, not a results folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            why = f"{type(e).__name__}: {e.strerror or e}: {e.filename or self.folder}"
            raise WorkflowError(f"{self.folder}: cannot create or write this folder ({why}); choose a folder you "
                                "can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown holder"
            os.close(fd)
            raise FolderLockedError(f"{self.folder} is in use by another molfuse {self.what} ({holder}); wait for "
                                    "it to finish, or give this run another name (--name)") from None
        os.ftruncate(fd, 0)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_yaml(source: str | Path | Mapping) -> Any:
    """A workflow: a YAML file's content, or a mapping given directly (copied).

    Raises:
        WorkflowError: the file is missing, a folder, unreadable, not valid YAML or has a key
            twice in one mapping (:func:`parse_yaml`).
    """
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise WorkflowError(f"workflow file {str(path)!r} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise WorkflowError(f"{path}: not valid YAML: not UTF-8 text ({e})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> Any:
    """``text`` read as YAML (safe: plain data only), refusing a key given twice in one mapping.

    Plain ``yaml.safe_load`` keeps the last of two equal keys without a word, so a typo'd copy
    of ``n_samples`` silently wins; here it is an error naming the key and both lines.

    Args:
        text: the YAML document.
        where: the file it came from, for messages.

    Raises:
        WorkflowError: ``"<where>: line 7: duplicate key 'n_samples' (first at line 5) ..."``, or
            ``"<where>: not valid YAML: ..."``.
    """
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise WorkflowError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise WorkflowError(f"{where}: not valid YAML: {e}") from None


class _DuplicateKey(ValueError):
    pass


@functools.lru_cache(maxsize=1)
def _strict_loader() -> type:
    """A YAML SafeLoader whose mappings refuse a key given twice (merge keys ``<<`` may still be overridden)."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor names it
                    continue
                if first is not None:
                    raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first at line {first}); YAML would "
                                        "silently keep the last one. Give each key once")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_npz(path: str | Path, what: str = "npz file", require: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read without unpickling anything.

    numpy takes a file that is not a zip archive for a pickle and advises ``allow_pickle=True``;
    molfuse never unpickles data, so such a file is refused as not an npz, like an archive that is
    truncated, holds arrays of Python objects or members that are not arrays.

    Args:
        path: the archive.
        what: what the file is, for errors (``"backbones file"``, ``"QM9 cache"``).
        require: names of arrays it must hold.

    Returns:
        ``{name: array}`` in the archive's order, loaded into memory.

    Raises:
        DataError: naming ``what``, the file and the problem (missing, a folder, not a valid numeric
            npz, an array of objects, a required array absent with the ones present).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    bad = f"{what} {path} is not a valid numeric .npz file"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{bad}: it is not a (complete) zip archive of .npy arrays; molfuse never reads pickled data")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                arrays[name] = _npz_member(z, name, bad)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{bad} ({type(e).__name__}: {str(e)[:120] or 'no detail'})") from None
    missing = [k for k in require if k not in arrays]
    if missing:
        raise DataError(f"{what} {path} has no array {', '.join(map(repr, missing))}; it has: "
                        f"{', '.join(map(repr, arrays)) or 'no arrays'}")
    return arrays


def _npz_member(z: Any, name: str, bad: str) -> np.ndarray:
    """One member of an open npz as an array (DataError for objects or non-array members)."""
    try:
        value = z[name]
    except ValueError as e:
        if "pickle" not in str(e):
            raise
        raise DataError(f"{bad}: array {name!r} holds Python objects, which would need unpickling") from None
    if not isinstance(value, np.ndarray):
        raise DataError(f"{bad}: member {name!r} is not a .npy array")
    return value
