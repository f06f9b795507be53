"""The base layer: plumbing every other layer uses and that imports nothing of molfuse above it.

- :mod:`.io`: atomic writes (fsync, rename), plain JSON, sha256, stale temporaries, folder locks,
  npz archives read without unpickling;
- :mod:`.checks`: configuration value checks naming the field, and tensor finiteness;
- :mod:`.seeds`: seeds derived from (seed, names);
- :mod:`.provenance`: version, git state, machine summary, config differences;
- :mod:`.registry`: named registries with helpful errors;
- :mod:`.tables`: markdown tables and column order.

Errors live in :mod:`molfuse.errors` (also base layer).
"""

from .checks import (REQUIRED, as_bool, as_choice, as_float, as_floats, as_int, as_name, as_simplex, at,
                     check_finite, fail, fields, numeric)
from .io import (FolderLock, atomic_write, jsonable, load_npz, read_yaml, remove_stale_temporaries, sha256_bytes,
                 sha256_file, write_json, write_text)
from .provenance import REPO_ROOT, VERSION, config_diff, git_state, machine, now
from .registry import Registry
from .seeds import derive_seed, seeded_generator
from .tables import markdown_table, ordered_columns

__all__ = ["REQUIRED", "as_bool", "as_choice", "as_float", "as_floats", "as_int", "as_name", "as_simplex", "at",
           "check_finite", "fail", "fields", "numeric", "FolderLock", "atomic_write", "jsonable",
           "remove_stale_temporaries", "sha256_bytes", "sha256_file", "write_json", "write_text", "REPO_ROOT",
           "VERSION", "config_diff", "git_state", "machine", "now", "Registry", "derive_seed", "seeded_generator", "markdown_table",
           "ordered_columns", "read_yaml", "load_npz"]
