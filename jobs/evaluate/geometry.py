"""IoU of (detection, ground truth) pairs: boxes with pycocotools' arithmetic, polygons exactly.

Box IoU repeats pycocotools' `bbIou` operation for operation in float64, so equal inputs give
bit-equal IoUs and the same matches at the threshold. For a crowd region the IoU is
intersection / detection area, as in COCO. Polygon IoU is exact (shapely), where pycocotools
rasterises masks; the two differ by rasterisation error only.
"""

from __future__ import annotations

import numpy as np


def box_iou_pairs(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of row-aligned pairs. det, gt: (n, 4) xywh float64; crowd: (n,) bool -> (n,) float64."""
    w = np.minimum(det[:, 0] + det[:, 2], gt[:, 0] + gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0])
    h = np.minimum(det[:, 1] + det[:, 3], gt[:, 1] + gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    det_area = det[:, 2] * det[:, 3]
    union = np.where(crowd, det_area, det_area + (gt[:, 2] * gt[:, 3]) - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(inter > 0, iou, 0.0)


def make_polygons(parts_per_row: list, boxes: np.ndarray | None):
    """shapely geometries, one per row; a row without a polygon uses its box rectangle."""
    import shapely

    geoms = np.empty(len(parts_per_row), dtype=object)
    for i, parts in enumerate(parts_per_row):
        if parts:
            polys = [shapely.Polygon(p.reshape(-1, 2)) for p in parts]
            geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
        elif boxes is not None:
            x, y, w, h = boxes[i]
            geom = shapely.box(x, y, x + w, y + h)
        else:
            geom = shapely.Polygon()
        geoms[i] = geom
    # Self-intersecting annotation polygons are common; make_valid keeps their covered area.
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    return geoms


def polygon_iou_pairs(det_geoms, gt_geoms, crowd: np.ndarray) -> np.ndarray:
    """Exact IoU of row-aligned shapely geometry pairs (crowd: intersection / detection area)."""
    import shapely

    iou = np.zeros(len(det_geoms))
    if not len(det_geoms):
        return iou
    # Only pairs whose bounding boxes overlap can intersect; skip the rest cheaply.
    db, gb = shapely.bounds(det_geoms), shapely.bounds(gt_geoms)
    near = (np.minimum(db[:, 2], gb[:, 2]) > np.maximum(db[:, 0], gb[:, 0])) & (
        np.minimum(db[:, 3], gb[:, 3]) > np.maximum(db[:, 1], gb[:, 1])
    )
    idx = np.flatnonzero(near)
    if idx.size:
        inter = shapely.area(shapely.intersection(det_geoms[idx], gt_geoms[idx]))
        det_area = shapely.area(det_geoms[idx])
        union = np.where(crowd[idx], det_area, det_area + shapely.area(gt_geoms[idx]) - inter)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou[idx] = np.where(union > 0, inter / union, 0.0)
    return iou
