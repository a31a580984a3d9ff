"""COCO's standard summary: the 12 numbers of pycocotools' `summarize()`, and AP@[.5:.95] per class.

Default parameters, as pycocotools builds them: IoU 0.50:0.05:0.95, area ranges all / small
(< 32^2) / medium / large (> 96^2), at most 1, 10 and 100 detections per image and class. Matching
is pycocotools' `evaluateImg` (see `match.greedy_match`), once per area range with ten thresholds
side by side, on the pairs the main evaluation computed (the IoUs are not computed again); the
first 100 detections of each image and class take part, and maxDets 1 and 10 keep the first 1 or
10 of those. A ground truth outside the area range is ignored (a detection matched to it too), as
is an unmatched detection outside it. Accumulation is pycocotools' `accumulate` over all classes at
once: per class cumulative TP/FP in its order (descending score, image, input order), the 101-point
interpolated precision and the final recall.
"""

from __future__ import annotations

import numpy as np

from jobs.evaluate.align import Aligned
from jobs.evaluate.classes import accumulation_order
from jobs.evaluate.match import Pairs, greedy_match
from jobs.evaluate.report import CocoClass, CocoStats, CocoSummary
from jobs.evaluate.sweep import RECALL_THRESHOLDS

# Built as pycocotools' Params builds them, bit for bit.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
AREA_RANGES = {"all": (0**2, 1e5**2), "small": (0**2, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e5**2)}
MAX_DETS = (1, 10, 100)


def coco_summary(aligned: Aligned, pairs: Pairs, *, iou_type: str) -> CocoSummary:
    """The summary from the main evaluation's pairs (which must reach IoU 0.5)."""
    det, gt = aligned.det, aligned.gt
    n_classes = len(aligned.classes)
    n_t = IOU_THRESHOLDS.size
    capped = pairs.capped(MAX_DETS[-1])
    det_rank = np.empty(pairs.n_det, dtype=np.int64)
    det_rank[pairs.d_order] = pairs.d_rank
    order = accumulation_order(det, n_classes, aligned.n_images)
    order = order[det_rank[order] < MAX_DETS[-1]]
    crowd_sorted = gt.crowd[pairs.g_order]

    # precision[a]: (n_classes, T) AP at maxDets 100; recall[a, m]: (n_classes, T); NaN: no ground truth.
    ap = np.full((len(AREA_RANGES), n_classes, n_t), np.nan)
    recall = np.full((len(AREA_RANGES), len(MAX_DETS), n_classes, n_t), np.nan)
    for a, (low, high) in enumerate(AREA_RANGES.values()):
        gt_ignore = gt.crowd | (gt.area < low) | (gt.area > high)
        n_gt = np.bincount(gt.cls[~gt_ignore], minlength=n_classes)
        tp, ignored = greedy_match(capped, IOU_THRESHOLDS, np.broadcast_to(gt_ignore[pairs.g_order], (n_t, gt.cls.size)),
                                   crowd_sorted)
        outside = (det.area < low) | (det.area > high)
        ignored |= ~tp & ~ignored & outside  # unmatched and outside the range: not counted
        has_gt = n_gt > 0
        for m, max_dets in enumerate(MAX_DETS):
            kept = order if max_dets == MAX_DETS[-1] else order[det_rank[order] < max_dets]
            for t in range(n_t):
                counted = kept[~ignored[t, kept]]
                tp_sorted, cls_sorted = tp[t, counted], det.cls[counted]
                with np.errstate(divide="ignore", invalid="ignore"):
                    recall[a, m, :, t] = np.where(has_gt, np.bincount(cls_sorted[tp_sorted], minlength=n_classes) / n_gt, np.nan)
                if max_dets == MAX_DETS[-1]:
                    ap[a, :, t] = np.where(has_gt, _average_precision_by_class(cls_sorted, tp_sorted, n_gt), np.nan)

    def mean(values: np.ndarray) -> float | None:
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else None

    t50, t75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.5))[0]), int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    stats = CocoStats(
        AP=mean(ap[0]), AP50=mean(ap[0][:, t50]), AP75=mean(ap[0][:, t75]),
        APs=mean(ap[1]), APm=mean(ap[2]), APl=mean(ap[3]),
        AR1=mean(recall[0, 0]), AR10=mean(recall[0, 1]), AR100=mean(recall[0, 2]),
        ARs=mean(recall[1, 2]), ARm=mean(recall[2, 2]), ARl=mean(recall[3, 2]),
    )
    per_class = [CocoClass(class_id=info.class_id, name=info.name,
                           average_precision=None if np.isnan(ap[0, c]).all() else float(ap[0, c].mean()))
                 for c, info in enumerate(aligned.classes)]
    return CocoSummary(iou_type=iou_type, stats=stats, classes=per_class)


def _average_precision_by_class(cls_sorted: np.ndarray, tp_sorted: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """(n_classes,) COCO 101-point AP of every class at once, with pycocotools' arithmetic.

    cls_sorted, tp_sorted: the counted detections grouped by class, each class in accumulation
    order; n_gt: (n_classes,) non-ignored ground truths. Classes without ground truth give 0.
    """
    n_classes = n_gt.size
    bounds = np.searchsorted(cls_sorted, np.arange(n_classes + 1))
    tp_cum = np.cumsum(tp_sorted, dtype=np.int64)
    fp_cum = np.cumsum(~tp_sorted, dtype=np.int64)
    before = np.r_[0, tp_cum][bounds[:-1]], np.r_[0, fp_cum][bounds[:-1]]
    length = np.diff(bounds)
    tps = (tp_cum - np.repeat(before[0], length)).astype(np.float64)  # per class, as pycocotools' cumsum
    fps = (fp_cum - np.repeat(before[1], length)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rc = tps / np.repeat(n_gt, length)
    pr = tps / (fps + tps + np.spacing(1))
    # searchsorted(rc, RECALL_THRESHOLDS, 'left') per class: how many of its detections have rc below
    # each recall threshold, from the number of thresholds <= each rc (exact, no offsets).
    below = np.searchsorted(RECALL_THRESHOLDS, rc, side="right")
    n_r = RECALL_THRESHOLDS.size
    count = np.bincount(cls_sorted * (n_r + 1) + below, minlength=n_classes * (n_r + 1)).reshape(n_classes, n_r + 1)
    start = bounds[:-1, None] + np.cumsum(count, axis=1)[:, :n_r]  # (n_classes, R) first index with rc >= r
    end = np.broadcast_to(bounds[1:, None], start.shape)
    # q = the precision envelope at start: the max of pr over start..end of the class (0 past the end).
    reach = start < end
    padded = np.r_[pr, 0.0]
    idx = np.stack([start, end], axis=-1).reshape(-1)
    q = np.maximum.reduceat(padded, np.minimum(idx, pr.size))[::2].reshape(n_classes, n_r) if idx.size else np.zeros((n_classes, n_r))
    return np.where(reach, q, 0.0).mean(axis=1)
