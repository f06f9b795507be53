"""Replicate runs combined into mean ± sd, with refusals."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from molfuse.campaign.replicates import combine_replicates, replicate_table
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
