"""Class-wise non-maximum suppression before matching, for boxes, polygons and image-level rows.

Within each (image, class), detections are visited in descending score (ties in input order); a
detection is dropped when its IoU with a higher-ranked detection that was kept is greater than
the NMS threshold (torchvision's `nms` rule: `IoU > t` suppresses). Boxes and masks use the same IoU
arithmetic as matching; polygons use exact polygon IoU; image-level rows (no geometry) overlap
completely, so NMS keeps only the best-scored row of each (image, class).

No Python loop runs per detection: the loop runs over ranks, and step k decides the k-th
detection of every group at once, from the kept state of the ranks before it.
"""

from __future__ import annotations

import numpy as np

from jobs.evaluate.align import Objects
from jobs.evaluate.geometry import box_iou_pairs, polygon_iou_pairs


def _ranked_pairs(group: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detection order (group, -score, input), rank in group, and all (higher, lower) pairs in a group."""
    n = group.size
    order = np.lexsort((np.arange(n), -score, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    start_of = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.arange(n) - start_of
    # Pair every sorted position p with each earlier position of its group (rank[p] of them).
    later = np.repeat(np.arange(n), rank)
    earlier = np.repeat(start_of, rank) + (np.arange(later.size) - np.repeat(np.cumsum(rank) - rank, rank))
    return order, rank, earlier, later


def _pair_ious(det: Objects, a: np.ndarray, b: np.ndarray, geometry: str) -> np.ndarray:
    no_crowd = np.zeros(a.size, dtype=bool)
    if geometry == "image":
        return np.ones(a.size)
    if geometry == "bbox":
        return box_iou_pairs(det.boxes[a], det.boxes[b], no_crowd)
    if geometry == "segm":
        from jobs.evaluate.masks import mask_iou_within

        return mask_iou_within(det.masks, a, b, det.image[a].astype(np.int64) * (int(det.cls.max()) + 1) + det.cls[a])
    polygons = det.polygons.with_boxes(det.boxes)
    return polygon_iou_pairs(polygons, polygons, a, b, no_crowd)


def nms_keep(det: Objects, *, n_classes: int, iou_threshold: float, geometry: str) -> np.ndarray:
    """(n_detections,) bool: the detections NMS keeps, in the input order."""
    n = det.image.size
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    order, rank, earlier, later = _ranked_pairs(det.image * n_classes + det.cls, det.score)
    if later.size == 0:
        return keep
    overlap = _pair_ious(det, order[earlier], order[later], geometry) > iou_threshold
    earlier, later = earlier[overlap], later[overlap]
    by_rank = np.argsort(rank[later], kind="stable")
    earlier, later = earlier[by_rank], later[by_rank]
    bounds = np.searchsorted(rank[later], np.arange(rank.max() + 2))

    kept_sorted = np.ones(n, dtype=bool)
    for k in range(1, bounds.size - 1):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        # Ranks below k are final, so a suppressor's kept flag is known when rank k is decided.
        suppressed = later[lo:hi][kept_sorted[earlier[lo:hi]]]
        kept_sorted[suppressed] = False
    keep[order] = kept_sorted
    return keep
