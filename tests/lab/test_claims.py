"""Published orderings checked against selected points (hybrids.lab.analysis.claims): each rule's
verdicts on hand-made points, the shipped claim sets against the shipped sweep files, and
``hybrids plot --claims``."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hybrids.cli.plot import CLAIM_SETS, plot_main
from hybrids.lab.analysis.claims import (
    NOT_REPRODUCED, NOT_RUN, NOT_TESTABLE, REPRODUCED, UNDECIDED, Results, all_of, at_least, beats, check,
    claims_markdown, extrapolates, fails_beyond, grows, mad_score_at_least, on_frontier, solves,
)
from hybrids.lab.analysis.mad_score import MAD_TASKS
from hybrids.lab.analysis.published import CLAIMS
from hybrids.lab.sweeps import expand, load_sweep
from helpers import ROOT
from test_sweep_analysis import write_run


def point(family, d_model=64, mean=0.5, sem=0.01, learning="plateaued", seeds=3, pending=0, state=1000, seq_len=64):
    return {"family": family, "d_model": d_model, "state_size": state, "seq_len": seq_len,
            "test_acc_mean": mean, "test_acc_sem": sem, "n_seeds": seeds, "n_pending": pending,
            "learning_statuses": ",".join([learning] * seeds)}


def verdict(test, *points, lengths=None):
    return test(Results(pd.DataFrame(list(points)), lengths=lengths)).outcome


def test_beats_needs_a_gap_beyond_the_noise_and_a_loser_that_finished():
    a, b = point("a", mean=0.90), point("b", mean=0.50)
    assert verdict(beats("a", "b"), a, b) == REPRODUCED
    # The loser still improving could catch up; the winner still improving only helps the claim.
    assert verdict(beats("a", "b"), a, {**b, "learning_statuses": "plateaued,still improving,plateaued"}) == UNDECIDED
    assert verdict(beats("a", "b"), {**a, "learning_statuses": "still improving," * 2 + "solved"}, b) == REPRODUCED
    # Within the noise: 2 sqrt(0.01^2 + 0.01^2) = 0.028.
    close = point("b", mean=0.88)
    assert verdict(beats("a", "b"), a, close) == NOT_REPRODUCED
    assert verdict(beats("a", "b"), {**a, "learning_statuses": "still improving,plateaued,plateaued"}, close) == UNDECIDED
    assert verdict(beats("a", "b"), point("a", mean=0.40), b) == NOT_REPRODUCED


def test_both_solved_leaves_no_room_for_a_gap():
    a, b = point("a", mean=0.999, sem=0.0, learning="solved"), point("b", mean=0.995, sem=0.0, learning="solved")
    assert verdict(beats("a", "b"), a, b) == NOT_TESTABLE
    assert verdict(at_least("a", "b"), a, b) == REPRODUCED and verdict(at_least("b", "a"), a, b) == NOT_REPRODUCED


def test_at_least_tolerates_the_noise():
    a, b = point("a", mean=0.78), point("b", mean=0.79)
    assert verdict(at_least("a", "b"), a, b) == REPRODUCED
    assert verdict(at_least("a", "b"), point("a", mean=0.70), b) == NOT_REPRODUCED
    assert verdict(at_least("a", "b"), point("a", mean=0.70, learning="still improving"), b) == UNDECIDED


def test_missing_pending_and_ambiguous_rows():
    a = point("a", mean=0.9)
    assert verdict(beats("a", "b"), a) == NOT_RUN
    assert verdict(beats("a", "b"), a, point("b", pending=2)) == NOT_RUN
    assert verdict(beats("a", "b", d_model=64), a, point("b", d_model=128)) == NOT_RUN
    with pytest.raises(ValueError, match="d_model"):
        verdict(beats("a", "b"), a, point("b"), point("b", d_model=128))


def test_rows_are_found_by_the_base_axis_too():
    frame = pd.DataFrame([{**point("Mamba", mean=0.99, learning="solved"), "base": "mamba"},
                          {**point("S4D", mean=0.5), "base": "s4d"}])
    assert beats("mamba", "s4d")(Results(frame)).outcome == REPRODUCED


def test_solves_and_grows():
    assert verdict(solves("a"), point("a", learning="solved")) == REPRODUCED
    assert verdict(solves("a"), point("a")) == NOT_REPRODUCED
    assert verdict(solves("a"), point("a", learning="still improving")) == UNDECIDED
    low, high = point("a", 64, mean=0.3), point("a", 128, mean=0.6)
    assert verdict(grows("a", "d_model", 64, 128), low, high) == REPRODUCED
    assert verdict(grows("a", "d_model", 64, 128), {**low, "learning_statuses": "solved,solved,solved"}, high) == NOT_TESTABLE


def test_all_of_reports_the_worst_part():
    a, b, c = point("a", mean=0.9), point("b", mean=0.5), point("c", mean=0.95)
    assert verdict(all_of(beats("a", "b"), beats("c", "b")), a, b, c) == REPRODUCED
    assert verdict(all_of(beats("a", "b"), beats("a", "c")), a, b, c) == NOT_REPRODUCED
    assert verdict(all_of(beats("a", "b"), beats("a", "z")), a, b, c) == NOT_RUN


def test_frontier_is_broken_by_a_better_row_with_no_more_state():
    based = point("based", mean=0.9, state=2000)
    assert verdict(on_frontier("based", ["x"]), based, point("x", mean=0.95, state=4000)) == REPRODUCED
    assert verdict(on_frontier("based", ["x"]), based, point("x", mean=0.95, state=1000)) == NOT_REPRODUCED
    assert verdict(on_frontier("based", ["x"]), based, point("x", mean=0.5, state=1000)) == REPRODUCED
    assert verdict(on_frontier("based", ["x", "y"]), based, point("x", mean=0.5, state=1000)) == NOT_RUN, \
        "a family not run yet could be ahead"


def lengths(family, accs, seq_len=256):
    return [{"family": family, "seq_len": seq_len, "length": seq_len * 2 ** i, "acc_mean": a} for i, a in enumerate(accs)]


def test_length_claims():
    mamba, attention = point("mamba", learning="solved", seq_len=256), point("attention", learning="solved", seq_len=256)
    frame = pd.DataFrame(lengths("mamba", [1.0, 1.0, 0.995, 0.99]) + lengths("attention", [1.0, 0.99, 0.4, 0.1]))
    assert verdict(extrapolates("mamba", 8), mamba, lengths=frame) == REPRODUCED
    assert verdict(extrapolates("mamba", 16), mamba, lengths=frame) == NOT_RUN, "tested to 8x only"
    assert verdict(extrapolates("attention", 4), attention, lengths=frame) == NOT_REPRODUCED
    assert verdict(fails_beyond("attention", 2), attention, lengths=frame) == REPRODUCED
    assert verdict(fails_beyond("mamba", 2), mamba, lengths=frame) == NOT_REPRODUCED
    # A model that never learnt the task has nothing to lose beyond its training length.
    assert verdict(fails_beyond("attention", 2), point("attention", mean=0.06, seq_len=256), lengths=frame) == NOT_REPRODUCED
    assert verdict(extrapolates("mamba", 8), mamba) == NOT_RUN, "no length figures"
    frame.loc[frame["length"] == 2048, "acc_mean"] = math.nan  # skipped for memory
    assert verdict(extrapolates("mamba", 8), mamba, lengths=frame) == NOT_RUN


def _points_of(sweep_file: str) -> list[tuple[str, int]]:
    """(family, width) of every point of a shipped sweep file (base files stand for families)."""
    plans = expand(load_sweep(ROOT / "configs" / "sweeps" / sweep_file))
    return sorted({(p.axes.get("family", p.axes.get("base")), p.axes.get("d_model", 64)) for p in plans})


@pytest.mark.parametrize("name, sweep_file", [
    ("mqar", "mqar_tuned_cpu.yaml"),
    ("selective_copying", "selective_copying_tuned_cpu.yaml"),
    ("induction", "induction_tuned_cpu.yaml"),
])
def test_every_shipped_claim_is_decided_by_its_sweeps_families(name, sweep_file):
    # Every point of the sweep present, finished and apart from the others: no claim may say
    # "not run", which would mean it names a family or width the sweep does not train.
    rows = [point(f, d_model=w, mean=0.3 + 0.01 * i + w / 1000, state=100 * (i + 1) * w, seq_len=256)
            for i, (f, w) in enumerate(_points_of(sweep_file))]
    frame = pd.DataFrame(rows)
    by_length = pd.DataFrame([{**r, "length": 256 * 2 ** k, "acc_mean": 0.5} for r in rows for k in range(7)])
    for claim, result in check(CLAIMS[name], Results(frame, lengths=by_length)):
        assert result.outcome != NOT_RUN, (claim.statement, result.evidence)
    assert sorted(CLAIMS) == sorted(CLAIM_SETS)


def test_plot_writes_the_claims(tmp_path, capsys):
    root = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(root, family="gla", mixers="LinearAttention", seed=seed, val=0.9, test=0.95 + seed / 100)
        write_run(root, family="retnet", mixers="LinearAttention", seed=seed, val=0.5, test=0.25 + seed / 100)
    out = tmp_path / "out"
    assert plot_main([str(root), "--out", str(out), "--claims", "mqar"]) == 0
    written = (out / "claims.md").read_text()
    assert written.startswith("| source | claim | verdict | figures |")
    # No learning records in these hand-written runs: neither row is known to have finished.
    assert "GLA beats RetNet at width 64 | **undecided** |" in written
    assert "GLA beats RetNet at width 128 | **not run** |" in written
    assert "published orderings (mqar):" in capsys.readouterr().out
    assert claims_markdown([]).count("\n") == 1
    # Two rows per family (another axis than width tells them apart): the claims cannot choose.
    for seed in (0, 1):
        write_run(root, family="gla", mixers="LinearAttention", seed=seed, seq_len=128, kv=8)
    assert plot_main([str(root), "--out", str(out), "--claims", "mqar"]) == 2
    assert "error: claims:" in capsys.readouterr().err


def mad_point(family, task, setting, mean, sem=0.01, learning="plateaued", seeds=2, pending=0):
    return {"family": family, "d_model": 64, task: setting, "state_size": 1000, "params": 5000,
            "test_acc_mean": mean, "test_acc_sem": sem, "n_seeds": seeds, "n_pending": pending,
            "learning_statuses": ",".join([learning] * seeds)}


def mad_points(family, mean, learning="plateaued", tasks=MAD_TASKS, **overrides):
    """One setting per task (two for recall) at ``mean``; ``overrides[task]`` replaces a task's mean."""
    rows = []
    for task in tasks:
        for setting in (("base", "vocab64") if task == "recall" else ("base",)):
            rows.append(mad_point(family, task, setting, overrides.get(task, mean), learning=learning))
    return rows


