"""From matches to one result per class: AP, the sweep, the operating point and a status."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from jobs.evaluate.align import Aligned
from jobs.evaluate.match import Matches, descending_rank, radix_argsort, stable_order
from jobs.evaluate.report import ClassResult, Summary
from jobs.evaluate.sweep import Policy, Sweep, average_precision, choose_operating_point, sweep_thresholds


_last_order: tuple = ((), None, None)


def accumulation_order(det, n_classes: int, n_images: int, rank=None) -> np.ndarray:
    """Detections by class, then descending score, then image, then input order: the order
    pycocotools accumulates in, which decides AP where scores tie. `rank`: descending_rank(det.score).

    The sweep and the coco block both need it: for read-only scores (align makes them so) the
    last result is reused while the same arrays are asked about again.
    """
    global _last_order
    refs, key, cached = _last_order
    arrays = (det.score, det.cls, det.image)
    if len(refs) == 3 and all(r() is a for r, a in zip(refs, arrays)) and key == (n_classes, n_images) \
            and not det.score.flags.writeable:
        return cached
    order = stable_order((det.cls, n_classes), rank or descending_rank(det.score), (det.image, n_images))
    if not det.score.flags.writeable:
        order.flags.writeable = False  # shared from now on
        _last_order = (tuple(weakref.ref(a) for a in arrays), (n_classes, n_images), order)
    return order


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


@dataclass
class ByClass:
    """Non-ignored detections in accumulation order; class c is the slice bounds[c]:bounds[c + 1]."""

    n_gt: np.ndarray  # (n_classes,) non-crowd ground truths
    n_pred: np.ndarray  # (n_classes,) prediction rows, ignored ones included
    order: np.ndarray  # detection indices
    score: np.ndarray
    tp: np.ndarray
    bounds: np.ndarray
    rank: tuple

    def __call__(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.bounds[c], self.bounds[c + 1]
        return self.score[lo:hi], self.tp[lo:hi]


def by_class(aligned: Aligned, matches: Matches) -> ByClass:
    det, gt = aligned.det, aligned.gt
    n_classes = len(aligned.classes)
    rank = descending_rank(det.score)
    order = accumulation_order(det, n_classes, aligned.n_images, rank)
    order = order[~matches.ignored[order]]
    return ByClass(
        n_gt=np.bincount(gt.cls[~gt.crowd], minlength=n_classes),
        n_pred=np.bincount(det.cls, minlength=n_classes),
        order=order, score=det.score[order], tp=matches.tp[order],
        bounds=np.searchsorted(det.cls[order], np.arange(n_classes + 1)), rank=rank,
    )


def summarise(results: list[ClassResult], global_threshold: float | None) -> Summary:
    with_gt = [r for r in results if r.n_ground_truth > 0]
    f1s = [r.f1 for r in with_gt if r.f1 is not None]
    return Summary(
        mean_average_precision=float(np.mean([r.average_precision for r in with_gt])) if with_gt else None,
        macro_f1=float(np.mean(f1s)) if f1s else None,
        global_threshold=global_threshold,
        thresholds={r.name: r.threshold for r in results if r.threshold is not None},
    )


def evaluate_classes(aligned: Aligned, matches: Matches, *, policy: Policy, min_support: int) -> tuple[list[ClassResult], Summary]:
    data = by_class(aligned, matches)
    n_gt, n_pred = data.n_gt, data.n_pred
    # The pooled sweep over classes with ground truth gives the fallback for thin classes.
    pooled = np.flatnonzero(n_gt[aligned.det.cls[data.order]] > 0)
    pooled = pooled[radix_argsort(data.rank[0][data.order[pooled]], data.rank[1])]  # by descending score, stable
    global_sweep = sweep_thresholds(data.score[pooled], data.tp[pooled], int(n_gt.sum()))
    g_idx = choose_operating_point(global_sweep, policy)
    global_threshold = None if g_idx is None else float(global_sweep.thresholds[g_idx])

    results = []
    for c, info in enumerate(aligned.classes):
        scores, tps = data(c)
        common = dict(n_gt=int(n_gt[c]), n_pred=int(n_pred[c]))
        if n_gt[c] == 0:
            results.append(_result(info, "no_ground_truth", ap=None, threshold=None, tp=0, fp=int(scores.size), **common))
            continue
        ap = average_precision(tps, int(n_gt[c])) if scores.size else 0.0
        if not scores.size:
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
    return results, summarise(results, global_threshold)


def evaluate_at_thresholds(aligned: Aligned, matches: Matches, chosen: list[ClassResult], *,
                           global_threshold: float | None) -> tuple[list[ClassResult], Summary]:
    """AP and counts on these images at thresholds chosen elsewhere (on other images).

    `chosen` is evaluate_classes' output on the images that chose the thresholds, one per class in
    the same order; each result keeps its status and threshold, while counts, AP, precision, recall
    and F1 are measured here.
    """
    data = by_class(aligned, matches)
    n_gt, n_pred = data.n_gt, data.n_pred
    results = []
    for c, (info, picked) in enumerate(zip(aligned.classes, chosen)):
        scores, tps = data(c)
        common = dict(n_gt=int(n_gt[c]), n_pred=int(n_pred[c]))
        ap = (average_precision(tps, int(n_gt[c])) if scores.size else 0.0) if n_gt[c] else None
        threshold = picked.threshold
        if threshold is None:  # as evaluate_classes: without ground truth every detection is a false positive
            tp, fp = 0, (int(scores.size) if n_gt[c] == 0 else 0)
        else:
            tp, fp = _counts_at(sweep_thresholds(scores, tps, int(n_gt[c])), threshold)
        result = _result(info, picked.status, ap=ap, threshold=threshold, tp=tp, fp=fp, **common)
        if threshold is None:
            result = result.model_copy(update={"precision": None, "recall": None, "f1": None, "fn": int(n_gt[c])})
        results.append(result)
    return results, summarise(results, global_threshold)


def iou_key(threshold: float) -> str:
    """The report's key for an IoU threshold: 0.8999999999999999 (as pycocotools builds it) is '0.9'."""
    return format(round(threshold, 6), "g")


