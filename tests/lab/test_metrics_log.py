"""hybrids.lab.metrics_log, the one reader of Lightning's metrics.csv: sparse rows, logged NaN,
several versions, missing and empty files, and the same figures as the three readers it replaced
(the sweep runner's, load_run's and run_lengths')."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hybrids.lab.metrics_log import last_values, newest_version, read_log, run_values, versions
from helpers import TESTS

LEGACY_LOGS = TESTS / "fixtures" / "legacy_run" / "legacy"

# A first attempt, stopped after one validation, and its continuation in version_1 (which logs
# no "params" row again): Lightning's sparse rows, each metric at its own steps.
FIRST = """\
epoch,params,seq_len,state_size,step,train/loss,val/acc,val/loss
,5000,64,2048,0,,,
0,,,,9,2.5,,
0,,,,9,,0.25,2.4
0,,,,19,2.1,,
"""
CONTINUATION = """\
epoch,step,train/loss,val/acc,val/loss,test/acc,test/loss,test/acc@64,test/acc@256
1,29,1.9,,,,,,
1,29,,0.5,nan,,,,
1,29,,,,0.625,inf,0.75,0.125
"""
# A run of `hybrids fit ... --test_after_fit true` tested at two lengths.
TESTED = """\
epoch,params,seq_len,state_size,step,val/acc,test/acc,test/acc@64,test/acc@256
,5000,64,2048,0,,,,
0,,,,9,0.5,,,
0,,,,9,,0.625,0.75,0.125
"""


def write_log(logs: Path, version: int, text: str) -> Path:
    folder = logs / f"version_{version}"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(text)
    return folder


# -- the readers as they were before issue 25, kept here to compare against -------------------------


def old_sweep_reader(logs: Path) -> dict[str, float]:
    """hybrids.lab.sweeps.execute.read_metrics."""
    found = [p for p in logs.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
    values: dict[str, float] = {}
    for version in sorted(found, key=lambda p: int(p.name[8:]), reverse=True):
        path = version / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for row in reversed(rows):
            for key, text in row.items():
                if key in ("epoch", "step") or key in values or text in ("", None):
                    continue
                try:
                    values[key] = float(text)
                except ValueError:
                    continue
    return values


def old_run_reader(version: Path, columns) -> dict[str, float | None]:
    """hybrids.lab.analysis.runs.load_run's _last_value, for each of ``columns``."""
    with (version / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    def last(column):
        for row in reversed(rows):
            if row.get(column, "") not in ("", None):
                return float(row[column])
        return None

    return {column: last(column) for column in columns}


def old_lengths_reader(version: Path) -> dict[str, float]:
    """hybrids.lab.analysis.lengths.run_lengths' reading of the test/acc@L columns."""
    with (version / "metrics.csv").open(newline="") as f:
        records = list(csv.DictReader(f))
    columns = [c for c in (records[0].keys() if records else []) if c.startswith("test/acc@")]
    out = {}
    for column in columns:
        values = [r[column] for r in records if r.get(column) not in ("", None)]
        if values:
            out[column] = float(values[-1])
    return out


def same(a: dict, b: dict) -> bool:
    """Equal dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (x is None and y is None) or (x is not None and y is not None and (x == y or (math.isnan(x) and math.isnan(y))))
        for x, y in ((a[k], b[k]) for k in a)
    )


# -- the figures of the three readers ---------------------------------------------------------------


@pytest.fixture
def resumed(tmp_path) -> Path:
    logs = tmp_path / "logs"
    write_log(logs, 0, FIRST)
    write_log(logs, 1, CONTINUATION)
    return logs


def test_the_figures_of_a_run_are_those_the_sweep_runner_read(resumed):
    assert same(run_values(resumed), old_sweep_reader(resumed))
    values = run_values(resumed)
    assert values["params"] == 5000 and values["val/acc"] == 0.5 and values["train/loss"] == 1.9
    assert math.isnan(values["val/loss"]), "a logged NaN is the last value, not the finite one before it"
    assert values["test/loss"] == math.inf and "step" not in values and "epoch" not in values
    assert same(run_values(LEGACY_LOGS), old_sweep_reader(LEGACY_LOGS))


@pytest.mark.parametrize("version", ["version_0", "version_1"])
def test_the_figures_of_a_version_are_those_load_run_read(resumed, version):
    columns = ("val/acc", "val/loss", "state_size", "params", "seq_len", "test/acc")
    logged = last_values(resumed / version)
    assert same({c: logged.get(c) for c in columns}, old_run_reader(resumed / version, columns))
    legacy = LEGACY_LOGS / "version_0"
    assert same({c: last_values(legacy).get(c) for c in columns}, old_run_reader(legacy, columns))


def test_the_accuracies_by_length_are_those_run_lengths_read(resumed):
    for version in ("version_0", "version_1"):
        logged = last_values(resumed / version)
        assert same({k: v for k, v in logged.items() if k.startswith("test/acc@")}, old_lengths_reader(resumed / version))
    assert last_values(resumed / "version_1")["test/acc@256"] == 0.125


def test_load_run_and_run_lengths_read_through_the_one_reader(tmp_path):
    """The analysis' readers of single runs, on a run folder with hparams.yaml beside its log:
    a trained run (version_0) and a tested one (version_1, accuracies at two lengths)."""
    from hybrids.lab.analysis import load_run, load_runs, run_lengths

    root = tmp_path / "runs"
    trained = write_log(root / "induction", 0, FIRST)
    tested = write_log(root / "induction", 1, TESTED)
    for version in (trained, tested):
        (version / "hparams.yaml").write_text("pattern: A\nd_model: 16\n")
    run = load_run(trained)
    assert (run.accuracy, run.params, run.state_size, run.seq_len, run.family) == (0.25, 5000, 2048, 64, "Attention")
    assert [r.name for r in load_runs(root, metric="test/acc")] == ["induction/version_1"]
    lengths = run_lengths(root)
    assert lengths["length"].tolist() == [64, 256] and lengths["acc"].tolist() == [0.75, 0.125]
    assert dict(zip(lengths["length"].map("test/acc@{}".format), lengths["acc"])) == old_lengths_reader(tested)


# -- sparse, missing and empty logs ----------------------------------------------------------------


def test_read_log_keeps_lightning_s_sparse_rows(resumed):
    table = read_log(resumed / "version_0")
    assert list(table.columns) == ["epoch", "params", "seq_len", "state_size", "step", "train/loss", "val/acc", "val/loss"]
    assert len(table) == 4 and table["val/acc"].notna().sum() == 1 and table["train/loss"].notna().sum() == 2
    assert all(dtype == float for dtype in table.dtypes)


@pytest.mark.parametrize("text", [None, "", "epoch,step,val/acc\n"])
def test_a_missing_or_empty_log_has_no_figures(tmp_path, text):
    version = tmp_path / "logs" / "version_0"
    version.mkdir(parents=True)
    if text is not None:
        (version / "metrics.csv").write_text(text)
    assert last_values(version) == {} and read_log(version).empty
    assert run_values(tmp_path / "logs") == {} and run_values(tmp_path / "nothing") == {}
    assert newest_version(tmp_path / "logs") == "logs/version_0" and newest_version(tmp_path / "nothing") is None


def test_versions_are_ordered_by_number_not_by_name(tmp_path):
    logs = tmp_path / "logs"
    for n in (2, 10, 9):
        write_log(logs, n, f"step,val/acc\n0,{n}\n")
    (logs / "version_x").mkdir()
    assert [p.name for p in versions(logs)] == ["version_10", "version_9", "version_2"]
    assert run_values(logs) == {"val/acc": 10.0} and newest_version(logs) == "logs/version_10"
