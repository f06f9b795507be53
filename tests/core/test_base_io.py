"""The base layer's file reading: npz archives are read as arrays only, and every refusal names the file."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from molfuse.base.io import load_npz
from molfuse.errors import DataError


def test_load_npz_reads_every_array(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, a=np.arange(3), names=np.array(["x", "y"]))
    arrays = load_npz(path, require=["a"])
    assert list(arrays) == ["a", "names"] and arrays["a"].tolist() == [0, 1, 2]


def _object_npz(path):
    np.savez(path, ok=np.ones(2), obj=np.array([{"code": "print('ran')"}], dtype=object))


def _not_arrays(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


def _truncated(path):
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(1000))
    path.write_bytes(buf.getvalue()[:300])


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b"\x00garbage" * 40), "it is not a \\(complete\\) zip archive of .npy arrays; molfuse "
                                                    "never reads pickled data"),
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "it is not a \\(complete\\) zip archive"),
    (lambda p: p.write_bytes(b""), "it is not a \\(complete\\) zip archive"),
    (lambda p: np.save(open(p, "wb"), np.arange(3)), "it is not a \\(complete\\) zip archive"),  # an .npy
    (_truncated, "it is not a \\(complete\\) zip archive"),
    (_object_npz, "array 'obj' holds Python objects, which would need unpickling"),
    (_not_arrays, "member 'readme.txt' is not a .npy array"),
])
def test_a_garbage_npz_is_refused_as_not_numeric_never_unpickled(tmp_path, make, reason):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(DataError, match=f"^training data {path} is not a valid numeric .npz file: {reason}") as e:
        load_npz(path, "training data")
    assert "allow_pickle" not in str(e.value)


def test_load_npz_names_missing_files_and_arrays(tmp_path):
    with pytest.raises(DataError, match=f"^npz file {tmp_path / 'nope.npz'} does not exist$"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(DataError, match="does not exist \\(it is a folder\\)"):
        load_npz(tmp_path)
    np.savez(tmp_path / "a.npz", x=np.ones(2))
    with pytest.raises(DataError, match="has no array 'ca', 'mask'; it has: 'x'$"):
        load_npz(tmp_path / "a.npz", require=["x", "ca", "mask"])
