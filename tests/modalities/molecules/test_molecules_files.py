"""The QM9 files molfuse reads (the shipped subset, the parsed cache) are arrays only; a damaged one is named."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from molfuse.errors import DataError  # noqa: E402
from molfuse.modalities.molecules import qm9  # noqa: E402


def test_a_garbage_subset_file_is_named_not_unpickled(tmp_path):
    bad = tmp_path / "qm9_small.npz"
    bad.write_bytes(b"\x80\x04garbage" * 30)
    with pytest.raises(DataError, match=f"^shipped QM9 subset {bad} is not a valid numeric .npz file"):
        qm9.load_small(bad)
    np.savez(bad, **{"train/index": np.arange(2)})
    with pytest.raises(DataError, match="has no array 'train/smiles', .*; it has: 'train/index'$"):
        qm9.load_small(bad)


def test_a_damaged_cache_is_named_and_parsed_again(tmp_path, monkeypatch):
    small = qm9.load_small()["test"]
    monkeypatch.setenv("MOLFUSE_CACHE", str(tmp_path))
    monkeypatch.setattr(qm9, "_parse", lambda: small)
    qm9._cache_path().parent.mkdir(parents=True, exist_ok=True)
    qm9._cache_path().write_bytes(b"half a file")
    with pytest.warns(UserWarning, match=f"QM9 cache {qm9._cache_path()} is not a valid numeric .npz file.*; "
                                         "parsing QM9 again"):
        data = qm9.load_qm9()
    assert len(data) == len(small)
    again = qm9.load_qm9()  # the cache was replaced by the parsed arrays
    assert np.array_equal(again.positions, small.positions) and list(again.smiles) == list(small.smiles)
