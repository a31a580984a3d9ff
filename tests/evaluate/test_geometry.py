"""Polygon IoU: the numpy intersection of simple polygons against GEOS (shapely), and the builder."""

import numpy as np
import pytest
import shapely

from jobs.evaluate.geometry import (
    make_polygons,
    polygon_iou_pairs,
    simple_polygon_intersection_area,
)


def star(rng, n, cx, cy, r):
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.3, 1, n)
    return shapely.Polygon(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))


@pytest.mark.parametrize("seed", range(3))
def test_simple_intersection_area_equals_geos(seed):
    rng = np.random.default_rng(seed)
    a = np.array([star(rng, rng.integers(3, 20), *rng.uniform(-20, 50, 2), rng.uniform(1, 30)) for _ in range(2000)])
    b = np.array([star(rng, rng.integers(3, 20), *rng.uniform(-20, 50, 2), rng.uniform(1, 30)) for _ in range(2000)])
    a[:50] = shapely.reverse(a[:50])  # clockwise rings
    b[50:100] = a[50:100]  # identical
    a[100:110], b[100:110] = shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)  # touching: 0
    a[110:120], b[110:120] = shapely.box(0, 0, 10, 10), shapely.Polygon([(5, -3), (8, 12), (2, 12)])  # vertical edges
    ok = shapely.is_valid(a) & shapely.is_valid(b)
    a, b = a[ok], b[ok]
    want = shapely.area(shapely.intersection(a, b))
    got = simple_polygon_intersection_area(a, b)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_polygon_iou_mixes_numpy_and_geos_paths():
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], float)
    bowtie = np.array([0, 0, 10, 10, 10, 0, 0, 10], float)  # self-intersecting: made valid (MultiPolygon)
    holed = [np.array([20, 20, 30, 20, 30, 30, 20, 30], float), np.array([40, 40, 41, 40, 41, 41], float)]
    det = make_polygons([[square], [bowtie], holed], None)
    gt = make_polygons([[square], [square], [np.array([20, 20, 30, 20, 30, 30], float)]], None)
    iou = polygon_iou_pairs(det, gt, np.zeros(3, bool))
    want = shapely.area(shapely.intersection(det, gt)) / shapely.area(shapely.union(det, gt))
    np.testing.assert_allclose(iou, want, rtol=1e-12)
    assert iou[0] == 1.0 and 0 < iou[1] < 1


def test_min_iou_only_zeroes_pairs_below_it():
    rng = np.random.default_rng(7)
    parts = [[np.asarray(star(rng, 8, *rng.uniform(0, 40, 2), rng.uniform(5, 20)).exterior.coords).ravel()[:-2]]
             for _ in range(600)]
    det, gt = make_polygons(parts[:300], None), make_polygons(parts[300:], None)
    crowd = rng.random(300) < 0.2
    exact = polygon_iou_pairs(det, gt, crowd)
    bounded = polygon_iou_pairs(det, gt, crowd, min_iou=0.3)
    assert (exact >= 0.3).any() and ((exact > 0) & (exact < 0.3)).any()
    np.testing.assert_array_equal(bounded[exact >= 0.3], exact[exact >= 0.3])
    assert ((bounded == exact) | (bounded == 0))[exact < 0.3].all()
