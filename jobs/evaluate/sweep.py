"""Per-class confidence sweep, COCO average precision, and the choice of an operating point.

Inputs are one class's non-ignored detections sorted by descending score (ties in pycocotools'
order: image, then input order) with their true-positive flags, and the class's ground-truth count.
Threshold t means "keep score >= t"; the candidates are the distinct scores, and precision,
recall and F1 come from raw counts there, never from the interpolated precision envelope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

# COCO's 101 recall points, built exactly as pycocotools builds them.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


_POLICY = re.compile(r"^(f1|fbeta:(?P<beta>[0-9.]+)|precision>=(?P<p>[0-9.]+)|recall>=(?P<r>[0-9.]+))$")


@dataclass(frozen=True)
class Policy:
    """How a class's operating point is chosen (EVAL_POLICY), parsed once from its text.

    `fbeta`: the most F-beta (beta = `value`; `f1` is beta 1); `precision`: the most recall at
    precision >= `value`; `recall`: the most precision at recall >= `value`.
    """

    kind: Literal["fbeta", "precision", "recall"]
    value: float
    text: str  # the normalised spelling, as reports record it

    @classmethod
    def parse(cls, text: "str | Policy") -> "Policy":
        """Raises ValueError (the settings turn it into a config error naming EVAL_POLICY)."""
        if isinstance(text, Policy):
            return text
        spelled = str(text).strip().replace(" ", "")
        match = _POLICY.match(spelled)
        if not match:
            raise ValueError("expected f1, fbeta:B, precision>=P or recall>=R")
        if spelled == "f1":
            return cls("fbeta", 1.0, spelled)
        if match["beta"] is not None:
            beta = _number(match["beta"])
            if not beta > 0:
                raise ValueError("beta must be > 0")
            return cls("fbeta", beta, spelled)
        kind, bound = ("precision", match["p"]) if match["p"] is not None else ("recall", match["r"])
        value = _number(bound)
        if not 0.0 < value <= 1.0:
            raise ValueError("the bound must be in (0, 1]")
        return cls(kind, value, spelled)

    def __str__(self) -> str:
        return self.text


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # '1.2.3' passes the pattern
        raise ValueError(f"{text!r} is not a number") from None


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


def choose_operating_point(sweep: Sweep, policy: Policy) -> int | None:
    """Index into `sweep` of the chosen threshold, or None when the policy cannot be met.

    Ties go to the higher score (the earlier index): the same quality with fewer detections.
    """
    if sweep.thresholds.size == 0 or sweep.n_ground_truth == 0:
        return None
    if policy.kind == "fbeta":
        return int(np.argmax(sweep.fbeta_score(policy.value)))
    if policy.kind == "precision":
        feasible = np.flatnonzero(sweep.precision >= policy.value)
        objective = sweep.recall
    else:
        feasible = np.flatnonzero(sweep.recall >= policy.value)
        objective = sweep.precision
    if feasible.size == 0:
        return None
    return int(feasible[np.argmax(objective[feasible])])