def test_mad_score_claims_compare_the_mean_over_tasks():
    hybrid, part = mad_points("hybrid", 0.80), mad_points("part", 0.70)
    assert verdict(mad_score_at_least("hybrid", "part"), *hybrid, *part) == REPRODUCED
    # The part ahead on one task only (recall 1.0): (1.0 + 5 * 0.70) / 6 = 0.75 overall, behind.
    ahead_once = mad_points("part", 0.70, recall=1.0)
    assert verdict(mad_score_at_least("hybrid", "part"), *hybrid, *ahead_once) == REPRODUCED
    behind = mad_points("hybrid", 0.60)
    assert verdict(mad_score_at_least("hybrid", "part"), *behind, *part) == NOT_REPRODUCED
    # On one task: the part ahead there although behind overall.
    assert verdict(mad_score_at_least("hybrid", "part", task="recall"), *hybrid, *ahead_once) == NOT_REPRODUCED
    # The hybrid behind while a task of it was still learning: more steps could move it.
    still = mad_points("hybrid", 0.60, learning="still improving")
    assert verdict(mad_score_at_least("hybrid", "part"), *still, *part) == UNDECIDED
    result = mad_score_at_least("hybrid", "part")(Results(pd.DataFrame([*still, *part])))
    assert "hybrid MAD score (mean of the six tasks) 0.6000" in result.evidence and "not finished 6/6" in result.evidence


