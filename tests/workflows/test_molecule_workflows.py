"""The shipped molecule workflows run end to end on the shipped checkpoints (tiny sizes)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("rdkit")
pytest.importorskip("e3nn")

from molfuse.campaign import run_workflow  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _tiny(name: str) -> dict:
    wf = yaml.safe_load((ROOT / "workflows" / "molecules" / name).read_text())
    wf["n_samples"] = 4
    wf["sampler"].update(steps=20, chunk_size=4, threads=1)
    wf["evaluation"]["reference_source"] = "small"
    if wf["evaluation"].get("fcd") and importlib.util.find_spec("fcd_torch") is None:
        wf["evaluation"]["fcd"] = False  # refused without molfuse[fcd]; the rest still runs
    for r in wf.get("reports", []):
        if r["kind"] == "reference":
            r.update(n=50, source="small")
    for m in wf["methods"]:
        if "fit" in m:  # the shipped subset instead of the full QM9 package, fewer Monte Carlo draws
            m["fit"]["data"]["source"] = "small"
            m["fit"]["n_mc"] = 256
    return wf


@pytest.mark.parametrize("name", ["unconditional_qm9.yaml", "and_rings_heteroatoms.yaml", "and_rings_heteroatoms_guided.yaml",
                                  "or_cyclic_acyclic.yaml",
                                  "barycenter_rings.yaml"])
def test_molecule_workflow_tiny(tmp_path, name):
    wf = _tiny(name)
    res = run_workflow(wf, out=tmp_path, name="tiny", progress=False, verbose=False)
    m = res.metrics.set_index("method")
    assert list(m.index) == [x["name"] for x in wf["methods"]] and (m["n"] == 4).all()
    assert m["validity"].between(0, 1).all() and np.isfinite(m["diversity"].fillna(0)).all()
    for method in m.index:
        assert (res.folder / "samples" / f"{method}.sdf").is_file()
    if "targets" in wf["evaluation"]:
        assert all(f"{p}_hit" in m for p in wf["evaluation"]["targets"])
    kinds = [r["kind"] for r in wf.get("reports", [])]
    if "reference" in kinds:
        assert (res.folder / "reference.csv").is_file() and "EDM paper" in res.sections[0]
        ref = pd.read_csv(res.folder / "reference.csv").set_index("method")
        if wf["evaluation"].get("fcd") and importlib.util.find_spec("fcd_torch"):  # generated and the real floor
            gen, floor = ref["fcd"].iloc[:2]  # 4 molecules at 20 steps: FCD is NaN below 2 valid ones
            assert np.isfinite(floor) and (np.isnan(gen) or floor < gen)
    if "by_n" in kinds:
        w = m.loc["fused_n16_seed0", ["weight_cyclic", "weight_acyclic"]]
        assert abs(w.sum() - 1) < 1e-6 and (w >= 0).all() and np.isfinite(m.loc["fused_n16_seed0", "heldout_dsm_loss"])
