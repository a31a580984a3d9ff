"""Class-wise NMS before matching: agreement with a plain greedy loop, and its place in the report."""

import numpy as np
import pytest

from jobs.evaluate.align import Objects
from jobs.evaluate.geometry import Polygons, box_iou_pairs
from jobs.evaluate.nms import nms_keep
from tests.evaluate.helpers import evaluate, make_coco_case, write_case


def objects(image, cls, boxes, score, polygons=None):
    n = len(image)
    return Objects(image=np.asarray(image), cls=np.asarray(cls), boxes=np.asarray(boxes, float),
                   polygons=polygons, crowd=np.zeros(n, bool), score=np.asarray(score, float))


def greedy_nms(det: Objects, t: float) -> np.ndarray:
    """The textbook loop, one detection at a time."""
    keep = np.zeros(det.image.size, bool)
    order = np.lexsort((np.arange(det.image.size), -det.score))
    for i in order:
        same = np.flatnonzero(keep & (det.image == det.image[i]) & (det.cls == det.cls[i]))
        ious = box_iou_pairs(det.boxes[same], np.repeat(det.boxes[i:i + 1], same.size, 0), np.zeros(same.size, bool))
        keep[i] = not (ious > t).any()
    return keep


def test_suppresses_within_image_and_class_only():
    det = objects(image=[0, 0, 0, 1, 0], cls=[0, 0, 1, 0, 0],
                  boxes=[[0, 0, 10, 10], [1, 0, 10, 10], [1, 0, 10, 10], [1, 0, 10, 10], [50, 50, 10, 10]],
                  score=[0.9, 0.8, 0.7, 0.6, 0.5])
    assert nms_keep(det, n_classes=2, iou_threshold=0.5, geometry="bbox").tolist() == [True, False, True, True, True]


def test_suppressed_detections_do_not_suppress():
    # B overlaps A and C; A and C do not overlap: greedy keeps A and C.
    det = objects([0, 0, 0], [0, 0, 0], [[0, 0, 10, 10], [5, 0, 10, 10], [10, 0, 10, 10]], [0.9, 0.8, 0.7])
    assert nms_keep(det, n_classes=1, iou_threshold=0.3, geometry="bbox").tolist() == [True, False, True]


def test_iou_equal_to_threshold_is_kept():
    det = objects([0, 0], [0, 0], [[0, 0, 10, 10], [0, 0, 10, 5]], [0.9, 0.8])  # IoU exactly 0.5
    assert nms_keep(det, n_classes=1, iou_threshold=0.5, geometry="bbox").tolist() == [True, True]
    assert nms_keep(det, n_classes=1, iou_threshold=0.49, geometry="bbox").tolist() == [True, False]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("t", [0.3, 0.5, 0.7])
def test_agrees_with_greedy_loop(seed, t):
    rng = np.random.default_rng(seed)
    n = 300
    det = objects(rng.integers(0, 6, n), rng.integers(0, 3, n),
                  np.c_[rng.uniform(0, 60, (n, 2)), rng.uniform(5, 30, (n, 2))],
                  np.round(rng.random(n), 1))  # ties: input order decides
    assert np.array_equal(nms_keep(det, n_classes=3, iou_threshold=t, geometry="bbox"), greedy_nms(det, t))


def test_polygons_of_boxes_agree_with_boxes():
    rng = np.random.default_rng(7)
    n = 80
    boxes = np.c_[rng.uniform(0, 40, (n, 2)), rng.uniform(5, 30, (n, 2))]
    polys = Polygons.from_rows([[np.array([x, y, x + w, y, x + w, y + h, x, y + h])] for x, y, w, h in boxes])
    det = objects(rng.integers(0, 3, n), np.zeros(n, int), boxes, rng.random(n), polygons=polys)
    assert np.array_equal(nms_keep(det, n_classes=1, iou_threshold=0.5, geometry="polygon"),
                          nms_keep(det, n_classes=1, iou_threshold=0.5, geometry="bbox"))


def test_image_level_keeps_best_row_per_image_and_class():
    det = Objects(image=np.array([0, 0, 0, 1]), cls=np.array([0, 0, 1, 0]), boxes=None, polygons=None,
                  crowd=np.zeros(4, bool), score=np.array([0.2, 0.7, 0.1, 0.3]))
    assert nms_keep(det, n_classes=2, iou_threshold=0.5, geometry="image").tolist() == [False, True, True, True]


def test_job_applies_nms_before_matching_and_records_it(tmp_path, monkeypatch):
    gt, dets = make_coco_case(3, n_images=60)
    dup = [{**d, "score": d["score"] * 0.5} for d in dets]  # an exact lower-scored duplicate of each
    gt_path, det_path = write_case(tmp_path, gt, dets + dup)
    without = evaluate(monkeypatch, det_path, gt_path)
    with_nms = evaluate(monkeypatch, det_path, gt_path, nms_iou="0.9")
    assert without.nms is None and with_nms.config["nms_iou"] == 0.9
    assert with_nms.nms.iou_threshold == 0.9 and with_nms.nms.geometry == "bbox"
    assert with_nms.nms.detections_before == len(dets) * 2 and with_nms.nms.detections_after <= len(dets)
    # Every duplicate is gone, so the result equals evaluating the originals alone.
    gt_path, det_path = write_case(tmp_path, gt, dets)
    original = evaluate(monkeypatch, det_path, gt_path, nms_iou="0.9")
    assert [c.model_dump() for c in with_nms.classes] == [c.model_dump() for c in original.classes]
    assert sum(c.n_predictions for c in without.classes) == 2 * sum(c.n_predictions for c in with_nms.classes)
