"""Match detections to ground truth per (image, class), exactly as pycocotools does at one IoU.

Detections take ground truth greedily in descending score: each takes the highest-IoU still
unmatched non-crowd ground truth with IoU >= t (ties to the later one, as pycocotools' `>=` scan
does); failing that, a crowd region with IoU >= t makes it ignored; else it is a false positive.

No Python loop runs per detection. Within each (image, class) group detections are ranked by
score, and the loop runs over ranks: step k matches the k-th detection of every group at once,
with array operations over that rank's (detection, ground truth) pairs. Groups are independent,
so the greedy order inside each group is preserved. The number of steps is the largest group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.evaluate.align import Objects
from jobs.evaluate.geometry import box_iou_pairs, make_polygons, polygon_iou_pairs


@dataclass
class Matches:
    """Per detection (in the order given): true positive, or ignored (matched a crowd region)."""

    tp: np.ndarray
    ignored: np.ndarray


def _group_order(group: np.ndarray, *secondary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable order by group then the secondary keys; group start offsets and sizes per row."""
    order = np.lexsort((np.arange(group.size), *reversed(secondary), group))
    g_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]]) if g_sorted.size else np.zeros(0, np.int64)
    return order, g_sorted, starts


def _pairs(det_group: np.ndarray, gt_group_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, ground truth) index pairs sharing a group; gt indices into the sorted gts."""
    lo = np.searchsorted(gt_group_sorted, det_group, side="left")
    hi = np.searchsorted(gt_group_sorted, det_group, side="right")
    counts = hi - lo
    pair_det = np.repeat(np.arange(det_group.size), counts)
    offsets = np.arange(pair_det.size) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = np.repeat(lo, counts) + offsets
    return pair_det, pair_gt


def pair_ious(det: Objects, gt: Objects, pair_det: np.ndarray, pair_gt: np.ndarray, geometry: str) -> np.ndarray:
    crowd = gt.crowd[pair_gt]
    if geometry == "image":
        return np.ones(pair_det.size)
    if geometry == "bbox":
        return box_iou_pairs(det.boxes[pair_det], gt.boxes[pair_gt], crowd)
    det_geoms = make_polygons(det.polygons, det.boxes)
    gt_geoms = make_polygons(gt.polygons, gt.boxes)
    return polygon_iou_pairs(det_geoms[pair_det], gt_geoms[pair_gt], crowd)


def match_detections(det: Objects, gt: Objects, *, n_classes: int, iou_threshold: float, geometry: str) -> Matches:
    """Greedy matching of every detection; `det.score` orders detections within a group."""
    n_det = det.image.size
    tp = np.zeros(n_det, dtype=bool)
    ignored = np.zeros(n_det, dtype=bool)
    if n_det == 0 or gt.image.size == 0:
        return Matches(tp, ignored)

    det_group = det.image * n_classes + det.cls
    gt_group = gt.image * n_classes + gt.cls
    # Detections: by score descending, ties in input order (pycocotools' mergesort).
    d_order, d_group, d_starts = _group_order(det_group, -det.score)
    d_rank = np.arange(n_det) - np.repeat(d_starts, np.diff(np.r_[d_starts, n_det]))
    # Ground truth: non-crowd first, then input order (pycocotools sorts by the ignore flag).
    g_order, g_group, _ = _group_order(gt_group, gt.crowd)
    g_crowd = gt.crowd[g_order]

    pair_det, pair_gt = _pairs(d_group, g_group)  # pair_det indexes d_order, pair_gt g_order
    if pair_det.size == 0:
        return Matches(tp, ignored)
    iou = pair_ious(det, gt, d_order[pair_det], g_order[pair_gt], geometry)
    threshold = min(iou_threshold, 1 - 1e-10)  # pycocotools clips t the same way
    # Candidate score: any non-crowd match beats any crowd match; within each kind the higher IoU.
    pair_crowd = g_crowd[pair_gt]
    candidate = np.where(iou >= threshold, iou + np.where(pair_crowd, 0.0, 2.0), -1.0)

    # Pairs ordered by the rank of their detection, then detection, then ground truth.
    by_rank = np.lexsort((pair_gt, pair_det, d_rank[pair_det]))
    pair_det, pair_gt, candidate, pair_crowd = pair_det[by_rank], pair_gt[by_rank], candidate[by_rank], pair_crowd[by_rank]
    rank_bounds = np.searchsorted(d_rank[pair_det], np.arange(d_rank.max() + 2))

    gt_taken = np.zeros(g_group.size, dtype=bool)
    tp_sorted = np.zeros(n_det, dtype=bool)
    ignored_sorted = np.zeros(n_det, dtype=bool)
    for k in range(rank_bounds.size - 1):
        lo, hi = rank_bounds[k], rank_bounds[k + 1]
        if lo == hi:
            continue
        p_det, p_gt, p_crowd = pair_det[lo:hi], pair_gt[lo:hi], pair_crowd[lo:hi]
        # A non-crowd ground truth taken by a higher-scored detection is out of reach.
        cand = np.where(gt_taken[p_gt] & ~p_crowd, -1.0, candidate[lo:hi])
        starts = np.flatnonzero(np.r_[True, p_det[1:] != p_det[:-1]])
        best = np.maximum.reduceat(cand, starts)
        seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, p_det.size]))
        # Among the pairs at the best candidate, the last ground truth in order wins (pycocotools).
        at_best = (cand == best[seg]) & (cand >= 0)
        chosen = np.maximum.reduceat(np.where(at_best, np.arange(p_det.size), -1), starts)
        chosen = chosen[chosen >= 0]
        hit_det, hit_gt, hit_crowd = p_det[chosen], p_gt[chosen], p_crowd[chosen]
        tp_sorted[hit_det[~hit_crowd]] = True
        ignored_sorted[hit_det[hit_crowd]] = True
        gt_taken[hit_gt[~hit_crowd]] = True

    tp[d_order] = tp_sorted
    ignored[d_order] = ignored_sorted
    return Matches(tp, ignored)
