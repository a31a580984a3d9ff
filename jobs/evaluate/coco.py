"""COCO's standard summary: the 12 numbers of pycocotools' `summarize()`, and AP@[.5:.95] per class.

Default parameters, as pycocotools builds them: IoU 0.50:0.05:0.95, area ranges all / small
(< 32^2) / medium / large (> 96^2), at most 1, 10 and 100 detections per image and class. Matching
is pycocotools' `evaluateImg` (see `match.greedy_hits`), once per area range with ten thresholds
side by side, on the pairs the main evaluation computed (the IoUs are not computed again); the
first 100 detections of each image and class take part, and maxDets 1 and 10 keep the first 1 or
10 of those. A ground truth outside the area range is ignored (a detection matched to it too), as
is an unmatched detection outside it. Accumulation is pycocotools' `accumulate` over all classes at
once, from the true positives only (see `_average_precision`): per class cumulative TP/FP in its
order (descending score, image, input order), the 101-point interpolated precision, the recall.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common.forked import usable_cpus
from jobs.evaluate.align import Aligned
from jobs.evaluate.classes import accumulation_order
from jobs.evaluate.match import Pairs, greedy_hits, scenarios
from jobs.evaluate.report import CocoClass, CocoStats, CocoSummary
from jobs.evaluate.sweep import RECALL_THRESHOLDS

# Built as pycocotools' Params builds them, bit for bit.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
AREA_RANGES = {"all": (0**2, 1e5**2), "small": (0**2, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e5**2)}
MAX_DETS = (1, 10, 100)


def coco_summary(aligned: Aligned, pairs: Pairs, *, iou_type: str) -> CocoSummary:
    """The summary from the main evaluation's pairs (which must reach IoU 0.5)."""
    det, gt = aligned.det, aligned.gt
    n_classes, n_t = len(aligned.classes), IOU_THRESHOLDS.size
    det_rank = np.empty(pairs.n_det, dtype=np.int64)
    det_rank[pairs.d_order] = pairs.d_rank
    order = accumulation_order(det, n_classes, aligned.n_images)
    order = order[det_rank[order] < MAX_DETS[-1]]
    position = np.full(pairs.n_det, -1, dtype=np.int64)  # of each detection in `order`
    position[order] = np.arange(order.size)
    cls_sorted, area_sorted = det.cls[order], det.area[order]
    bounds = np.searchsorted(cls_sorted, np.arange(n_classes + 1))
    visited = scenarios(pairs.capped(MAX_DETS[-1]), IOU_THRESHOLDS, gt.crowd[pairs.g_order])

    ap = np.full((len(AREA_RANGES), n_t, n_classes), np.nan)
    recall = {}
    n_gt = np.zeros((len(AREA_RANGES), n_classes), dtype=np.int64)
    # One greedy pass per area range, its ten thresholds side by side (all 40 at once cost more memory,
    # no time). The passes are independent and mostly numpy, which releases the GIL: two threads.
    def area_pass(a: int, low: float, high: float) -> None:
        gt_ignore = gt.crowd | (gt.area < low) | (gt.area > high)
        n_gt[a] = np.bincount(gt.cls[~gt_ignore], minlength=n_classes)
        scenario, hit, hit_ignored = greedy_hits(visited, gt_ignore[pairs.g_order])
        outside = (area_sorted < low) | (area_sorted > high)  # in `order`, which holds every hit
        hit_position = position[hit]
        ap[a] = _average_precision(scenario, hit_position, ~hit_ignored, outside[hit_position], outside, cls_sorted,
                                   bounds, n_gt[a], n_t)
        # Recall: the true positives among each class's first maxDets per image, over its ground truths.
        for m in MAX_DETS if a == 0 else MAX_DETS[-1:]:
            keep = ~hit_ignored & (det_rank[hit] < m)
            found = np.bincount(scenario[keep] * n_classes + det.cls[hit[keep]], minlength=n_t * n_classes)
            with np.errstate(divide="ignore", invalid="ignore"):
                recall[a, m] = np.where(n_gt[a] > 0, found.reshape(n_t, n_classes) / n_gt[a], np.nan)

    with ThreadPoolExecutor(max_workers=min(2, usable_cpus())) as pool:
        for done in [pool.submit(area_pass, a, low, high) for a, (low, high) in enumerate(AREA_RANGES.values())]:
            done.result()

    def mean(values: np.ndarray) -> float | None:
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else None

    t50, t75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.5))[0]), int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    stats = CocoStats(
        AP=mean(ap[0]), AP50=mean(ap[0, t50]), AP75=mean(ap[0, t75]),
        APs=mean(ap[1]), APm=mean(ap[2]), APl=mean(ap[3]),
        AR1=mean(recall[0, 1]), AR10=mean(recall[0, 10]), AR100=mean(recall[0, 100]),
        ARs=mean(recall[1, 100]), ARm=mean(recall[2, 100]), ARl=mean(recall[3, 100]),
    )
    note = None
    if aligned.normalised:  # areas are fractions of the image: COCO's pixel area ranges cannot be applied
        stats = stats.model_copy(update=dict.fromkeys(("APs", "APm", "APl", "ARs", "ARm", "ARl")))
        note = ("small/medium/large are null: coordinates are normalised (YOLO files without images/), so "
                "pixel areas are unknown; the all-area numbers do not depend on them")
    per_class = [CocoClass(class_id=info.class_id, name=info.name,
                           average_precision=None if n_gt[0, c] == 0 else float(ap[0, :, c].mean()))
                 for c, info in enumerate(aligned.classes)]
    return CocoSummary(iou_type=iou_type, stats=stats, classes=per_class, area_ranges_note=note)