def test_mad_score_claims_wait_for_every_task_and_pending_run():
    part = mad_points("part", 0.70)
    five = mad_points("hybrid", 0.80, tasks=MAD_TASKS[:-1])
    result = mad_score_at_least("hybrid", "part")(Results(pd.DataFrame([*five, *part])))
    assert result.outcome == NOT_RUN and "no score on memorization" in result.evidence
    # One task is enough for a per-task claim.
    assert verdict(mad_score_at_least("hybrid", "part", task="recall"), *five, *part) == REPRODUCED
    pending = mad_points("hybrid", 0.80)
    pending[0]["n_pending"] = 1
    result = mad_score_at_least("hybrid", "part")(Results(pd.DataFrame([*pending, *part])))
    assert result.outcome == NOT_RUN and "1 run(s) pending" in result.evidence
    assert verdict(mad_score_at_least("absent", "part"), *part) == NOT_RUN
    # Two widths of a family: the claim cannot tell which to compare.
    wide = [{**row, "d_model": 128} for row in mad_points("hybrid", 0.9)]
    with pytest.raises(ValueError, match="several d_models"):
        mad_score_at_least("hybrid", "part")(Results(pd.DataFrame([*mad_points("hybrid", 0.8), *wide, *part])))


def test_every_shipped_mad_claim_is_decided_by_the_mad_sweep():
    plans = expand(load_sweep(ROOT / "configs" / "sweeps" / "mad_cpu.yaml"))
    settings = sorted({(p.axes["family"], task, p.axes[task]) for p in plans for task in MAD_TASKS if task in p.axes})
    rows = [mad_point(f, task, setting, 0.3 + 0.005 * i) for i, (f, task, setting) in enumerate(settings)]
    for claim, result in check(CLAIMS["mad"], Results(pd.DataFrame(rows))):
        assert result.outcome != NOT_RUN, (claim.statement, result.evidence)


