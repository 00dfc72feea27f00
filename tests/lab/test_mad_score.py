"""MAD scores from hand-written runs of a MAD sweep: the choice on validation, the mean over a
task's settings, missing settings and unfinished runs said, and what hybrids plot writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from hybrids.cli.plot import plot_main
from hybrids.lab.analysis import select_points, sweep_table
from hybrids.lab.analysis.mad_score import MAD_TASKS, mad_markdown, mad_scores, mad_tasks_in


def write_mad_run(sweep: Path, family: str, task: str, setting: str, lr: float, seed: int, val: float, test: float,
                  learning: str = "solved", state: int = 1000) -> None:
    name = f"{family}-{task}-{setting}-lr{lr:g}-s{seed}"
    record = {
        "name": name, "sweep": "mad", "axes": {"family": family, task: setting, "lr": lr, "seed": seed},
        "tuned": ["lr"], "family": family, "d_model": 64, "seq_len": 128, "vocab_size": 16,
        "params": 50_000, "state_size": state, "status": "done",
        "metrics": {"val/acc": val, "val/loss": 1 - val, "test/acc": test, "test/loss": 1 - test},
        "wall_s": 1.0, "attempts": 1, "error": None, "returncode": 0, "log_dir": "logs/version_0",
        "learning": {"status": learning, "solved_step": 100 if learning == "solved" else None},
    }
    folder = sweep / name
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps(record))


@pytest.fixture
def mad_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "mad"
    for seed in (0, 1):
        # recall: two settings. lr 1e-3 wins on validation although lr 1e-4 tests higher.
        for setting, (val, test) in (("base", (0.99, 0.98)), ("vocab64", (0.80, 0.70 + 0.02 * seed))):
            write_mad_run(root, "attention", "recall", setting, 1e-3, seed, val, test,
                          learning="solved" if setting == "base" else "still improving", state=2000 * (1 + (setting == "vocab64")))
            write_mad_run(root, "attention", "recall", setting, 1e-4, seed, val - 0.1, 1.0, learning="plateaued")
        write_mad_run(root, "mamba", "recall", "base", 1e-3, seed, 0.9, 0.9, learning="plateaued")
        write_mad_run(root, "mamba", "recall", "vocab64", 1e-3, seed, 0.5, 0.4, learning="plateaued")
        write_mad_run(root, "attention", "memorization", "base", 1e-3, seed, 0.6, 0.5, learning="plateaued")
    return root


def test_a_task_score_is_the_mean_over_its_settings_of_the_validation_chosen_runs(mad_sweep):
    points = select_points(sweep_table(mad_sweep))
    assert mad_tasks_in(points) == ["recall", "memorization"]
    scores = mad_scores(points).set_index(["family", "task"])
    assert "d_model" in mad_scores(points).columns  # one width: a score per family and width
    attention = scores.loc[("attention", "recall")]
    # base: 0.98 (lr 1e-3 chosen on validation, not lr 1e-4's 1.0 on test); vocab64: (0.70 + 0.72) / 2.
    assert attention["score"] == pytest.approx((0.98 + 0.71) / 2)
    assert attention["score_sem"] == pytest.approx(math.sqrt(0 + 0.01**2) / 2)
    assert (attention["settings"], attention["missing"], attention["not_finished"], attention["solved"]) == (2, 0, 1, 1)
    assert attention["state_size"] == "2,000-4,000" and attention["per_setting"] == "base=0.980, vocab64=0.710"
    assert scores.loc[("mamba", "recall")]["score"] == pytest.approx(0.65)
    assert scores.loc[("mamba", "recall")]["not_finished"] == 0
    text = mad_markdown(mad_scores(points))
    header, _, attention_row, mamba_row = text.split("\n")[:4]
    assert header == "| family | d_model | recall | memorization | overall |"
    assert attention_row == "| attention | 64 | 0.845 ± 0.005 (1/2 not finished) | 0.500 ± 0.000 | - |"
    assert mamba_row == "| mamba | 64 | 0.650 ± 0.000 | not run | - |"


def test_a_missing_setting_leaves_the_score_out(mad_sweep):
    points = select_points(sweep_table(mad_sweep))
    failed = points.copy()
    failed.loc[(failed["family"] == "mamba") & (failed["recall"] == "vocab64"), "test_acc_mean"] = math.nan
    row = mad_scores(failed).set_index(["family", "task"]).loc[("mamba", "recall")]
    assert math.isnan(row["score"]) and row["missing"] == 1
    assert "- (1/2 missing)" in mad_markdown(mad_scores(failed))
    # A setting another family ran but this one did not (never run) counts as missing too.
    absent = points[~((points["family"] == "mamba") & (points["recall"] == "vocab64"))]
    row = mad_scores(absent).set_index(["family", "task"]).loc[("mamba", "recall")]
    assert math.isnan(row["score"]) and (row["missing"], row["settings"], row["not_finished"]) == (1, 2, 1)
    assert row["per_setting"] == "base=0.900, vocab64=-"


def test_one_seed_gives_no_spread_and_duplicate_points_are_refused(mad_sweep):
    points = select_points(sweep_table(mad_sweep))
    points.loc[points["family"] == "mamba", "test_acc_sem"] = math.nan  # a single finished seed
    row = mad_scores(points).set_index(["family", "task"]).loc[("mamba", "recall")]
    assert math.isnan(row["score_sem"]) and row["score"] == pytest.approx(0.65)
    assert "| mamba | 64 | 0.650 ± n/a |" in mad_markdown(mad_scores(points))
    with pytest.raises(ValueError, match="several points at one setting"):
        mad_scores(pd.concat([points, points[points["family"] == "mamba"]]))


def test_the_overall_score_needs_all_six_tasks():
    rows = [{"family": "f", "task": t, "score": 0.5 + i / 10, "score_sem": 0.0, "settings": 1, "missing": 0,
             "not_finished": 0, "still_improving": 0, "solved": 1, "state_size": "1", "params": "1",
             "per_setting": "base=1"} for i, t in enumerate(MAD_TASKS)]
    assert mad_markdown(pd.DataFrame(rows)).split("\n")[2].endswith("| 0.750 |")
    assert mad_markdown(pd.DataFrame(rows[:5])).split("\n")[2].endswith("| - |")


def test_plot_writes_the_mad_scores(mad_sweep, capsys):
    assert plot_main([str(mad_sweep)]) == 0
    out = capsys.readouterr().out
    assert "MAD scores" in out and "| attention | 64 | 0.845" in out
    assert (mad_sweep / "plots" / "mad_scores.md").read_text().startswith("| family | d_model | recall | memorization |")
    assert "recall: vocab64" in (mad_sweep / "plots" / "points.md").read_text()
