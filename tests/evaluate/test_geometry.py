"""Polygon IoU against GEOS (shapely): the numpy path for simple polygons, the GEOS path for the
rest, the simplicity certificate, and the columnar `Polygons` they work on."""

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.evaluate.geometry import Polygons, _rings_of, _row_bounds, make_polygons, polygon_iou_pairs


def star(rng, n, cx, cy, r):
    """Flat x, y of a star-shaped ring (vertices at sorted angles around the centre)."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.3, 1, n)
    return np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]).ravel()


def geos_iou(det: Polygons, gt: Polygons, pair_det, pair_gt, crowd):
    d, g = make_polygons(det)[pair_det], make_polygons(gt)[pair_gt]
    inter = shapely.area(shapely.intersection(d, g))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / np.where(crowd, shapely.area(d), shapely.area(shapely.union(d, g)))
    return np.nan_to_num(iou)


def pairs_of(n):
    return np.arange(n), np.arange(n), np.zeros(n, bool)


@pytest.mark.parametrize("seed", range(3))
def test_star_shaped_pairs_equal_geos(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    a = [[star(rng, rng.integers(3, 20), *rng.uniform(-20, 50, 2), rng.uniform(1, 30))] for _ in range(n)]
    b = [[star(rng, rng.integers(3, 20), *rng.uniform(-20, 50, 2), rng.uniform(1, 30))] for _ in range(n)]
    for k in range(50):  # clockwise rings
        a[k] = [a[k][0].reshape(-1, 2)[::-1].ravel()]
    b[50:100] = a[50:100]  # identical
    a[100:110] = [[np.array([0, 0, 10, 0, 10, 10, 0, 10.0])]] * 10  # touching along an edge: 0
    b[100:110] = [[np.array([10, 0, 20, 0, 20, 10, 10, 10.0])]] * 10
    b[110:120] = [[np.array([5, -3, 8, 12, 2, 12.0])]] * 10  # vertical edges in a
    a[110:120] = a[100:110]
    det, gt = Polygons.from_rows(a), Polygons.from_rows(b)
    np.testing.assert_allclose(polygon_iou_pairs(det, gt, *pairs_of(n)), geos_iou(det, gt, *pairs_of(n)), rtol=1e-9, atol=1e-12)


def comb(x, y, teeth, w=2.0, h=10.0):
    """A simple polygon that is star-shaped about no point: a comb with `teeth` teeth."""
    top = []
    for t in range(teeth):
        top += [x + 2 * t * w, y + h, x + (2 * t + 1) * w, y + h, x + (2 * t + 1) * w, y + 2, x + (2 * t + 2) * w, y + 2]
    return np.array([x, y, x + 2 * teeth * w, y, x + 2 * teeth * w, y + h, *top[:-4]], float)


def test_every_kind_of_row_equals_geos():
    rng = np.random.default_rng(3)
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], float)
    rows = [
        [square],
        [np.array([0, 0, 10, 10, 10, 0, 0, 10], float)],  # bowtie: made valid (two triangles)
        [np.array([0, 0, 10, 0, 10, 10, 0, 10, 0, 0], float)],  # closed ring: first vertex repeated
        [np.array([0, 0, 10, 0, 10, 0, 10, 10, 0, 10], float)],  # a repeated vertex
        [comb(-3, -1, 4)],  # simple, not star-shaped: GEOS says valid, numpy intersects it
        [square + 3, np.array([30, 30, 40, 30, 40, 40], float)],  # two parts
        [square, square + 5],  # two overlapping parts: their union
        [np.array([0, 0, 5, 5, 10, 0, 10, 10, 5, 5, 0, 10], float)],  # touches itself at (5, 5)
        [np.array([0, 0, 10, 0, 20, 0], float)],  # no area
        [],  # no polygon: its box stands in
        [star(rng, 40, 5, 5, 6)],
    ]
    boxes = np.tile([1.0, 2.0, 6.0, 5.0], (len(rows), 1))
    det = Polygons.from_rows(rows).with_boxes(boxes)
    others = [[square], [square + 2], [comb(0, 0, 3)], [star(rng, 12, 4, 4, 7)]]
    gt = Polygons.from_rows(others)
    pair_det = np.repeat(np.arange(len(rows)), len(others))
    pair_gt = np.tile(np.arange(len(others)), len(rows))
    crowd = np.zeros(pair_det.size, bool)
    crowd[::3] = True
    got = polygon_iou_pairs(det, gt, pair_det, pair_gt, crowd)
    np.testing.assert_allclose(got, geos_iou(det, gt, pair_det, pair_gt, crowd), rtol=1e-9, atol=1e-12)
    assert got[0] == 1.0  # the square against itself
    assert got[9 * 4] > 0  # the box of the row without a polygon


def test_a_set_paired_with_itself():
    rng = np.random.default_rng(5)
    polys = Polygons.from_rows([[star(rng, 9, *rng.uniform(0, 30, 2), 8)] for _ in range(200)] + [[comb(5, 5, 3)]])
    a, b = np.triu_indices(len(polys), 1)
    none = np.zeros(a.size, bool)
    np.testing.assert_allclose(polygon_iou_pairs(polys, polys, a, b, none), geos_iou(polys, polys, a, b, none), atol=1e-12)


def test_min_iou_only_zeroes_pairs_below_it():
    rng = np.random.default_rng(7)
    rows = [[star(rng, 8, *rng.uniform(0, 40, 2), rng.uniform(5, 20))] for _ in range(600)]
    det, gt = Polygons.from_rows(rows[:300]), Polygons.from_rows(rows[300:])
    pair_det, pair_gt, _ = pairs_of(300)
    crowd = rng.random(300) < 0.2
    exact = polygon_iou_pairs(det, gt, pair_det, pair_gt, crowd)
    bounded = polygon_iou_pairs(det, gt, pair_det, pair_gt, crowd, min_iou=0.3)
    assert (exact >= 0.3).any() and ((exact > 0) & (exact < 0.3)).any()
    np.testing.assert_array_equal(bounded[exact >= 0.3], exact[exact >= 0.3])
    assert ((bounded == exact) | (bounded == 0))[exact < 0.3].all()


rings = st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), min_size=3, max_size=9)


@settings(max_examples=400, deadline=None)
@given(st.lists(rings, min_size=1, max_size=6))
def test_certificate_never_passes_a_ring_geos_finds_invalid(vertex_lists):
    """Random rings on a small grid: collinear, repeated, crossing and touching vertices are common.
    A ring certified simple must be valid to GEOS and have its area."""
    polys = Polygons.from_rows([[np.array(v, float).ravel()] for v in vertex_lists])
    rings_, _ = _rings_of(polys, _row_bounds(polys), np.arange(len(polys)))
    geoms = make_polygons(polys)
    raw_valid = shapely.is_valid(np.array([shapely.Polygon(v) for v in vertex_lists], dtype=object))
    certified = rings_.certified
    assert raw_valid[certified].all()
    np.testing.assert_allclose(rings_.row_area[certified], shapely.area(geoms)[certified], atol=1e-9)


def rows_as_lists(polys: Polygons) -> list[list[list[float]]]:
    flat = polys.xy.ravel().tolist()
    parts = [flat[2 * a:2 * b] for a, b in zip(polys.part_start[:-1], polys.part_start[1:])]
    return [parts[a:b] for a, b in zip(polys.row_start[:-1], polys.row_start[1:])]


def test_polygons_take_and_box_fallback_keep_rows():
    rows = [[np.array([0, 0, 1, 0, 1, 1.0])], [], [np.array([5, 5, 6, 5, 6, 6.0]), np.array([9, 9, 10, 9, 10, 10.0])]]
    polys = Polygons.from_rows(rows)
    taken = polys.take(np.array([2, 0, 2]))
    assert rows_as_lists(taken) == [
        [[5, 5, 6, 5, 6, 6], [9, 9, 10, 9, 10, 10]], [[0, 0, 1, 0, 1, 1]], [[5, 5, 6, 5, 6, 6], [9, 9, 10, 9, 10, 10]]]
    boxed = polys.with_boxes(np.array([[0, 0, 1, 1], [2, 3, 4, 5], [0, 0, 1, 1.0]]))
    assert rows_as_lists(boxed)[1] == [[2, 3, 6, 3, 6, 8, 2, 8]]
    assert [len(r) for r in rows_as_lists(boxed)] == [1, 1, 2]
    assert polys.with_boxes(None) is polys


def test_parts_are_unioned_like_pycocotools_segm():
    """Issue 11: [bowtie, square 2..8] against the square 0..10. The parts' union covers 68; a
    MultiPolygon of the two parts made valid kept 50 (IoU 0.50). pycocotools segm gives 0.68."""
    from pycocotools import mask as mask_utils

    bowtie, inner, square = [0, 0, 10, 10, 10, 0, 0, 10], [2, 2, 8, 2, 8, 8, 2, 8], [0, 0, 10, 0, 10, 10, 0, 10]
    det, gt = Polygons.from_rows([[bowtie, inner], [inner, bowtie]]), Polygons.from_rows([[square]])
    got = polygon_iou_pairs(det, gt, np.array([0, 1]), np.array([0, 0]), np.zeros(2, bool))
    np.testing.assert_allclose(got, [0.68, 0.68], atol=1e-12)
    theirs = mask_utils.iou([mask_utils.merge(mask_utils.frPyObjects([bowtie, inner], 10, 10))],
                            [mask_utils.merge(mask_utils.frPyObjects([square], 10, 10))], [0])[0, 0]
    assert theirs == pytest.approx(0.68, abs=1e-12)
