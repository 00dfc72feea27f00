"""Sweep analysis on hand-written status.json files: the run table, selection on validation only,
seed statistics, the Pareto frontier and the files ``hybrids plot`` writes."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from hybrids.lab.analysis import (
    candidates,
    pareto_frontier,
    points_text,
    seed_statistics,
    select_points,
    sweep_table,
)
from hybrids.cli.plot import plot_main


def write_run(
    sweep: Path,
    *,
    family: str = "mamba",
    mixers: str = "Mamba",
    d_model: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    seq_len: int = 64,
    kv: int | None = 4,
    val: float | None = 0.9,
    test: float | None = 0.9,
    status: str = "done",
    target: dict[str, Any] | None = None,
    extra_metrics: dict[str, float] | None = None,
    learning: str | None = None,
) -> Path:
    """One run's folder and status.json, as the sweep runner writes them (params and state size
    grow with the width, as they would)."""
    task = f"mqar{seq_len}x{kv}"
    name = f"{family}-d{d_model}-{task}-lr{lr:g}-s{seed}"
    failed = status == "failed"
    metrics = None if failed else {"val/acc": val, "val/loss": 1.0, "test/acc": test, "test/loss": 1.1}
    if metrics is not None and extra_metrics:
        metrics.update(extra_metrics)
    record = {
        "name": name, "sweep": "synthetic",
        "axes": {"family": family, "task": task, "d_model": d_model, "lr": lr, "seed": seed},
        "tuned": ["lr"], "family": mixers,
        "d_model": d_model, "seq_len": seq_len, "num_kv_pairs": kv, "vocab_size": 8192,
        "params": 1000 * d_model, "state_size": (75 if family == "mamba" else 40) * d_model,
        "target": target, "status": status, "metrics": metrics,
        "wall_s": 1.5, "attempts": 1, "error": "CUDA out of memory" if failed else None,
        "returncode": 1 if failed else 0, "log_dir": "logs/version_0",
    }
    if learning is not None:
        record["learning"] = {"status": learning, "solved_step": 100 if learning == "solved" else None}
    folder = sweep / name
    folder.mkdir(parents=True)
    # allow_nan: a diverged run's NaN reaches the file as the runner's json.dumps writes it.
    (folder / "status.json").write_text(json.dumps(record, allow_nan=True))
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """One point (mamba, d64): lr 1e-3 is best on validation on average, lr 1e-2 on test."""
    root = tmp_path / "sweep"
    for seed, (val, test) in enumerate([(0.90, 0.80), (0.94, 0.84), (0.92, 0.83)]):
        write_run(root, lr=1e-3, seed=seed, val=val, test=test)
    for seed, (val, test) in enumerate([(0.95, 0.99), (0.85, 0.98), (0.86, 0.97)]):
        write_run(root, lr=1e-2, seed=seed, val=val, test=test)
    return root


def only(points, **axes):
    mask = True
    for key, value in axes.items():
        mask = mask & (points[key] == value)
    rows = points[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_table_has_one_row_per_run_and_flat_columns(sweep):
    write_run(sweep, family="attn", mixers="Attention", lr=1e-3, seed=0, status="failed",
              target={"quantity": "params", "value": 64000, "achieved": 63000, "key": "d_model", "solved": 64},
              extra_metrics={"test/bpb": 1.2})
    write_run(sweep, family="attn", mixers="Attention", lr=1e-3, seed=1, extra_metrics={"test/bpb": 1.3})
    table = sweep_table(sweep)
    assert len(table) == 8
    for column in ["name", "sweep", "family", "mixers", "task", "d_model", "lr", "seed", "seq_len", "num_kv_pairs",
                   "params", "state_size", "target_quantity", "target_value", "achieved", "status", "val_acc",
                   "val_loss", "test_acc", "test_loss", "test_bpb", "wall_s", "error"]:
        assert column in table, column
    attn = table[table["family"] == "attn"].set_index("seed")
    assert attn.loc[0, "mixers"] == "Attention" and attn.loc[0, "status"] == "failed"
    assert attn.loc[0, "error"] == "CUDA out of memory" and math.isnan(attn.loc[0, "val_acc"])
    assert attn.loc[0, "target_value"] == 64000 and attn.loc[0, "achieved"] == 63000
    assert attn.loc[1, "test_bpb"] == 1.3
    assert set(table["tuned_axes"]) == {"lr"}


def test_unreadable_status_is_skipped_with_a_warning(sweep):
    broken = sweep / "half-written"
    broken.mkdir()
    (broken / "status.json").write_text('{"name": "half-wr')
    with pytest.warns(UserWarning, match="half-written"):
        table = sweep_table(sweep)
    assert len(table) == 6


def test_missing_keys_give_empty_cells(tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "status.json").write_text(json.dumps({"status": "running"}))
    table = sweep_table(tmp_path)
    assert list(table["name"]) == ["bare"] and table["val_acc"].isna().all()
    points = select_points(table)
    assert len(points) == 1 and points.loc[0, "n_seeds"] == 0 and points.loc[0, "n_pending"] == 1


def test_selection_uses_validation_only(sweep):
    point = only(select_points(sweep_table(sweep)), family="mamba", d_model=64)
    # lr 1e-2 has the best single validation run and every best test figure, but lr 1e-3 has
    # the best *mean* validation accuracy: it is chosen, and its own test figures are reported.
    assert point["lr"] == 1e-3
    assert point["val_acc_mean"] == pytest.approx((0.90 + 0.94 + 0.92) / 3)
    assert point["test_acc_mean"] == pytest.approx((0.80 + 0.84 + 0.83) / 3)
    assert point["n_settings"] == 2


def test_seed_statistics_match_hand_computed_values(sweep):
    point = only(select_points(sweep_table(sweep)), family="mamba", d_model=64)
    tests = [0.80, 0.84, 0.83]
    std = statistics.stdev(tests)  # ddof=1
    assert point["n_seeds"] == 3
    assert point["test_acc_std"] == pytest.approx(std)
    assert point["test_acc_sem"] == pytest.approx(std / math.sqrt(3))
    assert (point["test_acc_min"], point["test_acc_max"]) == (0.80, 0.84)
    one = seed_statistics([0.5, float("nan")])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["sem"])


def test_nan_validation_is_never_selected_and_failed_runs_are_counted(tmp_path):
    root = tmp_path / "sweep"
    write_run(root, lr=1e-2, seed=0, val=float("nan"), test=0.99)  # diverged
    write_run(root, lr=1e-2, seed=1, status="failed")
    write_run(root, lr=1e-3, seed=0, val=0.5, test=0.4)
    write_run(root, lr=1e-3, seed=1, status="failed")
    write_run(root, lr=1e-4, seed=0, status="running")
    point = select_points(sweep_table(root)).iloc[0]
    assert point["lr"] == 1e-3 and point["test_acc_mean"] == 0.4 and point["n_seeds"] == 1
    assert (point["n_runs"], point["n_failed"], point["n_diverged"], point["n_pending"]) == (5, 2, 1, 1)
    assert math.isnan(point["test_acc_std"])


def test_a_setting_with_a_diverged_seed_loses_to_one_whose_seeds_all_finished(tmp_path):
    # lr 1e-2: one seed diverged, the other has the best validation figure of all; selecting it
    # on that seed alone would hide the divergence.
    write_run(tmp_path, lr=1e-2, seed=0, val=float("nan"), test=0.2)
    write_run(tmp_path, lr=1e-2, seed=1, val=0.99, test=0.99)
    write_run(tmp_path, lr=1e-3, seed=0, val=0.9, test=0.9)
    write_run(tmp_path, lr=1e-3, seed=1, val=0.8, test=0.8)
    point = select_points(sweep_table(tmp_path)).iloc[0]
    assert point["lr"] == 1e-3 and point["n_seeds"] == 2 and point["test_acc_mean"] == pytest.approx(0.85)


def test_point_with_only_nan_validation_reports_nothing(tmp_path):
    write_run(tmp_path, lr=1e-2, val=float("nan"), test=0.9)
    point = select_points(sweep_table(tmp_path)).iloc[0]
    assert point["lr"] is None and point["n_seeds"] == 0 and math.isnan(point["test_acc_mean"])


def test_ties_go_to_the_lower_learning_rate(tmp_path):
    for lr in (3e-3, 1e-3, 1e-2):
        write_run(tmp_path, lr=lr, seed=0, val=0.75, test={1e-3: 0.1, 3e-3: 0.2, 1e-2: 0.3}[lr])
    point = select_points(sweep_table(tmp_path)).iloc[0]
    assert point["lr"] == 1e-3 and point["test_acc_mean"] == 0.1


@pytest.mark.parametrize("learning, flagged", [("still improving", True), ("plateaued", True), ("solved", False)])
def test_a_choice_at_the_end_of_the_grid_is_flagged_unless_solved(tmp_path, learning, flagged):
    # The highest of three learning rates wins on validation: the best may lie beyond the grid.
    for lr, val in ((1e-3, 0.5), (3e-3, 0.6), (1e-2, 0.7)):
        write_run(tmp_path, lr=lr, val=val, learning=learning)
    points = select_points(sweep_table(tmp_path))
    assert points.loc[0, "lr"] == 1e-2
    assert points.loc[0, "grid_edge"] == ("lr at the grid's top" if flagged else "")
    assert ("lr at the grid's top" in points_text(points, tuned=["lr"])) is flagged


def test_a_choice_inside_the_grid_or_among_two_values_is_not_flagged(tmp_path):
    for lr, val in ((1e-3, 0.5), (3e-3, 0.7), (1e-2, 0.6)):
        write_run(tmp_path / "inside", lr=lr, val=val, learning="plateaued")
    for lr, val in ((1e-3, 0.5), (3e-3, 0.7)):
        write_run(tmp_path / "two", lr=lr, val=val, learning="plateaued")
    for lr, val in ((1e-3, 0.7), (3e-3, 0.6), (1e-2, 0.5)):
        write_run(tmp_path / "bottom", lr=lr, val=val, learning="still improving")
    assert select_points(sweep_table(tmp_path / "inside")).loc[0, "grid_edge"] == ""
    assert select_points(sweep_table(tmp_path / "two")).loc[0, "grid_edge"] == ""
    assert select_points(sweep_table(tmp_path / "bottom")).loc[0, "grid_edge"] == "lr at the grid's bottom"


def test_min_mode_selects_the_lowest_validation_bpb(tmp_path):
    # lr 1e-2 has the lowest validation bpb; lr 1e-3 the lowest test bpb, which must not matter.
    for lr, val, test in ((1e-3, 1.4, 1.1), (1e-2, 1.2, 1.3)):
        for seed in (0, 1):
            write_run(tmp_path, lr=lr, seed=seed, extra_metrics={"val/bpb": val + seed / 100, "test/bpb": test})
    point = select_points(sweep_table(tmp_path), metric="val/bpb", mode="min", report="test/bpb").iloc[0]
    assert point["lr"] == 1e-2 and point["test_bpb_mean"] == pytest.approx(1.3)
    flipped = select_points(sweep_table(tmp_path), metric="val/bpb", mode="max", report="test/bpb").iloc[0]
    assert flipped["lr"] == 1e-3


def test_min_mode_ties_and_unknown_metrics(sweep):
    points = select_points(sweep_table(sweep), metric="val/loss", mode="min", report="test/loss")
    assert len(points) == 1 and points.loc[0, "lr"] == 1e-3  # equal losses: the tie rule
    with pytest.raises(ValueError, match="val/bpb"):
        select_points(sweep_table(sweep), metric="val/bpb")


def test_points_are_one_per_family_width_and_task(tmp_path):
    for family, mixers in (("mamba", "Mamba"), ("attn", "Attention")):
        for d_model in (32, 64):
            for seq_len in (64, 128):
                for lr in (1e-3, 1e-2):
                    write_run(tmp_path, family=family, mixers=mixers, d_model=d_model, seq_len=seq_len, lr=lr,
                              val=0.5 + lr * 10, test=0.5)
    table = sweep_table(tmp_path)
    points = select_points(table)
    assert len(points) == 8 and set(points["lr"]) == {1e-2}
    assert list(points["family"][:4]) == ["attn"] * 4  # sorted: family, seq_len, kv, width
    assert list(points["d_model"][:2]) == [32, 64] and list(points["seq_len"][:2]) == [64, 64]
    assert len(candidates(table)) == 16
    text = points_text(points)
    assert "0.5000 ± -" in text and "[0.5000, 0.5000]" in text and "Mamba" not in text


def test_pareto_frontier_on_a_hand_made_set():
    state = [100, 200, 200, 400, 800, 50, 800, float("nan")]
    acc = [0.50, 0.70, 0.60, 0.65, 0.90, 0.50, 0.90, 1.0]
    # 50 (0.5) dominates 100 (0.5); 200 at 0.6 and 400 at 0.65 are beaten by 200 at 0.7; of the
    # equal (800, 0.9) points one is kept; NaN is never on the frontier.
    assert pareto_frontier(state, acc) == [5, 1, 4]
    losses = [3.0, 2.0, 2.5, 1.0]
    assert pareto_frontier([1, 2, 3, 4], losses, higher_is_better=False) == [0, 1, 3]


def test_plot_command_writes_figures_and_tables(tmp_path, capsys):
    root = tmp_path / "sweep"
    for family, mixers in (("mamba", "Mamba"), ("attn", "Attention")):
        for d_model in (32, 64, 128):
            for seq_len, kv in ((64, 4), (128, 8)):
                for seed in (0, 1):
                    write_run(root, family=family, mixers=mixers, d_model=d_model, seq_len=seq_len, kv=kv,
                              seed=seed, val=0.3 + d_model / 200, test=0.2 + d_model / 200 + seed / 100)
    write_run(root, family="attn", mixers="Attention", d_model=32, seq_len=64, kv=4, lr=1e-2, status="failed")
    out = tmp_path / "out"
    assert plot_main([str(root), "--out", str(out)]) == 0
    for name in ("accuracy_vs_width", "accuracy_vs_state_size", "learning_curves"):
        png, pdf = (out / f"{name}.png").read_bytes(), (out / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
        assert pdf.startswith(b"%PDF")
    import pandas as pd

    assert len(pd.read_csv(out / "runs.csv")) == 25
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 12 and points["n_failed"].sum() == 1
    printed = capsys.readouterr().out
    row = next(line.split() for line in printed.splitlines() if line.startswith("attn") and " 32 " in line)
    assert row[:6] == ["attn", "64", "4", "32", f"{40 * 32:,}", f"{1000 * 32:,}"]
    assert row[6] == "0.001" and row[7] == f"{0.2 + 32 / 200 + 0.005:.4f}" and row[-4:] == ["2", "(1", "failed)", "-"]  # no logs: nothing to tell learning from
    # The default folder, and a missing one.
    markdown = (out / "points.md").read_text().splitlines()
    assert markdown[0].startswith("| family | seq_len | kv | width |") and len(markdown) == 2 + 12
    assert markdown[2].count("|") == markdown[0].count("|")
    assert plot_main([str(root)]) == 0 and (root / "plots" / "points.csv").exists()
    assert plot_main([str(tmp_path / "nowhere")]) == 2


def test_plot_reads_several_sweep_folders_as_one_table(tmp_path, capsys):
    first, second = tmp_path / "mqar_cpu", tmp_path / "mqar_cpu_linear"
    for seed in (0, 1):
        write_run(first, family="attn", mixers="Attention", seed=seed)
        write_run(second, family="mamba2", mixers="Mamba2", seed=seed)
    with pytest.raises(SystemExit):  # where would the shared plots go?
        plot_main([str(first), str(second)])
    out = tmp_path / "both"
    assert plot_main([str(first), str(second), "--out", str(out)]) == 0
    import pandas as pd

    points = pd.read_csv(out / "points.csv")
    assert sorted(points["family"]) == ["attn", "mamba2"] and set(points["n_seeds"]) == {2}
    assert plot_main([str(first), str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_folders_not_in_the_manifest_are_left_out(tmp_path):
    """An edited sweep file leaves folders of settings it no longer has; the sweep's manifest
    lists what it expands to now, and only those enter the table (and so the selection)."""
    kept = write_run(tmp_path, lr=1e-3, val=0.5, test=0.5)
    dropped = write_run(tmp_path, lr=1e-2, val=0.99, test=0.99)
    (tmp_path / "manifest.json").write_text(json.dumps({"sweep": "synthetic", "runs": [kept.name]}))
    with pytest.warns(UserWarning, match="not in the sweep file any more"):
        table = sweep_table(tmp_path)
    assert list(table["name"]) == [kept.name] and dropped.name not in set(table["name"])
    assert select_points(table).iloc[0]["lr"] == 1e-3


def test_eleven_families_get_eleven_colours():
    import pandas as pd

    from hybrids.lab.analysis.plots import _colours

    points = pd.DataFrame({"family": [f"f{i:02d}" for i in range(11)]})
    assert len(set(_colours(points).values())) == 11


def test_accuracy_by_length_reports_the_setting_chosen_on_validation(tmp_path):
    from hybrids.lab.analysis import accuracy_by_length, plot_accuracy_vs_length

    root = tmp_path / "induction"
    # lr 1e-3 wins on validation; its accuracy falls with length. lr 1e-2 is better at length
    # 1024 on test, which must not matter.
    for seed in (0, 1):
        write_run(root, lr=1e-3, seed=seed, seq_len=256, kv=None, val=0.99, test=1.0,
                  extra_metrics={"test/acc@256": 1.0, "test/acc@1024": 0.5 + 0.1 * seed})
        write_run(root, lr=1e-2, seed=seed, seq_len=256, kv=None, val=0.5, test=0.5,
                  extra_metrics={"test/acc@256": 0.5, "test/acc@1024": 0.9})
    frame = accuracy_by_length(sweep_table(root))
    assert list(frame["length"]) == [256, 1024]
    assert list(frame["lr"]) == [1e-3, 1e-3]
    assert frame["acc_mean"].tolist() == pytest.approx([1.0, 0.55])
    assert frame["acc_min"].tolist() == pytest.approx([1.0, 0.5]) and frame["acc_max"].tolist() == pytest.approx([1.0, 0.6])
    assert (frame["n_seeds"] == 2).all()
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_accuracy_vs_length(frame)
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 1
    with pytest.raises(ValueError, match="test/acc@L"):
        accuracy_by_length(sweep_table(root).drop(columns=["test_acc@256", "test_acc@1024"]))
