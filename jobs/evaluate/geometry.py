"""IoU of (detection, ground truth) pairs: boxes with pycocotools' arithmetic, polygons exactly.

Box IoU repeats pycocotools' `bbIou` operation for operation in float64, so equal inputs give
bit-equal IoUs and the same matches at the threshold. For a crowd region the IoU is
intersection / detection area, as in COCO. Polygon IoU is exact (shapely), where pycocotools
rasterises masks; the two differ by rasterisation error only.
"""

from __future__ import annotations

import itertools

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
    """shapely geometries, one per row; a row without a polygon uses its box rectangle.

    Built with shapely's array constructors (one call per kind, not one per row): a row of one
    part is a Polygon, of several a MultiPolygon.
    """
    import shapely

    n = len(parts_per_row)
    geoms = np.empty(n, dtype=object)
    n_parts = np.fromiter(map(len, parts_per_row), dtype=np.int64, count=n)
    parts = list(itertools.chain.from_iterable(parts_per_row))
    if parts:
        vertices = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)) // 2
        rings = shapely.linearrings(np.concatenate(parts).reshape(-1, 2), indices=np.repeat(np.arange(len(parts)), vertices))
        polygons = shapely.polygons(rings)
        part_row = np.repeat(np.arange(n), n_parts)
        single = n_parts == 1
        geoms[single] = polygons[np.searchsorted(part_row, np.flatnonzero(single))]
        multi = n_parts > 1
        if multi.any():
            in_multi = multi[part_row]
            multi_rows = np.flatnonzero(multi)
            geoms[multi] = shapely.multipolygons(polygons[in_multi], indices=np.searchsorted(multi_rows, part_row[in_multi]))
    empty = n_parts == 0
    if empty.any():
        if boxes is not None:
            x, y, w, h = boxes[empty].T
            geoms[empty] = shapely.box(x, y, x + w, y + h)
        else:
            geoms[empty] = shapely.Polygon()
    # Self-intersecting annotation polygons are common; make_valid keeps their covered area.
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    return geoms


