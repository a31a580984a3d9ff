"""Per-class confidence sweep, COCO average precision, and the choice of an operating point.

Inputs are one class's non-ignored detections sorted by descending score (ties in pycocotools'
order: image, then input order) with their true-positive flags, and the class's ground-truth count.
Threshold t means "keep score >= t"; the candidates are the distinct scores, and precision,
recall and F1 come from raw counts there, never from the interpolated precision envelope.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.evaluate.settings import POLICY_PATTERN

# COCO's 101 recall points, built exactly as pycocotools builds them.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class Sweep:
    """Counts at each distinct score, in descending score order. Arrays of shape (n_thresholds,)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_ground_truth: int

    @property
    def fn(self) -> np.ndarray:
        return self.n_ground_truth - self.tp

    @property
    def precision(self) -> np.ndarray:
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / self.n_ground_truth

    def fbeta_score(self, beta: float = 1.0) -> np.ndarray:
        # The count form 2TP / (2TP + FP + FN) divides integers once, so equal F1 values compare
        # equal exactly and ties resolve as documented; 2PR / (P + R) would not guarantee it.
        b2 = beta * beta
        return (1 + b2) * self.tp / ((1 + b2) * self.tp + b2 * self.fn + self.fp)


def average_precision(tp_sorted: np.ndarray, n_ground_truth: int) -> float:
    """COCO 101-point interpolated AP, computed as pycocotools' accumulate() does."""
    tps = np.cumsum(tp_sorted).astype(np.float64)  # float64 cumulative counts, as pycocotools
    fps = np.cumsum(~tp_sorted).astype(np.float64)
    recall = tps / n_ground_truth
    precision = tps / (fps + tps + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    q = np.zeros(RECALL_THRESHOLDS.size)
    valid = idx < envelope.size
    q[valid] = envelope[idx[valid]]
    return float(q.mean())


def sweep_thresholds(scores_sorted: np.ndarray, tp_sorted: np.ndarray, n_ground_truth: int) -> Sweep:
    """Cumulative TP/FP at the last detection of each run of equal scores."""
    tp_cum = np.cumsum(tp_sorted, dtype=np.int64)
    fp_cum = np.cumsum(~tp_sorted, dtype=np.int64)
    last = np.flatnonzero(np.r_[scores_sorted[1:] != scores_sorted[:-1], True]) if scores_sorted.size else np.zeros(0, np.int64)
    return Sweep(scores_sorted[last], tp_cum[last], fp_cum[last], n_ground_truth)


def choose_operating_point(sweep: Sweep, policy: str) -> int | None:
    """Index into `sweep` of the chosen threshold, or None when the policy cannot be met.

    Ties go to the higher score (the earlier index): the same quality with fewer detections.
    """
    if sweep.thresholds.size == 0 or sweep.n_ground_truth == 0:
        return None
    match = POLICY_PATTERN.match(policy)
    if policy == "f1":
        return int(np.argmax(sweep.fbeta_score(1.0)))
    if match["beta"] is not None:
        return int(np.argmax(sweep.fbeta_score(float(match["beta"]))))
    if match["p"] is not None:
        feasible = np.flatnonzero(sweep.precision >= float(match["p"]))
        objective = sweep.recall
    else:
        feasible = np.flatnonzero(sweep.recall >= float(match["r"]))
        objective = sweep.precision
    if feasible.size == 0:
        return None
    return int(feasible[np.argmax(objective[feasible])])
