"""Replicate runs combined into mean ± sd, with refusals."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from molfuse.campaign.replicates import by_n_replicate_table, by_n_replicates, combine_replicates, replicate_table
from molfuse.cli import main
from molfuse.errors import WorkflowError


def _run(folder, seed, values, name="wf", methods=("a", "b")):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": name, "seed": seed}))
    pd.DataFrame({"method": list(methods), "tv": values, "label": ["x"] * len(methods),
                  "bpd": [float("nan")] * len(methods)}).to_csv(folder / "metrics.csv", index=False)
    return folder


def test_mean_sd_min_max_over_seeds(tmp_path):
    runs = [_run(tmp_path / f"s{k}", k, [0.1 * (k + 1), 1.0]) for k in range(3)]
    c = combine_replicates(runs)
    a = c[(c.method == "a") & (c.metric == "tv")].iloc[0]
    assert a["mean"] == pytest.approx(0.2) and a["sd"] == pytest.approx(0.1) and (a["min"], a["max"]) == pytest.approx((0.1, 0.3))
    assert a["n_runs"] == 3 and c.attrs["seeds"] == [0, 1, 2]
    assert set(c.metric) == {"tv"}  # the all-NaN and the text column are left out
    table = replicate_table(c, ["tv"])
    assert "| a | 0.2 ± 0.1 |" in table and "| b | 1 ± 0 |" in table
    with pytest.raises(WorkflowError, match="no such metric"):
        replicate_table(c, ["fid"])


def test_refusals(tmp_path):
    a = _run(tmp_path / "a", 0, [0.1, 0.2])
    with pytest.raises(WorkflowError, match="same seed"):
        combine_replicates([a, _run(tmp_path / "b", 0, [0.1, 0.2])])
    with pytest.raises(WorkflowError, match="different workflows"):
        combine_replicates([a, _run(tmp_path / "c", 1, [0.1, 0.2], name="other")])
    with pytest.raises(WorkflowError, match="different methods"):
        combine_replicates([a, _run(tmp_path / "d", 2, [0.1, 0.2], methods=("a", "z"))])
    with pytest.raises(WorkflowError, match="not a finished run"):
        combine_replicates([tmp_path])


def test_cli_prints_the_table_and_writes_csv(tmp_path):
    runs = [str(_run(tmp_path / f"s{k}", k, [0.1 * (k + 1), 1.0])) for k in range(2)]
    res = CliRunner().invoke(main, ["replicates", *runs, "--metrics", "tv", "--out", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert "seeds [0, 1]" in res.output and "0.15 ± 0.071" in res.output
    assert pd.read_csv(tmp_path / "r.csv").shape[0] == 2
    res = CliRunner().invoke(main, ["replicates", runs[0], runs[0]])
    assert res.exit_code != 0 and "same seed" in res.output


def test_by_n_pools_draws_and_runs(tmp_path):
    methods = ("uniform", "fused_n16_seed0", "fused_n16_seed1", "scratch_n16_seed0", "fused_n64_seed0")
    runs = [_run(tmp_path / f"s{k}", k, [9.0, 0.1 + k, 0.2 + k, 0.5, 0.3], methods=methods) for k in range(2)]
    pooled = by_n_replicates(runs)
    f16 = pooled[(pooled.family == "fused") & (pooled.n == 16) & (pooled.metric == "tv")].iloc[0]
    assert f16["n_values"] == 4 and f16["mean"] == pytest.approx(0.65) and (f16["min"], f16["max"]) == pytest.approx((0.1, 1.2))
    assert set(zip(pooled.family, pooled.n)) == {("fused", 16), ("fused", 64), ("scratch", 16)}  # uniform is no n
    table = by_n_replicate_table(pooled, "tv")
    assert table.splitlines()[0] == "| n | fused | scratch |" and "| 64 | 0.3 ± 0 |  |" in table
    with pytest.raises(WorkflowError, match="no method is named"):
        by_n_replicates([_run(tmp_path / "plain", 5, [0.1, 0.2])])
    res = CliRunner().invoke(main, ["replicates", *map(str, runs), "--by-n", "--metrics", "tv"])
    assert res.exit_code == 0, res.output
    assert "the draws of each n and the runs" in res.output and "| 16 | 0.65 ± 0.58 | 0.5 ± 0 |" in res.output


@pytest.mark.parametrize("damage, said", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary", r"metrics.csv: not UTF-8 text"),
    (b"", r"metrics.csv: not a metrics table \(EmptyDataError"),
    (b"tv,bpd\n0.1,0.2\n", r"metrics.csv: not a metrics table \(no method column"),
])
def test_a_garbage_metrics_csv_is_named(tmp_path, damage, said):
    good = _run(tmp_path / "good", 0, [0.1, 0.2])
    bad = _run(tmp_path / "bad", 1, [0.1, 0.2])
    (bad / "metrics.csv").write_bytes(damage)
    with pytest.raises(WorkflowError, match=said):
        combine_replicates([good, bad])
    res = CliRunner().invoke(main, ["replicates", str(good), str(bad)])
    assert res.exit_code == 1 and str(bad / "metrics.csv") in res.output and "Traceback" not in res.output, res.output


def test_a_garbage_config_yaml_is_named(tmp_path):
    good = _run(tmp_path / "good", 0, [0.1, 0.2])
    bad = _run(tmp_path / "bad", 1, [0.1, 0.2])
    (bad / "config.yaml").write_text("name: wf\nseed: 1\nseed: 2\n")
    with pytest.raises(WorkflowError, match=r"config.yaml: line 3: duplicate key 'seed' \(first at line 2\)"):
        combine_replicates([good, bad])
    (bad / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(WorkflowError, match=r"config.yaml: expected a run's config \(a mapping\), got list"):
        combine_replicates([good, bad])


def test_seed_table_for_the_docs_names_its_command_and_runs(tmp_path):
    """molfuse report: cells "seed 0 / seed 1" (trailing zeros kept, counts as integers), rows picked and
    ordered, the command and each run's folder and seed under the table; unknown names refused."""
    from molfuse.campaign.replicates import seed_table

    runs = [_run(tmp_path / "s0", 0, [0.95, 57.0]), _run(tmp_path / "s1", 1, [0.9623, 52.0])]
    text = seed_table(runs, ["tv"], ["b", "a"])
    lines = text.splitlines()
    assert lines[0] == "| method | tv |" and lines[2] == "| b | 57 / 52 |" and lines[3] == "| a | 0.950 / 0.962 |"
    assert "Cells: seed 0 / seed 1." in text and f"molfuse report {runs[0]} {runs[1]} --metrics tv --methods b,a" in text
    with pytest.raises(WorkflowError, match="no such metric.*available"):
        seed_table(runs, ["fid"])
    with pytest.raises(WorkflowError, match="no such method"):
        seed_table(runs, ["tv"], ["z"])
    out = CliRunner().invoke(main, ["report", str(runs[0]), str(runs[1]), "--metrics", "tv"])
    assert out.exit_code == 0 and "| a | 0.950 / 0.962 |" in out.output
    out = CliRunner().invoke(main, ["report", str(runs[0]), str(runs[0]), "--metrics", "tv"])
    assert out.exit_code == 1 and "same seed" in out.output


