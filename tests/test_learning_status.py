"""The rule that says whether a run finished learning (hybrids/learning_status.py), case by
case: solved at the first validation at the threshold, plateaued when the last quarter gained less
than the margin, still improving otherwise, too short to tell without validations on both sides."""

import math

import pytest

from hybrids.learning_status import (
    IMPROVING, PLATEAUED, SOLVED, TOO_SHORT, Criterion, learning_status,
)


def curve(values, every=100):
    return [(every * (i + 1), v) for i, v in enumerate(values)]


def test_solved_at_the_first_validation_at_the_threshold():
    status = learning_status(curve([0.2, 0.6, 0.991, 0.98, 1.0]), budget=1000)
    assert (status.status, status.solved_step, status.best) == (SOLVED, 300, 1.0)
    assert str(status) == "solved at step 300"


def test_plateaued_when_the_last_quarter_gains_less_than_the_margin():
    # budget 1000: the last quarter is steps > 750; best before 0.52 (step 700), after 0.525.
    status = learning_status(curve([0.3, 0.45, 0.5, 0.51, 0.52, 0.515, 0.52, 0.521, 0.525, 0.52]), budget=1000)
    assert status.status == PLATEAUED
    assert status.gain == pytest.approx(0.005)


def test_still_improving_when_the_last_quarter_gains_the_margin():
    status = learning_status(curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]), budget=1000)
    assert status.status == IMPROVING and status.gain == pytest.approx(0.2)
    assert str(status) == "still improving"


def test_a_fall_in_the_last_quarter_is_not_a_gain():
    status = learning_status(curve([0.5, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.6, 0.5, 0.4]), budget=1000)
    assert status.status == PLATEAUED and status.gain == 0


def test_too_short_to_tell_without_validations_on_both_sides():
    assert learning_status([(1000, 0.5)], budget=1000).status == TOO_SHORT
    assert learning_status([(100, 0.5), (200, 0.6)], budget=1000).status == TOO_SHORT
    assert learning_status([], budget=1000).status == TOO_SHORT


def test_lower_is_better_without_a_threshold():
    bpb = Criterion(metric="val/bpb", mode="min", threshold=None, margin=0.01)
    assert learning_status(curve([3.0, 2.5, 2.2, 2.0]), budget=400, criterion=bpb).status == IMPROVING
    assert learning_status(curve([3.0, 2.5, 2.2, 2.195]), budget=400, criterion=bpb).status == PLATEAUED
    assert learning_status(curve([3.0, 0.0]), budget=200, criterion=bpb).status != SOLVED  # no threshold


def test_diverged_validations_are_never_the_best():
    status = learning_status(curve([0.4, 0.5, math.nan, math.nan]), budget=400)
    assert status.best == 0.5 and status.status == PLATEAUED
    status = learning_status(curve([math.nan, math.nan, math.nan, 0.3]), budget=400)
    assert status.status == IMPROVING  # the first finite figure, in the last quarter


def test_the_criterion_checks_its_own_settings():
    with pytest.raises(ValueError, match="mode"):
        Criterion(mode="up")
    with pytest.raises(ValueError, match="window"):
        Criterion(window=1.0)
    with pytest.raises(ValueError, match="margin"):  # 0 would call a flat curve still improving
        Criterion(margin=0)
