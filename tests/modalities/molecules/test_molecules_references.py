"""Numbers a user can trace: which reference molecules novelty, FCD and the property plots were
measured against (named in summary.md and provenance.json, a fallback in bold), and property
hits counted on the molecule the user receives (the largest fragment, the `.smi` SMILES)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("rdkit")

from molfuse import plugins  # noqa: E402
from molfuse.modalities.molecules import compute_properties, encode, normalisation_for, parse_smiles  # noqa: E402
from molfuse.modalities.molecules.evaluate import EVALUATOR  # noqa: E402
from molfuse.modalities.molecules.schema import parse_evaluation  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
NORM = normalisation_for("implicit")


@pytest.fixture
def bare_install(monkeypatch, tmp_path):
    """An install without the qm9 extra (and no cached QM9 parse): auto falls back to the subset."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "qm9pack"
                        else real(name, *a))
    monkeypatch.setenv("MOLFUSE_CACHE", str(tmp_path / "no_cache"))


def _ctx(settings: dict, n: int = 2) -> plugins.EvalContext:
    return plugins.EvalContext(folder=None, settings=settings, models={"m": SimpleNamespace(normalisation=NORM)},
                               schedule=None, seed=0, t_end=1e-3, n_samples=n)


def test_a_fallback_reference_is_named_and_flagged(bare_install):
    ctx = _ctx(parse_evaluation({"reference_source": "auto"}))
    prov = EVALUATOR.provenance(ctx)
    assert prov["reference_source"] == {"requested": "auto", "used": "small", "fallback": True,
                                        "why": "the full QM9 set is not installed (pip install 'molfuse[qm9]')"}
    assert prov["novelty_reference"] == "qm9_small subset of the train split (3,000 molecules)"
    assert prov["properties_png_reference"] == "qm9_small subset of the test split (1,000 molecules)"
    assert "fcd_reference" not in prov and prov["settings"]["margins_pm"] == [10.0, 5.0, 3.0]
    bold = [c for c in EVALUATOR.caveats(ctx, pd.DataFrame()) if c.startswith("**")]
    assert len(bold) == 1 and "`reference_source: auto` fell back to the shipped qm9_small subset" in bold[0]
    assert "novelty against the qm9_small subset of the train split (3,000 molecules)" in bold[0]


def test_a_chosen_subset_is_named_without_the_alarm():
    ctx = _ctx(parse_evaluation({"reference_source": "small", "novelty": False}))
    prov = EVALUATOR.provenance(ctx)
    assert prov["reference_source"]["fallback"] is False and "novelty_reference" not in prov
    caveats = EVALUATOR.caveats(ctx, pd.DataFrame())
    assert not any(c.startswith("**") for c in caveats)
    assert any("Reference molecules (`reference_source: small`): properties.png against the qm9_small subset of "
               "the test split (1,000 molecules)" in c for c in caveats)


def test_a_run_says_which_reference_it_used_in_both_files(bare_install, tmp_path):
    from molfuse.campaign import run_workflow

    pytest.importorskip("e3nn")
    wf = {"name": "ref_named", "output": str(tmp_path), "run_name": "r", "n_samples": 2,
          "sampler": {"steps": 20, "chunk_size": 2, "threads": 1},
          "models": {"u": {"kind": "checkpoint", "path": str(ROOT / "models" / "molecules" / "qm9_uncond")}},
          "evaluation": {"reference_source": "auto", "properties": ["rings"]},
          "methods": [{"name": "u", "operator": "single", "models": ["u"]}],
          "reports": [{"kind": "reference", "n": 10}]}
    res = run_workflow(wf, progress=False, verbose=False)
    prov = json.loads((res.folder / "provenance.json").read_text())["evaluation"]
    assert prov["novelty_reference"] == "qm9_small subset of the train split (3,000 molecules)"
    assert prov["reference_source"]["fallback"] is True
    summary = (res.folder / "summary.md").read_text()
    assert "- **`reference_source: auto` fell back to the shipped qm9_small subset" in summary
    assert "**Real row (`source: auto`): 10 molecules drawn from the qm9_small subset of the test split" in summary
    assert "real qm9_small test (10, implicit H)" in pd.read_csv(res.folder / "reference.csv")["method"].tolist()


def _cloud(atoms: list[tuple[str, tuple[float, float, float]]]) -> tuple[np.ndarray, np.ndarray]:
    types = np.full(9, -1)
    pos = np.zeros((9, 3))
    for i, (el, xyz) in enumerate(atoms):
        types[i], pos[i] = NORM["alphabet"].index(el), xyz
    return types, pos


def test_property_hits_count_the_largest_fragment_the_user_receives():
    # cyclopropane with a loose O and N far away (3 fragments), and ethanol's heavy atoms (1 fragment)
    frag = _cloud([("C", (0, 0, 0)), ("C", (1.5, 0, 0)), ("C", (0.75, 1.3, 0)), ("O", (10, 0, 0)), ("N", (0, 10, 0))])
    whole = _cloud([("C", (0, 0, 0)), ("C", (1.5, 0, 0)), ("O", (2.9, 0, 0))])
    types, pos = (np.stack(a) for a in zip(frag, whole))
    x, mask = encode(types, pos, len(NORM["alphabet"]))
    table = pd.DataFrame({"id": ["a", "b"], "valid": True, "reason": ""})
    run = plugins.MethodRun("m", "single", ["m"], x.numpy(), np.zeros(2), np.zeros(2), mask=mask.numpy(), table=table)
    settings = parse_evaluation({"reference_source": "small", "novelty": False, "properties": ["rings"],
                                 "targets": {"heteroatoms": {"value": 2, "tolerance": 0},
                                             "rings": {"value": 1, "tolerance": 0}}})
    out = EVALUATOR.evaluate(_ctx(settings), run)
    t = out.table
    assert t["smiles"].tolist() == ["C1CC1", "CCO"] and t["fragments"].tolist() == [3, 1]
    assert t["heteroatoms"].tolist() == [0.0, 1.0]  # the whole first molecule has 2: O and N lie apart
    assert out.row["heteroatoms_hit"] == 0.0 and out.row["rings_hit"] == 0.5 and out.row["joint_hit"] == 0.0
    mols, _ = parse_smiles(t["smiles"].tolist())  # what a user recomputes from the .smi file
    again = compute_properties(mols, ["rings", "heteroatoms"])
    assert again.equals(t[["rings", "heteroatoms"]].reset_index(drop=True))