def test_a_single_seed_setting_keeps_the_other_settings_spread():
    # sem 0.1 per setting: the overall noise (0.115) covers a gap of 0.10, so "at least" holds.
    part = [{**row, "test_acc_sem": 0.1} for row in mad_points("part", 0.80)]
    hybrid = [{**row, "test_acc_sem": 0.1} for row in mad_points("hybrid", 0.70)]
    assert verdict(mad_score_at_least("hybrid", "part"), *hybrid, *part) == REPRODUCED
    # One of the hybrid's settings lost a seed (no spread): it counts 0, the other settings' spread
    # stays, and the verdict does not flip on the lost seed (it would with the whole row at 0).
    hybrid[0] = {**hybrid[0], "test_acc_sem": math.nan, "n_seeds": 1, "learning_statuses": "plateaued"}
    result = mad_score_at_least("hybrid", "part")(Results(pd.DataFrame([*hybrid, *part])))
    assert result.outcome == REPRODUCED, result.evidence
    # A per-task claim waits only for its task's pending runs.
    pending = mad_points("hybrid", 0.9)
    next(r for r in pending if "memorization" in r)["n_pending"] = 2
    assert verdict(mad_score_at_least("hybrid", "part", task="recall"), *pending, *part) == REPRODUCED
    assert verdict(mad_score_at_least("hybrid", "part"), *pending, *part) == NOT_RUN