def add_ap_by_iou(aligned: Aligned, matches_by_iou: list[Matches], iou_thresholds: list[float],
                  classes: list[ClassResult], summary: Summary) -> tuple[list[ClassResult], Summary]:
    """Each class's AP at every extra IoU threshold and their mean (COCO AP@[.5:.95]), beside its results.

    `matches_by_iou[t]` matches every detection at `iou_thresholds[t]`; AP is computed as in
    `evaluate_classes`, so at the main threshold it equals `average_precision` exactly.
    """
    det, gt = aligned.det, aligned.gt
    n_classes = len(aligned.classes)
    n_gt = np.bincount(gt.cls[~gt.crowd], minlength=n_classes)
    # One sort for all thresholds: each drops its own ignored detections, which keeps the order.
    order = accumulation_order(det, n_classes, aligned.n_images)
    ap = np.full((n_classes, len(iou_thresholds)), np.nan)
    for t, matches in enumerate(matches_by_iou):
        kept = order[~matches.ignored[order]]
        tp_sorted = matches.tp[kept]
        bounds = np.searchsorted(det.cls[kept], np.arange(n_classes + 1))
        for c in np.flatnonzero(n_gt > 0):
            lo, hi = bounds[c], bounds[c + 1]
            ap[c, t] = average_precision(tp_sorted[lo:hi], int(n_gt[c])) if hi > lo else 0.0
    keys = [iou_key(t) for t in iou_thresholds]
    out = []
    for c, result in enumerate(classes):
        if n_gt[c] == 0:
            out.append(result)
            continue
        out.append(result.model_copy(update={
            "average_precision_by_iou": dict(zip(keys, ap[c].tolist())),
            "average_precision_iou_mean": float(ap[c].mean()),
        }))
    with_gt = ap[n_gt > 0]
    if with_gt.size:
        means = with_gt.mean(axis=0)
        summary = summary.model_copy(update={
            "mean_average_precision_by_iou": dict(zip(keys, means.tolist())),
            "mean_average_precision_iou_mean": float(means.mean()),
        })
    return out, summary
