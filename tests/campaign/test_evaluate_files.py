"""``molfuse evaluate``: a user's own sample files judged like a workflow's samples."""

import json

import numpy as np

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


def test_real_backbone_files_score_as_real_and_bad_files_are_rows(tmp_path):
    """30 real held-out 64-residue fragments written as Cα-only PDB and mmCIF files (one gzipped) in a
    folder are all valid, right-handed, with the held-out composition; an unreadable and an empty file
    are rows with reasons that count as invalid; a random walk scores invalid beside them."""
    pytest.importorskip("biotite")
    import gzip

    import numpy as np

    from molfuse.modalities.proteins.data import load_backbones
    from molfuse.modalities.proteins.io import write_mmcif, write_pdb

    real = load_backbones().select("test", 64).traces()[:30]
    folder = tmp_path / "designs"
    (folder / "sub").mkdir(parents=True)
    for i, t in enumerate(real):
        (write_pdb if i % 2 else write_mmcif)(folder / ("sub" if i < 5 else "") / f"r{i:02d}.{'pdb' if i % 2 else 'cif'}",
                                               t)
    (folder / "r07.pdb.gz").write_bytes(gzip.compress((folder / "r07.pdb").read_bytes()))
    (folder / "r07.pdb").unlink()
    (folder / "broken.pdb").write_text("HEADER nothing\nATOM      1  CA  ALA A   1      xx.000\n")
    (folder / "empty.cif").write_text("")
    (folder / "notes.txt").write_text("not a structure")  # not a structure file: not read
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(64, 3))
    walk = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    write_pdb(tmp_path / "walk.pdb", walk)
    r = evaluate_samples([folder, tmp_path / "walk.pdb"], out=tmp_path / "out", name="p")
    m = r.metrics.set_index("input")
    assert r.modality == "proteins" and m.loc["designs", "n"] == 32 and m.loc["designs", "unreadable"] == 2
    assert m.loc["designs", "validity"] == pytest.approx(30 / 32) and m.loc["designs", "right_handed_share"] == 1.0
    assert abs(m.loc["designs", "helix"] - 0.23) < 0.1 and m.loc["designs", "rg_vs_data"] < 1.2
    assert m.loc["walk", "validity"] == 0.0
    rows = r.per_sample[r.per_sample.input == "designs"]
    bad = rows[~rows.valid.astype(bool)]
    assert sorted(bad["file"]) == ["broken.pdb", "empty.cif"] and all(bad["reason"].str.len() > 0)
    assert "r07.pdb.gz" in set(rows["file"])
    assert (tmp_path / "out" / "p" / "sse_composition.png").is_file()


def test_real_digit_images_score_as_real_and_bad_images_are_rows(tmp_path):
    """300 real held-out digits (a uint8 .npy) read as real: both judges agree, every class is
    present, no near copies, nearest-training distances like fresh real digits'; a PNG folder with an
    unreadable file and one of the wrong size keeps them as rows with reasons; model metrics are refused."""
    pytest.importorskip("PIL")
    import numpy as np
    from PIL import Image

    from molfuse.modalities.images.evaluate import reference_images

    real = reference_images(28)[np.random.default_rng(0).permutation(1000)[:300]]
    np.save(tmp_path / "real.npy", (real * 255).round().astype(np.uint8))
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(12):
        Image.fromarray((real[i] * 255).round().astype(np.uint8)).save(pngs / f"d{i:02d}.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(pngs / "small.png")
    (pngs / "bad.png").write_bytes(b"not a png")
    r = evaluate_samples([tmp_path / "real.npy", pngs], out=tmp_path / "out", name="i")
    m = r.metrics.set_index("input")
    assert r.modality == "images" and m.loc["real", "n_valid"] == 300
    assert m.loc["real", "judge_agreement"] > 0.95 and m.loc["real", "near_copy_fraction"] == 0.0
    assert all(m.loc["real", f"frac_class_{k}"] > 0.03 for k in range(10))
    assert 0.85 < m.loc["real", "nn_ratio_pixel"] < 1.15
    rows = r.per_sample[r.per_sample.input == "pngs"].set_index("file")
    assert m.loc["pngs", "n"] == 14 and m.loc["pngs", "n_valid"] == 12
    assert "unreadable PNG" in rows.loc["bad.png", "reason"] and "10x12 pixels" in rows.loc["small.png", "reason"]
    np.save(tmp_path / "wide.npy", np.zeros((3, 28, 28)) + 2.0)
    with pytest.raises(WorkflowError, match=r"expected intensities in \[0, 1\]"):
        evaluate_samples([tmp_path / "wide.npy"], out=tmp_path / "out", name="j")
    with pytest.raises(WorkflowError, match="bits_per_dim"):
        evaluate_samples([tmp_path / "real.npy"], evaluation={"bits_per_dim": {"steps": 5}}, out=tmp_path, name="k")


def test_the_shipped_examples_are_what_their_card_rebuilds(tmp_path):
    """data/examples (the README's evaluate commands) is rebuilt byte for byte by its command."""
    import runpy
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data" / "examples"
    argv, sys.argv = sys.argv, ["build.py", "--out", str(tmp_path)]
    try:
        runpy.run_path(str(root / "build.py"), run_name="__main__")
    finally:
        sys.argv = argv
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert built == sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".md"))
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (root / rel).read_bytes(), rel


def test_a_3d_sdf_is_checked_against_its_own_coordinates(tmp_path):
    """3-D records get geometry_agrees / connectivity_agrees (the EDM distance rule on the file's own
    coordinates against its bonds): real molecules embedded by RDKit agree, the same molecules with
    one bond stretched to 2.5 Å do not; 2-D records have none."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mols = []
    for s in _real_test(30):
        m = Chem.AddHs(Chem.MolFromSmiles(s))
        if AllChem.EmbedMolecule(m, randomSeed=0) == 0:
            AllChem.MMFFOptimizeMolecule(m)
            mols.append(m)
    w = Chem.SDWriter(str(tmp_path / "good.sdf"))
    for m in mols:
        w.write(m)
    w.close()
    w = Chem.SDWriter(str(tmp_path / "stretched.sdf"))
    for m in mols:
        m = Chem.Mol(m)
        b = m.GetBondWithIdx(0)
        Chem.rdMolTransforms.SetBondLength(m.GetConformer(), b.GetBeginAtomIdx(), b.GetEndAtomIdx(), 2.5) \
            if not b.IsInRing() else None
        w.write(m)
    w.close()
    _sdf(tmp_path / "flat.sdf", _real_test(5))
    r = evaluate_samples([tmp_path / "good.sdf", tmp_path / "stretched.sdf", tmp_path / "flat.sdf"], evaluation=SMALL,
                         out=tmp_path / "out", name="g")
    m = r.metrics.set_index("input")
    assert len(mols) >= 25 and m.loc["good", "validity"] == 1.0
    assert m.loc["good", "connectivity_agrees"] > 0.9 and m.loc["good", "geometry_agrees"] > 0.7
    assert m.loc["stretched", "connectivity_agrees"] < m.loc["good", "connectivity_agrees"] - 0.3
    assert np.isnan(m.loc["flat", "geometry_agrees"])
