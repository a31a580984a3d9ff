"""The sweep, AP and the operating-point policies, on hand-counted cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.evaluate.sweep import (
    Policy,
    average_precision,
    choose_operating_point,
    sweep_thresholds,
)


def sweep_of(scores, hits, n_gt):
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return sweep_thresholds(np.asarray(scores, dtype=float)[order], np.asarray(hits, dtype=bool)[order], n_gt)


def test_counts_at_distinct_scores_keep_score_at_or_above():
    s = sweep_of([0.9, 0.8, 0.8, 0.3], [1, 0, 1, 1], n_gt=4)
    assert s.thresholds.tolist() == [0.9, 0.8, 0.3]
    assert s.tp.tolist() == [1, 2, 3] and s.fp.tolist() == [0, 1, 1]
    assert s.precision.tolist() == [1.0, 2 / 3, 3 / 4]
    assert s.recall.tolist() == [0.25, 0.5, 0.75]


def test_f1_ties_go_to_the_higher_score():
    # F1 at 0.9: 2*1/(2+0+1) = 2/3; at 0.5: 2*2/(4+1+0) = 4/5; at 0.4: 2*2/(4+2) = 2/3.
    s = sweep_of([0.9, 0.5, 0.4], [1, 1, 0], n_gt=2)
    assert s.thresholds[choose_operating_point(s, Policy.parse("f1"))] == 0.5
    # Equal F1 at two thresholds: at 0.9, 2*1/(2+0+2) = 1/2; at 0.5, 2*2/(4+3+1) = 1/2.
    s = sweep_of([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 0, 0, 1], n_gt=3)
    f1 = s.fbeta_score(1.0)
    assert f1[0] == f1[-1] == f1.max()
    assert s.thresholds[choose_operating_point(s, Policy.parse("f1"))] == 0.9


def test_precision_and_recall_policies():
    s = sweep_of([0.95, 0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1, 0], n_gt=4)
    # precision >= 0.75: thresholds 0.95 (1.0), 0.9 (1.0), 0.7 (0.75); most recall at 0.7.
    assert s.thresholds[choose_operating_point(s, Policy.parse("precision>=0.75"))] == 0.7
    # recall >= 0.5: 0.9 (P 1.0) is the most precise; 0.95 has recall 0.25.
    assert s.thresholds[choose_operating_point(s, Policy.parse("recall>=0.5"))] == 0.9
    assert choose_operating_point(s, Policy.parse("recall>=1")) is None  # never reaches 4/4
    # F-beta with a large beta favours recall.
    assert s.thresholds[choose_operating_point(s, Policy.parse("fbeta:10"))] == 0.7


def test_average_precision_perfect_and_empty():
    assert average_precision(np.array([True, True]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([False, False]), 2) == 0.0
    # Half the recall at full precision: 51 of 101 recall points reached.
    assert average_precision(np.array([True]), 2) == pytest.approx(51 / 101)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=40), st.integers(1, 30))
def test_sweep_is_order_invariant_and_consistent(rows, extra_gt):
    scores = [r[0] / 20 for r in rows]
    hits = [r[1] for r in rows]
    n_gt = sum(hits) + extra_gt
    a = sweep_of(scores, hits, n_gt)
    b = sweep_of(scores[::-1], hits[::-1], n_gt)
    assert a.thresholds.tolist() == b.thresholds.tolist()
    assert a.tp.tolist() == b.tp.tolist() and a.fp.tolist() == b.fp.tolist()
    for t, tp, fp in zip(a.thresholds, a.tp, a.fp):  # brute force: keep score >= t
        assert tp == sum(h for s, h in zip(scores, hits) if s >= t)
        assert fp == sum(not h for s, h in zip(scores, hits) if s >= t)
    idx = choose_operating_point(a, Policy.parse("f1"))
    f1 = a.fbeta_score(1.0)
    assert f1[idx] == f1.max() and not (f1[:idx] == f1.max()).any()
