"""``molfuse evaluate``: a user's own sample files judged like a workflow's samples."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from molfuse.campaign.judge import evaluate_samples
from molfuse.cli import main
from molfuse.errors import WorkflowError

pytest.importorskip("rdkit")

SMALL = {"reference_source": "small"}  # the shipped subset: the same numbers with or without the full QM9 wheel


def _real_test(n: int) -> list[str]:
    from molfuse.modalities.molecules.evaluate import reference

    return list(reference("small", "test"))[:n]


def _sdf(path, smiles, broken_at=None):
    """An SDF of ``smiles`` with 2-D coordinates; record ``broken_at`` has a corrupted atom line."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    blocks = []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        AllChem.Compute2DCoords(mol)
        block = Chem.MolToMolBlock(mol)
        if i == broken_at:
            lines = block.splitlines()
            lines[4] = "garbage in the atom block"
            block = "\n".join(lines)
        blocks.append(block + "\n$$$$\n")
    path.write_text("".join(blocks))
    return path


def test_real_molecules_score_as_real_and_broken_items_are_rows(tmp_path):
    """200 real QM9 test molecules (SMILES, and the same as an SDF) are valid, unique, one fragment and
    novel against the training split; a file with broken lines keeps one row per line with a reason;
    a missing file is one row naming it; the inputs sit side by side in metrics.csv."""
    real = _real_test(200)
    (tmp_path / "real.smi").write_text("\n".join(real) + "\n")
    _sdf(tmp_path / "real3.sdf", real[:60], broken_at=7)
    (tmp_path / "broken.smi").write_text("# a comment\nCCO\nC1CC\nC(C)(C)(C)(C)C\nc1ccccc1.O\n")
    r = evaluate_samples([tmp_path / "real.smi", f"sdf={tmp_path / 'real3.sdf'}", tmp_path / "broken.smi",
                          f"gone={tmp_path / 'missing.smi'}"], evaluation=SMALL, out=tmp_path / "out", name="a")
    m = r.metrics.set_index("input")
    assert r.modality == "molecules" and list(m.index) == ["real", "sdf", "broken", "gone"]
    for col in ("validity", "uniqueness", "connected", "novelty"):
        assert m.loc["real", col] == 1.0, col
    assert m.loc["sdf", "n"] == 60 and m.loc["sdf", "n_valid"] == 59  # one corrupted record, one row
    assert 0.8 < m.loc["real", "diversity"] < 1.0
    rows = r.per_sample.set_index("id")
    assert rows.loc["sdf-000007", "reason"] and not rows.loc["sdf-000007", "valid"]
    broken = r.per_sample[r.per_sample.input == "broken"]
    assert broken["valid"].tolist() == [True, False, False, True]
    assert all(broken.loc[~broken.valid, "reason"].str.len() > 0)
    assert m.loc["broken", "connected"] == 0.25  # benzene + water is valid, two fragments
    assert broken.iloc[3]["smiles"] == "c1ccccc1"  # the largest fragment is what is judged
    gone = r.per_sample[r.per_sample.input == "gone"]
    assert len(gone) == 1 and "no such file" in gone.iloc[0]["reason"]
    folder = tmp_path / "out" / "a"
    for f in ("per_sample.csv", "metrics.csv", "summary.md", "provenance.json", "evaluation.yaml", "properties.png",
              "samples/real.png"):
        assert (folder / f).is_file(), f
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["inputs"]["real"]["sha256"] and prov["evaluation"]["reference_source"]["used"] == "small"
    assert "qm9_small subset of the train split" in prov["evaluation"]["novelty_reference"]
    assert "fell back" not in (folder / "summary.md").read_text()  # asked for the subset: no fallback
    assert pd.read_csv(folder / "metrics.csv")["input"].tolist() == ["real", "sdf", "broken", "gone"]


def test_workflow_evaluation_settings_apply_and_bad_ones_are_named(tmp_path):
    """An evaluation YAML (a workflow's block) sets targets as in a run; settings that only mean
    something for molfuse's own samples, unknown fields, clashing labels and an existing folder
    are refused, naming the field, before anything is written."""
    (tmp_path / "a.smi").write_text("C1CCC2CCCCC2C1\nCCO\nCC1CC1O\n")  # 2 rings / 0 rings / 1 ring
    (tmp_path / "e.yaml").write_text("evaluation: {reference_source: small, targets: {rings: {value: 2}}}\n")
    r = evaluate_samples([tmp_path / "a.smi"], evaluation=tmp_path / "e.yaml", out=tmp_path, name="t")
    assert r.metrics.loc[0, "rings_hit"] == pytest.approx(1 / 3) and r.metrics.loc[0, "rings_mean"] == 1.0
    for bad, field in (({"valence_guard": True}, "valence_guard"), ({"bonds": "rdkit"}, "bonds"),
                       ({"colour": 1}, "colour")):
        with pytest.raises(WorkflowError, match=field):
            evaluate_samples([tmp_path / "a.smi"], evaluation={**SMALL, **bad}, out=tmp_path, name="u")
    with pytest.raises(WorkflowError, match="both named a"):
        evaluate_samples([tmp_path / "a.smi", f"a={tmp_path / 'a.smi'}"], evaluation=SMALL, out=tmp_path, name="v")
    with pytest.raises(WorkflowError, match="exists"):
        evaluate_samples([tmp_path / "a.smi"], evaluation=SMALL, out=tmp_path, name="t")
    with pytest.raises(WorkflowError, match="no modality reads"):
        evaluate_samples([tmp_path / "e.yaml"], out=tmp_path, name="w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.smi", "e.yaml", "t"]


def test_an_interrupted_evaluation_leaves_nothing_half_written(tmp_path, monkeypatch):
    """Ctrl-C while the second input is judged: no results folder, no temporary folder."""
    import dataclasses

    import molfuse.campaign.judge as judge_module
    from molfuse import plugins

    (tmp_path / "a.smi").write_text("CCO\n")
    (tmp_path / "b.smi").write_text("CCN\n")
    mod, calls = plugins.modality("molecules"), []

    def dies_on_the_second(path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return mod.files.judge(path, *a, **k)

    patched = dataclasses.replace(mod, files=dataclasses.replace(mod.files, judge=dies_on_the_second))
    monkeypatch.setattr(judge_module.plugins, "modality", lambda name: patched)
    with pytest.raises(KeyboardInterrupt):
        evaluate_samples([tmp_path / "a.smi", tmp_path / "b.smi"], "molecules", SMALL, tmp_path / "o", "x")
    assert len(calls) == 2 and list((tmp_path / "o").iterdir()) == []


def test_the_command_prints_the_table_and_names_a_bad_setting(tmp_path):
    (tmp_path / "mine.smi").write_text("CCO\nc1ccncc1\n")
    (tmp_path / "bad.yaml").write_text("evaluation: {reference_source: small, valence_guard: true}\n")
    run = CliRunner().invoke(main, ["evaluate", str(tmp_path / "mine.smi"), "--evaluation", str(tmp_path / "bad.yaml"),
                                    "--out", str(tmp_path), "--name", "c"])
    assert run.exit_code == 1 and "valence_guard" in run.output
    (tmp_path / "ok.yaml").write_text("evaluation: {reference_source: small}\n")
    run = CliRunner().invoke(main, ["evaluate", str(tmp_path / "mine.smi"), "--evaluation", str(tmp_path / "ok.yaml"),
                                    "--out", str(tmp_path), "--name", "c"])
    assert run.exit_code == 0, run.output
    assert "| mine | 2 | 2 | 1 |" in run.output and (tmp_path / "c" / "summary.md").is_file()