def test_seed_table_appends_the_runs_reference_rows(tmp_path):
    """--reference: each run's reference.csv rows (real data) after the methods, matched by label;
    the run's own methods, which a report repeats, are not listed twice; a run without one is named."""
    import pandas as pd

    from molfuse.campaign.replicates import seed_table

    runs = [_run(tmp_path / "s0", 0, [0.95, 57.0]), _run(tmp_path / "s1", 1, [0.9623, 52.0])]
    with pytest.raises(WorkflowError, match=r"s0: no reference.csv"):
        seed_table(runs, ["tv"], reference=True)
    pd.DataFrame({"method": ["a", "real test (8)"], "tv": [0.95, 0.125]}).to_csv(runs[0] / "reference.csv", index=False)
    pd.DataFrame({"method": ["real test (8)", "walks"], "tv": [0.25, 2.0]}).to_csv(runs[1] / "reference.csv", index=False)
    lines = seed_table(runs, ["tv"], reference=True).splitlines()
    assert lines[2:6] == ["| a | 0.950 / 0.962 |", "| b | 57 / 52 |", "| real test (8) | 0.125 / 0.250 |",
                          "| walks | – / 2 |"]
    assert lines[-1].endswith("(seed 1).") and "--metrics tv --reference`" in lines[-1]
