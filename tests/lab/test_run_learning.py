"""Whether a sweep's run finished learning, from the files it leaves (hybrids/lab/learning.py):
the validation curve over every log version, the criterion of its data module, its budget."""

import math
from pathlib import Path

import yaml

from hybrids.lab.learning import budget_of, criterion_for, learning_record, summary
from hybrids.lab.metrics_log import run_curve
from hybrids.learning_status import Criterion


def write_log(version: Path, rows: list[dict]) -> None:
    version.mkdir(parents=True)
    columns = sorted({key for row in rows for key in row})
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    (version / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_the_curve_joins_resumed_versions_by_step(tmp_path):
    logs = tmp_path / "logs"
    write_log(logs / "version_0", [{"step": 99, "val/acc": 0.2}, {"step": 150, "train/loss": 2.0},
                                   {"step": 199, "val/acc": 0.3}])
    # Resumed at step 199: validates 199 again (newer value wins), then goes on.
    write_log(logs / "version_1", [{"step": 199, "val/acc": 0.31}, {"step": 299, "val/acc": "nan"}])
    curve = run_curve(logs, "val/acc")
    assert curve[:2] == [(99, 0.2), (199, 0.31)]
    assert curve[2][0] == 299 and math.isnan(curve[2][1])  # the logged NaN stays
    assert run_curve(logs, "val/bpb") == []


def test_the_criterion_is_the_data_modules():
    assert criterion_for({"data": {"class_path": "hybrids.data.MQAR"}}) == Criterion()
    assert criterion_for({"data": {"class_path": "hybrids.data.ByteText"}}).metric == "val/bpb"
    assert criterion_for({"data": {"class_path": "no.such.Task"}}) == Criterion()


def test_the_budget_is_max_steps_else_epochs_of_batches_else_the_last_step():
    assert budget_of({"trainer": {"max_steps": 640}}, [(99, 0.1)]) == 640
    epochs = {"trainer": {"max_steps": -1, "max_epochs": 4, "accumulate_grad_batches": 2},
              "data": {"init_args": {"num_train_examples": 1000, "batch_size": 64}}}
    assert budget_of(epochs, [(99, 0.1)]) == 4 * 8  # 16 batches an epoch, 2 per optimiser step
    assert budget_of({"trainer": {"max_steps": -1}}, [(99, 0.1), (199, 0.2)]) == 199  # finished: all of it
    assert budget_of({"trainer": {"max_steps": -1}}, [(99, 0.1)], finished=False) is None  # stopped early
    assert budget_of({}, []) is None


def test_a_run_folder_gives_its_record(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"class_path": "hybrids.data.MQAR"}, "trainer": {"max_steps": 400}}))
    write_log(tmp_path / "logs" / "version_0",
              [{"step": s, "val/acc": a} for s, a in ((99, 0.3), (199, 0.6), (299, 0.995), (399, 1.0))])
    record = learning_record(tmp_path)
    # The log's steps are one below the optimiser steps done (Lightning logs step N - 1).
    assert record == {"status": "solved", "solved_step": 300, "best": 1.0, "gain": None, "metric": "val/acc",
                      "budget": 400}
    assert learning_record(tmp_path / "missing") is None


def test_a_points_runs_in_one_cell():
    assert summary(["solved", "solved"], [300, 500]) == "solved (2/2, steps 300-500)"
    assert summary(["solved"], [300]) == "solved (1/1, step 300)"
    assert summary(["solved", "still improving", "plateaued"], [300, None, None]) == \
        "solved 1/3, plateaued 1/3, still improving 1/3"
    assert summary([None, float("nan")]) == "-"
    assert summary(["solved", "solved", None], [300, 500, None]) == "solved 2/3, unknown 1/3"  # not "solved (2/2)"


def test_points_still_improving_are_drawn_hollow():
    import pandas as pd
    from matplotlib.collections import PathCollection
    from matplotlib.figure import Figure

    from hybrids.lab.analysis.plots import plot_accuracy_vs_state_size, plot_accuracy_vs_width

    points = pd.DataFrame({
        "family": ["a", "a"], "seq_len": [64, 64], "num_kv_pairs": [4, 4], "d_model": [32, 64],
        "state_size": [100, 200], "params": [1, 2], "test_acc_mean": [0.5, 0.9], "test_acc_min": [0.4, 0.8],
        "test_acc_max": [0.6, 1.0], "learning": ["still improving 2/2", "solved (2/2, steps 100-200)"],
    })
    for plot in (plot_accuracy_vs_width, plot_accuracy_vs_state_size):
        ax = plot(points, fig=Figure()).axes[0]
        hollow = [c for c in ax.collections if isinstance(c, PathCollection) and (c.get_facecolors()[:, :3] == 1).all()]
        assert len(hollow) == 1 and hollow[0].get_offsets().shape[0] == 1  # only the still-improving point
        assert "open: not finished learning" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_learning_curves_draw_each_seed_of_the_chosen_setting_only(tmp_path):
    """One line per finished run of the setting chosen at each point (not the other settings,
    not a pruned run), in its family's colour, with a dot at its solving step."""
    import pandas as pd
    from matplotlib.figure import Figure

    from hybrids.lab.analysis.curves import chosen_runs, plot_learning_curves

    rows = []
    for family, lr, seed, status, solved in (("a", 1e-3, 0, "done", 200), ("a", 1e-3, 1, "done", None),
                                             ("a", 3e-3, 0, "pruned", None), ("b", 1e-3, 0, "done", None)):
        run_dir = tmp_path / f"{family}-{lr}-{seed}"
        write_log(run_dir / "logs" / "version_0",
                  [{"step": s - 1, "val/acc": a} for s, a in ((100, 0.3), (200, 0.995 if solved else 0.5), (300, 0.6))])
        rows.append({"family": family, "task": "t", "d_model": 32, "lr": lr, "seed": seed, "status": status,
                     "solved_step": solved, "run_dir": str(run_dir), "axis_names": "family,task,d_model,lr,seed"})
    table = pd.DataFrame(rows)
    points = pd.DataFrame({"family": ["a", "b"], "task": ["t", "t"], "d_model": [32, 32], "lr": [1e-3, 1e-3]})
    chosen = chosen_runs(table, points)
    assert [len(runs) for _, runs in chosen] == [2, 1]  # a's two seeds at lr 1e-3; the pruned run is left out
    ax = plot_learning_curves(table, points, metric="val/acc", fig=Figure()).axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    dots = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert len(lines) == 3 and [list(line.get_xdata()) for line in lines][0] == [100, 200, 300]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [200]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["a", "b"]
