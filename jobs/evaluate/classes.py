"""From matches to one result per class: AP, the sweep, the operating point and a status."""

from __future__ import annotations

import numpy as np

from jobs.evaluate.align import Aligned
from jobs.evaluate.match import Matches
from jobs.evaluate.report import ClassResult, Summary
from jobs.evaluate.sweep import Sweep, average_precision, choose_operating_point, sweep_thresholds


def _counts_at(sweep: Sweep, threshold: float) -> tuple[int, int]:
    """TP and FP when keeping scores >= threshold (the sweep is in descending score order)."""
    kept = np.searchsorted(-sweep.thresholds, -threshold, side="right")
    if kept == 0:
        return 0, 0
    return int(sweep.tp[kept - 1]), int(sweep.fp[kept - 1])


def _result(info, status, *, n_gt, n_pred, ap, threshold, tp, fp) -> ClassResult:
    fn = n_gt - tp
    precision = tp / (tp + fp) if tp + fp and n_gt else None
    recall = tp / n_gt if n_gt else None
    f1 = 2 * tp / (2 * tp + fp + fn) if n_gt else None
    return ClassResult(
        class_id=info.class_id, name=info.name, status=status, n_ground_truth=n_gt, n_predictions=n_pred,
        average_precision=ap, threshold=threshold, precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn,
    )


def evaluate_classes(aligned: Aligned, matches: Matches, *, policy: str, min_support: int) -> tuple[list[ClassResult], Summary]:
    det, gt = aligned.det, aligned.gt
    n_classes = len(aligned.classes)
    n_gt = np.bincount(gt.cls[~gt.crowd], minlength=n_classes)
    n_pred = np.bincount(det.cls, minlength=n_classes)

    # Non-ignored detections by class, then descending score, then image and input order: the
    # order pycocotools accumulates in, which decides AP where scores tie.
    keep = np.flatnonzero(~matches.ignored)
    order = keep[np.lexsort((keep, det.image[keep], -det.score[keep], det.cls[keep]))]
    cls_sorted, score_sorted, tp_sorted = det.cls[order], det.score[order], matches.tp[order]
    bounds = np.searchsorted(cls_sorted, np.arange(n_classes + 1))

    # The pooled sweep over classes with ground truth gives the fallback for thin classes.
    pooled = np.flatnonzero(n_gt[cls_sorted] > 0)
    pooled = pooled[np.argsort(-score_sorted[pooled], kind="stable")]
    global_sweep = sweep_thresholds(score_sorted[pooled], tp_sorted[pooled], int(n_gt.sum()))
    g_idx = choose_operating_point(global_sweep, policy)
    global_threshold = None if g_idx is None else float(global_sweep.thresholds[g_idx])

    results = []
    for c, info in enumerate(aligned.classes):
        lo, hi = bounds[c], bounds[c + 1]
        scores, tps = score_sorted[lo:hi], tp_sorted[lo:hi]
        common = dict(n_gt=int(n_gt[c]), n_pred=int(n_pred[c]))
        if n_gt[c] == 0:
            results.append(_result(info, "no_ground_truth", ap=None, threshold=None, tp=0, fp=int(hi - lo), **common))
            continue
        ap = average_precision(tps, int(n_gt[c])) if hi > lo else 0.0
        if hi == lo:
            results.append(_result(info, "no_predictions", ap=ap, threshold=None, tp=0, fp=0, **common))
            continue
        sweep = sweep_thresholds(scores, tps, int(n_gt[c]))
        if n_gt[c] < min_support:
            status, threshold = "low_support", global_threshold
        else:
            idx = choose_operating_point(sweep, policy)
            status, threshold = ("ok", float(sweep.thresholds[idx])) if idx is not None else ("policy_unreachable", None)
        tp, fp = _counts_at(sweep, threshold) if threshold is not None else (0, 0)
        result = _result(info, status, ap=ap, threshold=threshold, tp=tp, fp=fp, **common)
        if threshold is None:  # no operating point: report no P/R/F1 rather than made-up ones
            result = result.model_copy(update={"precision": None, "recall": None, "f1": None, "tp": 0, "fp": 0, "fn": int(n_gt[c])})
        results.append(result)

    with_gt = [r for r in results if r.n_ground_truth > 0]
    f1s = [r.f1 for r in with_gt if r.f1 is not None]
    summary = Summary(
        mean_average_precision=float(np.mean([r.average_precision for r in with_gt])) if with_gt else None,
        macro_f1=float(np.mean(f1s)) if f1s else None,
        global_threshold=global_threshold,
        thresholds={r.name: r.threshold for r in results if r.threshold is not None},
    )
    return results, summary