def polygon_iou_pairs(det_geoms, gt_geoms, crowd: np.ndarray, *, min_iou: float = 0.0) -> np.ndarray:
    """Exact IoU of row-aligned shapely geometry pairs (crowd: intersection / detection area).

    With `min_iou`, a pair whose IoU provably stays below it (from the areas and the overlap of
    the bounding boxes) is reported as 0 without intersecting the shapes.
    """
    import shapely

    iou = np.zeros(len(det_geoms))
    if not len(det_geoms):
        return iou
    # Only pairs whose bounding boxes overlap can intersect; skip the rest cheaply.
    db, gb = shapely.bounds(det_geoms), shapely.bounds(gt_geoms)
    overlap = np.maximum(np.minimum(db[:, 2], gb[:, 2]) - np.maximum(db[:, 0], gb[:, 0]), 0.0) * np.maximum(
        np.minimum(db[:, 3], gb[:, 3]) - np.maximum(db[:, 1], gb[:, 1]), 0.0
    )
    idx = np.flatnonzero(overlap > 0)
    det_area, gt_area = shapely.area(det_geoms[idx]), shapely.area(gt_geoms[idx])
    if min_iou > 0:  # the intersection is at most the smaller area and the boxes' overlap
        most = np.minimum(np.minimum(det_area, gt_area), overlap[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = most / np.where(crowd[idx], det_area, det_area + gt_area - most)
        reach = ~(bound < min_iou)  # NaN (empty shapes) is kept for the exact path
        idx, det_area, gt_area = idx[reach], det_area[reach], gt_area[reach]
    if idx.size:
        d, g = det_geoms[idx], gt_geoms[idx]
        # Valid polygons without holes (the usual case) intersect in numpy; the rest through GEOS.
        simple = _is_simple_polygon(d) & _is_simple_polygon(g)
        inter = np.empty(idx.size)
        inter[simple] = simple_polygon_intersection_area(d[simple], g[simple])
        inter[~simple] = shapely.area(shapely.intersection(d[~simple], g[~simple]))
        union = np.where(crowd[idx], det_area, det_area + gt_area - inter)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou[idx] = np.where(union > 0, inter / union, 0.0)
    return iou


def _is_simple_polygon(geoms) -> np.ndarray:
    import shapely

    return (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON) & (shapely.get_num_interior_rings(geoms) == 0)


# Edge pairs per block of simple_polygon_intersection_area: bounds its temporaries (~100 MB).
_EDGE_PAIRS_PER_BLOCK = 1 << 20


def simple_polygon_intersection_area(a, b) -> np.ndarray:
    """Exact area of a[i] & b[i] for row-aligned simple polygons (valid, no holes), in float64.

    Above a line y = y0 under both, a polygon's indicator is a signed sum of the trapezoids
    between its edges and that line (sign: the edge's x direction times the ring's orientation;
    vertical edges add nothing). The intersection area is then a double sum over edge pairs of
    the area under the lower of two segments over their common x-range: a closed form, so the
    edge pairs of all polygon pairs run as array operations, without intersection geometries.
    """
    import shapely

    n = len(a)
    out = np.zeros(n)
    if n == 0:
        return out
    y0 = np.minimum(shapely.bounds(a)[:, 1], shapely.bounds(b)[:, 1])  # per pair: heights are y - y0 >= 0
    ea, eb = _Edges(a, n), _Edges(b, n)
    per_pair = ea.count * eb.count
    ends = np.cumsum(per_pair)
    cuts = np.unique(np.r_[0, np.searchsorted(ends, np.arange(_EDGE_PAIRS_PER_BLOCK, ends[-1], _EDGE_PAIRS_PER_BLOCK)), n])
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        counts = per_pair[lo:hi]
        pair = np.repeat(np.arange(lo, hi), counts)
        local = np.arange(pair.size) - np.repeat(np.cumsum(counts) - counts, counts)
        i, j = np.divmod(local, eb.count[pair])
        i += ea.first[pair]
        j += eb.first[pair]
        left = np.maximum(ea.x_lo[i], eb.x_lo[j])
        right = np.minimum(ea.x_hi[i], eb.x_hi[j])
        keep = np.flatnonzero(right > left)  # x-ranges overlap (never a vertical edge)
        pair, i, j, left, right = pair[keep], i[keep], j[keep], left[keep], right[keep]
        base = y0[pair]
        pl, pr = ea.y_at(i, left) - base, ea.y_at(i, right) - base
        ql, qr = eb.y_at(j, left) - base, eb.y_at(j, right) - base
        dl, dr = pl - ql, pr - qr
        with np.errstate(divide="ignore", invalid="ignore"):
            # The integral of |p - q| over [left, right], p - q linear: split where it changes sign.
            abs_gap = np.where(dl * dr >= 0, np.abs(dl + dr) / 2, (dl * dl + dr * dr) / (2 * (np.abs(dl) + np.abs(dr))))
        under_lower = (right - left) * ((pl + pr + ql + qr) / 4 - abs_gap / 2)
        out += np.bincount(pair, ea.weight[i] * eb.weight[j] * under_lower, minlength=n)
    return np.maximum(out, 0.0)


class _Edges:
    """The exterior-ring edges of n polygons, as flat per-edge arrays, grouped by polygon."""

    def __init__(self, geoms, n: int):
        import shapely

        xy, index = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
        same = np.flatnonzero(index[1:] == index[:-1])  # closed rings: consecutive points of one ring
        x0, y0, x1, y1 = xy[same, 0], xy[same, 1], xy[same + 1, 0], xy[same + 1, 1]
        geom = index[same]
        self.count = np.bincount(geom, minlength=n)
        self.first = np.cumsum(self.count) - self.count
        self.x_lo, self.x_hi = np.minimum(x0, x1), np.maximum(x0, x1)
        self.x0, self.y0 = x0, y0
        with np.errstate(divide="ignore", invalid="ignore"):
            self.slope = np.where(x1 != x0, (y1 - y0) / (x1 - x0), 0.0)
        # Trapezoid sign: leftward edges count +1 on a counter-clockwise ring; a clockwise ring flips.
        signed_area = np.bincount(geom, x0 * y1 - x1 * y0, minlength=n)
        self.weight = np.sign(x0 - x1) * np.sign(signed_area)[geom]

    def y_at(self, i: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.y0[i] + self.slope[i] * (x - self.x0[i])


