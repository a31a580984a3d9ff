"""IoU of (detection, ground truth) pairs: boxes with pycocotools' arithmetic, polygons exactly.

Box IoU repeats pycocotools' `bbIou` operation for operation in float64, so equal inputs give
bit-equal IoUs and the same matches at the threshold. For a crowd region the IoU is
intersection / detection area, as in COCO.

Polygons stay columnar from load to match (`Polygons`: every vertex in one array, with part and
row offsets). Polygon IoU is exact, where pycocotools rasterises masks; the two differ by
rasterisation error only. A simple polygon (one part, no self-intersection) is intersected in
numpy from its edges; anything else (several parts, a self-intersecting ring) is made valid and
intersected by GEOS through shapely, which is imported only then.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# -- polygons as columns ---------------------------------------------------------------------------


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenation of arange(starts[i], stops[i]) over i, without a Python loop."""
    lengths = stops - starts
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))


@dataclass(frozen=True)
class Polygons:
    """Polygon rows, ragged. Row r owns parts row_start[r]:row_start[r+1]; part k owns vertices
    xy[part_start[k]:part_start[k+1]], an open ring (the last vertex joins the first). Several parts
    are their union, as in COCO. A row without parts (an RLE or missing segmentation) is empty."""

    xy: np.ndarray  # (m, 2) float64
    part_start: np.ndarray  # (parts + 1,) int64
    row_start: np.ndarray  # (rows + 1,) int64

    @classmethod
    def from_flat(cls, flat: np.ndarray, values_per_part: np.ndarray, parts_per_row: np.ndarray) -> Polygons:
        """From x0, y0, x1, y1, ... of every part in order, each part's count of values, each row's count of parts."""
        return cls(flat.reshape(-1, 2), _offsets(values_per_part // 2), _offsets(parts_per_row))

    @classmethod
    def from_rows(cls, rows: list[list]) -> Polygons:
        """From one list per row of flat (x0, y0, x1, y1, ...) sequences, one per part."""
        parts = [np.asarray(p, dtype=np.float64).reshape(-1) for row in rows for p in row]
        flat = np.concatenate(parts) if parts else np.zeros(0)
        sizes = np.array([p.size for p in parts], dtype=np.int64)
        return cls.from_flat(flat, sizes, np.array([len(row) for row in rows], dtype=np.int64))

    @classmethod
    def concatenate(cls, items: list[Polygons]) -> Polygons:
        """The rows of each item, in order."""
        return cls(np.concatenate([p.xy for p in items]), _offsets(np.concatenate([np.diff(p.part_start) for p in items])),
                   _offsets(np.concatenate([np.diff(p.row_start) for p in items])))

    def __len__(self) -> int:
        return self.row_start.size - 1

    def take(self, rows: np.ndarray) -> Polygons:
        return self._gather(self.row_start[rows], self.row_start[rows + 1], self.part_start, self.xy)

    @staticmethod
    def _gather(part_lo: np.ndarray, part_hi: np.ndarray, part_start: np.ndarray, xy: np.ndarray) -> Polygons:
        parts = _ranges(part_lo, part_hi)
        v_lo, v_hi = part_start[parts], part_start[parts + 1]
        return Polygons(xy[_ranges(v_lo, v_hi)], _offsets(v_hi - v_lo), _offsets(part_hi - part_lo))

    def with_boxes(self, boxes: np.ndarray | None) -> Polygons:
        """Rows without parts take their box's rectangle (xywh); without boxes they stay empty."""
        empty = np.flatnonzero(self.row_start[1:] == self.row_start[:-1])
        if boxes is None or empty.size == 0:
            return self
        x, y, w, h = boxes[empty].T
        corners = np.stack([x, y, x + w, y, x + w, y + h, x, y + h], axis=1).reshape(-1, 2)
        n_parts = self.part_start.size - 1
        part_start = np.r_[self.part_start, self.part_start[-1] + 4 * np.arange(1, empty.size + 1)]
        part_lo, part_hi = self.row_start[:-1].copy(), self.row_start[1:].copy()
        part_lo[empty] = n_parts + np.arange(empty.size)
        part_hi[empty] = part_lo[empty] + 1
        return self._gather(part_lo, part_hi, part_start, np.concatenate([self.xy, corners]))


def make_polygons(polys: Polygons, rows: np.ndarray | None = None):
    """shapely geometries of the given rows (all by default), made valid: self-intersecting
    annotation polygons are common, and `make_valid` keeps their covered area."""
    return _made_valid(_shapes(polys, rows))[0]


def _shapes(polys: Polygons, rows: np.ndarray | None):
    """shapely geometries: a row of one part is its Polygon as given, of several the union of its
    parts (each made valid), of none an empty Polygon."""
    import shapely

    sub = polys if rows is None else polys.take(np.asarray(rows, dtype=np.int64))
    n, n_parts = len(sub), np.diff(sub.row_start)
    geoms = np.full(n, shapely.Polygon(), dtype=object)
    if sub.xy.size:
        part_of_vertex = np.repeat(np.arange(n_parts.sum()), np.diff(sub.part_start))
        rings = shapely.polygons(shapely.linearrings(sub.xy, indices=part_of_vertex))
        single = np.flatnonzero(n_parts == 1)
        geoms[single] = rings[sub.row_start[single]]
        multi = np.flatnonzero(n_parts > 1)
        if multi.size:
            # Several parts are their union (as COCO's merged masks): each part made valid first,
            # since a MultiPolygon of overlapping or self-intersecting parts loses area in make_valid.
            parts, _ = _made_valid(rings)
            for r in multi.tolist():
                geoms[r] = shapely.union_all(parts[sub.row_start[r]:sub.row_start[r + 1]])
    return geoms


def _made_valid(geoms):
    """The geometries made valid, and which of them were valid already."""
    import shapely

    valid = shapely.is_valid(geoms)
    if not valid.all():
        geoms = geoms.copy()
        geoms[~valid] = shapely.make_valid(geoms[~valid])
    return geoms, valid


def _row_bounds(polys: Polygons) -> np.ndarray:
    """(n, 4) min x, min y, max x, max y of each row; NaN for a row without vertices (it overlaps nothing)."""
    v_start = polys.part_start[polys.row_start]
    has = v_start[1:] > v_start[:-1]
    bounds = np.full((len(polys), 4), np.nan)
    if has.any():
        at, x, y = v_start[:-1][has], polys.xy[:, 0], polys.xy[:, 1]
        bounds[has] = np.column_stack([np.minimum.reduceat(x, at), np.minimum.reduceat(y, at),
                                       np.maximum.reduceat(x, at), np.maximum.reduceat(y, at)])
    return bounds


class _Rings:
    """Per-row facts of some rows, from all their vertices at once: edges, orientation, area, and
    whether the row is certainly a simple polygon (one ring, star-shaped about its centroid)."""

    def __init__(self, polys: Polygons, bounds: np.ndarray):
        self.polys, self.bounds = polys, bounds
        xy, part_start, row_start = polys.xy, polys.part_start, polys.row_start
        n, n_parts = len(polys), part_start.size - 1
        part_len = np.diff(part_start)
        part_of = np.repeat(np.arange(n_parts), part_len)
        following = np.arange(1, len(xy) + 1)
        following[part_start[1:] - 1] = part_start[:-1]  # the last vertex of a ring joins its first
        x0, y0 = xy[:, 0].copy(), xy[:, 1].copy()  # contiguous: every step below runs over them
        x1, y1 = x0[following], y0[following]
        # Each ring relative to its first vertex: areas and centroids without cancellation.
        ox, oy = np.repeat(x0[part_start[:-1]], part_len), np.repeat(y0[part_start[:-1]], part_len)
        rx0, ry0, rx1, ry1 = x0 - ox, y0 - oy, x1 - ox, y1 - oy
        cross = rx0 * ry1 - rx1 * ry0
        area2 = np.bincount(part_of, cross, minlength=n_parts)  # twice the signed area
        orientation = np.sign(area2)
        turning = np.repeat(orientation, part_len)

        # Certificate of simplicity: seen from the centroid c, every edge turns the same way (the
        # cross product keeps its sign) and the ring winds around c once. Then the edges lie in
        # disjoint angular sectors and cannot cross. Zero-length edges (repeated vertices) are
        # neutral. Rows without it (not star-shaped, or not simple) are asked of GEOS if needed.
        with np.errstate(divide="ignore", invalid="ignore"):  # a ring without area has no centroid (NaN)
            cx = np.repeat(np.bincount(part_of, (rx0 + rx1) * cross, minlength=n_parts) / (3 * area2), part_len)
            cy = np.repeat(np.bincount(part_of, (ry0 + ry1) * cross, minlength=n_parts) / (3 * area2), part_len)
            ax, ay, bx, by = rx0 - cx, (ry0 - cy) * turning, rx1 - cx, (ry1 - cy) * turning  # y mirrored: all turn left
            size = np.repeat(np.abs(area2), part_len)
            still = (ax == bx) & (ay == by)
            bad_turns = np.bincount(part_of, ~((ax * by - ay * bx > 1e-12 * size) | still), minlength=n_parts)
            windings = np.bincount(part_of, (ay < 0) & (by >= 0), minlength=n_parts)  # crossings of the ray c + (t, 0)
        star = (bad_turns == 0) & (windings == 1) & (orientation != 0)
        self.one_part = np.diff(row_start) == 1
        part = row_start[:-1][self.one_part]
        self.certified = np.zeros(n, dtype=bool)
        self.certified[self.one_part] = star[part]
        self.row_area = np.full(n, np.nan)  # exact for one simple ring; others are measured by GEOS
        self.row_area[self.one_part] = np.abs(area2[part]) / 2

        # Edges, for the numpy intersection: row r's edges are its vertex range.
        v_start = part_start[row_start]
        self.first, self.count = v_start[:-1], np.diff(v_start)
        rightward = x0 <= x1
        self.x_lo, self.x_hi = np.where(rightward, x0, x1), np.where(rightward, x1, x0)
        self.y_lo = np.where(rightward, y0, y1)  # y at x_lo
        with np.errstate(divide="ignore", invalid="ignore"):
            self.slope = np.where(x1 != x0, (y1 - y0) / (x1 - x0), 0.0)
        # Trapezoid sign: leftward edges count +1 on a counter-clockwise ring; a clockwise ring flips.
        self.weight = np.sign(x0 - x1) * turning
        self.geoms: dict[int, object] = {}

    def resolve(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For these rows: simple (the numpy path) or not, and the exact area of each."""
        simple = self.certified[rows]
        area = self.row_area[rows]
        ask = ~simple
        if ask.any():
            import shapely

            uncertain = np.unique(rows[ask])
            geoms, valid = _made_valid(_shapes(self.polys, uncertain))
            self.geoms.update(zip(uncertain.tolist(), geoms))
            where = np.searchsorted(uncertain, rows[ask])
            simple[ask] = (self.one_part[uncertain] & valid)[where]  # a valid one-part row is one ring
            area[ask] = shapely.area(geoms)[where]
        return simple, area

    def geometries(self, rows: np.ndarray):
        """shapely geometries of these rows (made valid), built once per row."""
        missing = np.unique(rows[[r not in self.geoms for r in rows.tolist()]])
        if missing.size:
            self.geoms.update(zip(missing.tolist(), make_polygons(self.polys, missing)))
        return np.array([self.geoms[r] for r in rows.tolist()], dtype=object)


def _rings_of(polys: Polygons, bounds: np.ndarray, rows: np.ndarray) -> tuple[_Rings, np.ndarray]:
    """`_Rings` of just the given rows (repeats allowed), and each given row's index in it."""
    unique, local = np.unique(rows, return_inverse=True)
    return _Rings(polys.take(unique), bounds[unique]), local.reshape(-1)


def polygon_iou_pairs(det: Polygons, gt: Polygons, pair_det: np.ndarray, pair_gt: np.ndarray, crowd: np.ndarray,
                      *, min_iou: float = 0.0) -> np.ndarray:
    """Exact IoU of (det row, gt row) pairs (crowd: intersection / detection area).

    With `min_iou`, a pair whose IoU provably stays below it (from the areas and the overlap of
    the bounding boxes) is reported as 0 without intersecting the shapes.
    """
    iou = np.zeros(pair_det.size)
    if not pair_det.size:
        return iou
    det_bounds = _row_bounds(det)
    gt_bounds = det_bounds if gt is det else _row_bounds(gt)
    # Only pairs whose bounding boxes overlap can intersect; skip the rest cheaply.
    db, gb = det_bounds[pair_det], gt_bounds[pair_gt]
    overlap = np.maximum(np.minimum(db[:, 2], gb[:, 2]) - np.maximum(db[:, 0], gb[:, 0]), 0.0) * np.maximum(
        np.minimum(db[:, 3], gb[:, 3]) - np.maximum(db[:, 1], gb[:, 1]), 0.0
    )
    idx = np.flatnonzero(overlap > 0)
    if not idx.size:
        return iou
    # Edges and certificates only for the rows in those pairs (one side when pairing a set with itself).
    if gt is det:
        d_side, local = _rings_of(det, det_bounds, np.r_[pair_det[idx], pair_gt[idx]])
        g_side, d_rows, g_rows = d_side, local[:idx.size], local[idx.size:]
    else:
        d_side, d_rows = _rings_of(det, det_bounds, pair_det[idx])
        g_side, g_rows = _rings_of(gt, gt_bounds, pair_gt[idx])
    d_simple, det_area = d_side.resolve(d_rows)
    g_simple, gt_area = g_side.resolve(g_rows)
    if min_iou > 0:  # the intersection is at most the smaller area and the boxes' overlap
        most = np.minimum(np.minimum(det_area, gt_area), overlap[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = most / np.where(crowd[idx], det_area, det_area + gt_area - most)
        reach = ~(bound < min_iou)  # NaN (empty shapes) is kept for the exact path
        idx, d_rows, g_rows, det_area, gt_area = idx[reach], d_rows[reach], g_rows[reach], det_area[reach], gt_area[reach]
        d_simple, g_simple = d_simple[reach], g_simple[reach]
    if idx.size:
        simple = d_simple & g_simple
        inter = np.empty(idx.size)
        inter[simple] = _simple_intersection_area(d_side, g_side, d_rows[simple], g_rows[simple])
        if not simple.all():
            import shapely

            rest = ~simple
            inter[rest] = shapely.area(shapely.intersection(d_side.geometries(d_rows[rest]), g_side.geometries(g_rows[rest])))
        union = np.where(crowd[idx], det_area, det_area + gt_area - inter)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou[idx] = np.where(union > 0, inter / union, 0.0)
    return iou


# Edge pairs per block of the numpy intersection: small enough for its temporaries to stay in cache.
_EDGE_PAIRS_PER_BLOCK = 1 << 16


def _simple_intersection_area(ea: _Rings, eb: _Rings, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact area of row a[k] & row b[k] for simple polygons (one valid ring each), in float64.

    Above a line y = y0 under both, a polygon's indicator is a signed sum of the trapezoids
    between its edges and that line (sign: the edge's x direction times the ring's orientation;
    vertical edges add nothing). The intersection area is then a double sum over edge pairs of
    the area under the lower of two segments over their common x-range: a closed form, so the
    edge pairs of all polygon pairs run as array operations, without intersection geometries.
    """
    n = a.size
    out = np.zeros(n)
    if n == 0:
        return out
    y0 = np.minimum(ea.bounds[a, 1], eb.bounds[b, 1])  # per pair: heights are y - y0 >= 0
    na, nb = ea.count[a], eb.count[b]
    per_pair = na * nb
    ends = np.cumsum(per_pair)
    cuts = np.unique(np.r_[0, np.searchsorted(ends, np.arange(_EDGE_PAIRS_PER_BLOCK, ends[-1], _EDGE_PAIRS_PER_BLOCK)), n])
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        # Edge i of a[k] meets every edge j of b[k]: i repeats, j runs over b's edge range.
        fa, fb, ma, mb = ea.first[a[lo:hi]], eb.first[b[lo:hi]], na[lo:hi], nb[lo:hi]
        i = np.repeat(_ranges(fa, fa + ma), np.repeat(mb, ma))
        j = _ranges(np.repeat(fb, ma), np.repeat(fb + mb, ma))
        pair = np.repeat(np.arange(hi - lo), per_pair[lo:hi])
        a_lo, b_lo = ea.x_lo[i], eb.x_lo[j]
        left = np.maximum(a_lo, b_lo)
        width = np.minimum(ea.x_hi[i], eb.x_hi[j]) - left
        keep = np.flatnonzero(width > 0)  # x-ranges overlap (never a vertical edge)
        pair, i, j, left, width, a_lo, b_lo = pair[keep], i[keep], j[keep], left[keep], width[keep], a_lo[keep], b_lo[keep]
        a_slope, b_slope = ea.slope[i], eb.slope[j]
        pl = ea.y_lo[i] + a_slope * (left - a_lo)  # each segment's height at the ends of the common range
        ql = eb.y_lo[j] + b_slope * (left - b_lo)
        pr, qr = pl + a_slope * width, ql + b_slope * width
        dl, dr = pl - ql, pr - qr
        with np.errstate(divide="ignore", invalid="ignore"):
            # The integral of |p - q| over the range, p - q linear: split where it changes sign.
            abs_gap = np.where(dl * dr >= 0, np.abs(dl + dr) / 2, (dl * dl + dr * dr) / (2 * (np.abs(dl) + np.abs(dr))))
        under_lower = width * ((pl + pr + ql + qr) / 4 - y0[lo:hi][pair] - abs_gap / 2)
        out[lo:hi] += np.bincount(pair, ea.weight[i] * eb.weight[j] * under_lower, minlength=hi - lo)
    return np.maximum(out, 0.0)