def _average_precision(scenario: np.ndarray, pos: np.ndarray, is_tp: np.ndarray, hit_outside: np.ndarray,
                       outside_sorted: np.ndarray, cls_sorted: np.ndarray, bounds: np.ndarray, n_gt: np.ndarray,
                       n_s: int) -> np.ndarray:
    """(S, K) COCO 101-point AP per scenario and class (NaN without ground truth), pycocotools' arithmetic.

    The matched detections come sparse: scenario, position in accumulation order (class k is
    bounds[k]:bounds[k + 1]), true positive or ignored, outside the area range or not. A detection
    is counted when it is a true positive, or unmatched and inside the range.

    Only true positives are visited: the interpolated precision at recall r is the highest
    precision at or after the first detection reaching r, and that detection is a true positive
    (recall grows only there), as is the highest point after it (precision falls at every false
    positive). At the k-th true positive of a class, recall is k / n_gt and precision is
    k / (detections counted so far + eps), as pycocotools computes them.
    """
    n_classes, n_r, size = n_gt.size, RECALL_THRESHOLDS.size, outside_sorted.size + 1
    inside_before = np.r_[0, np.cumsum(~outside_sorted, dtype=np.int64)]  # dense: one pass per area range
    key = scenario * size + pos
    matched_inside = np.sort(key[~hit_outside])  # each either a TP or ignored: never a false positive
    tp_key = np.sort(key[is_tp])
    tp_scenario, tp_pos = tp_key // size, tp_key % size
    cls = np.searchsorted(bounds, tp_pos, side="right") - 1
    group = tp_scenario * n_classes + cls
    n_groups = n_s * n_classes
    per_group = np.bincount(group, minlength=n_groups)
    first = np.cumsum(per_group) - per_group
    k = (np.arange(group.size) - np.repeat(first, per_group) + 1).astype(np.float64)  # TPs so far
    # False positives so far: the unmatched detections inside the range, up to this TP in its class.
    group_start = tp_scenario * size + bounds[cls]
    matched_inside_so_far = (np.searchsorted(matched_inside, tp_key, side="right")
                             - np.searchsorted(matched_inside, group_start, side="left"))
    fp = (inside_before[tp_pos + 1] - inside_before[bounds[cls]] - matched_inside_so_far).astype(np.float64)
    pr = k / (fp + k + np.spacing(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rc = k / np.tile(n_gt, n_s)[group]
    # Per group and recall threshold: the first true positive with rc >= r, from how many have rc < r.
    below = np.searchsorted(RECALL_THRESHOLDS, rc, side="right")  # thresholds <= rc
    count = np.bincount(group * (n_r + 1) + below, minlength=n_groups * (n_r + 1)).reshape(n_groups, n_r + 1)
    start = first[:, None] + np.cumsum(count, axis=1)[:, :n_r]
    end = np.broadcast_to((first + per_group)[:, None], start.shape)
    reach = start < end
    idx = np.minimum(np.stack([start, end], axis=-1).reshape(-1), pr.size)
    q = np.maximum.reduceat(np.r_[pr, 0.0], idx)[::2].reshape(n_groups, n_r)
    ap = np.where(reach, q, 0.0).mean(axis=1).reshape(n_s, n_classes)
    return np.where(n_gt > 0, ap, np.nan)
