"""Statuses, alignment, table formats and image-level evaluation, end to end in-process."""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.evaluate.helpers import evaluate, make_coco_case, write_case

GT_COCO = {
    "images": [{"id": 1, "file_name": "a/IMG_1.jpg"}, {"id": 2, "file_name": "a/IMG_2.jpg"}, {"id": 3, "file_name": "a/IMG_3.jpg"}],
    "annotations": [
        {"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 4, "bbox": [20, 20, 10, 10], "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bicycle"}, {"id": 4, "name": "cat"}],
}
PREDICTIONS = [  # image, category, score, box
    ("s3://cam/IMG_1.JPG", "car", 0.9, (0, 0, 10, 10)),
    ("s3://cam/IMG_2.JPG", "car", 0.8, (0, 0, 10, 10)),
    ("s3://cam/IMG_3.JPG", "car", 0.3, (50, 50, 10, 10)),  # FP
    ("s3://cam/IMG_1.JPG", "dog", 0.7, (20, 20, 10, 10)),
    ("s3://cam/IMG_2.JPG", "bicycle", 0.6, (0, 0, 5, 5)),  # a class nobody annotated
    ("s3://cam/IMG_9.JPG", "car", 0.99, (0, 0, 10, 10)),  # an image nobody annotated
    ("s3://cam/IMG_8.JPG", "dog", 0.99, (0, 0, 10, 10)),
]


def prediction_table():
    cols = list(zip(*PREDICTIONS))
    boxes = list(zip(*cols[3]))
    return pa.table({"image": cols[0], "category": cols[1], "score": cols[2], "bbox_x": boxes[0],
                     "bbox_y": boxes[1], "bbox_w": boxes[2], "bbox_h": boxes[3]})


@pytest.fixture
def inputs(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GT_COCO))
    table = prediction_table()
    paths = {"csv": tmp_path / "p.csv", "parquet": tmp_path / "p.parquet", "jsonl": tmp_path / "p.jsonl"}
    pacsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    paths["jsonl"].write_text("\n".join(json.dumps(dict(zip(table.column_names, row))) for row in zip(*table.to_pydict().values())))
    return gt, paths


def test_statuses_alignment_and_every_table_format(inputs, monkeypatch):
    gt, paths = inputs
    reports = {fmt: evaluate(monkeypatch, path, gt) for fmt, path in paths.items()}
    classes = {fmt: [c.model_dump() for c in r.classes] for fmt, r in reports.items()}
    assert classes["csv"] == classes["parquet"] == classes["jsonl"]
    report = reports["parquet"]
    by_name = {c.name: c for c in report.classes}
    car, dog, bicycle, cat = (by_name[n] for n in ("car", "dog", "bicycle", "cat"))
    assert (car.status, car.threshold, car.tp, car.fp, car.fn) == ("ok", 0.8, 2, 0, 1)
    assert car.precision == 1.0 and car.recall == pytest.approx(2 / 3) and car.f1 == pytest.approx(0.8)
    assert (dog.status, dog.threshold, dog.average_precision) == ("ok", 0.7, pytest.approx(1.0))
    assert bicycle.status == "no_ground_truth"
    assert bicycle.average_precision is None and bicycle.threshold is None and bicycle.recall is None
    assert bicycle.n_predictions == 1
    assert cat.status == "no_predictions" and cat.threshold is None and cat.f1 == 0.0 and cat.fn == 1
    assert report.summary.thresholds == {"car": 0.8, "dog": 0.7}
    assert report.summary.mean_average_precision == pytest.approx((car.average_precision + 1.0 + 0.0) / 3)
    unmatched = report.alignment.unmatched_prediction_images
    assert (unmatched.images, unmatched.rows) == (2, 2)
    assert sorted(unmatched.examples) == ["s3://cam/IMG_8.JPG", "s3://cam/IMG_9.JPG"]
    assert report.alignment.matched_images == 3 and report.alignment.join == "basename"


def test_exact_join_joins_nothing_here(inputs, monkeypatch):
    gt, paths = inputs
    report = evaluate(monkeypatch, paths["csv"], gt, join_key="exact")
    assert report.alignment.matched_images == 0
    assert report.alignment.unmatched_prediction_images.rows == len(PREDICTIONS)


def test_low_support_falls_back_to_the_global_threshold(inputs, monkeypatch):
    gt, paths = inputs
    report = evaluate(monkeypatch, paths["csv"], gt, min_support="2")
    dog = next(c for c in report.classes if c.name == "dog")
    assert dog.status == "low_support" and dog.threshold == report.summary.global_threshold is not None


def test_policy_unreachable_gives_no_threshold(inputs, monkeypatch):
    gt, paths = inputs
    report = evaluate(monkeypatch, paths["csv"], gt, policy="recall>=1")
    car = next(c for c in report.classes if c.name == "car")
    assert car.status == "policy_unreachable" and car.threshold is None and car.f1 is None
    assert "car" not in report.summary.thresholds


def test_column_mapping(tmp_path, inputs, monkeypatch):
    gt, _ = inputs
    table = prediction_table().rename_columns(["path", "label", "confidence", "x", "y", "w", "h"])
    path = tmp_path / "renamed.csv"
    pacsv.write_csv(table, path)
    columns = {"image": "path", "category": "label", "score": "confidence",
               "bbox_x": "x", "bbox_y": "y", "bbox_w": "w", "bbox_h": "h"}
    report = evaluate(monkeypatch, path, gt, columns=columns)
    assert report.summary.thresholds == {"car": 0.8, "dog": 0.7}


def test_image_level_multilabel(tmp_path, monkeypatch):
    """No geometry on either side: a prediction is right when the image carries the label."""
    gt = tmp_path / "labels.csv"
    gt.write_text("image,category\nx1.png,cat\nx1.png,dog\nx2.png,dog\nx3.png,\n")
    preds = tmp_path / "scores.csv"
    preds.write_text("image,category,score\nx1.png,cat,0.9\nx2.png,cat,0.8\nx3.png,cat,0.1\n"
                     "x1.png,dog,0.7\nx2.png,dog,0.4\nx3.png,dog,0.6\n")
    report = evaluate(monkeypatch, preds, gt)
    assert report.matching.geometry == "image" and report.alignment.annotation_images == 3
    by_name = {c.name: c for c in report.classes}
    assert (by_name["cat"].n_ground_truth, by_name["cat"].threshold, by_name["cat"].tp) == (1, 0.9, 1)
    assert (by_name["dog"].n_ground_truth, by_name["dog"].threshold) == (2, 0.4)
    assert by_name["dog"].precision == pytest.approx(2 / 3) and by_name["dog"].recall == 1.0


def test_polygons_use_exact_polygon_iou(tmp_path, monkeypatch):
    triangle = [0, 0, 10, 0, 0, 10]  # area 50; its box has area 100
    gt = {"images": [{"id": 1, "file_name": "p.jpg"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                           "segmentation": [triangle], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "shape"}]}
    # The opposite triangle: boxes identical (IoU 1), polygons share only the diagonal (IoU 0).
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9,
             "segmentation": [[10, 10, 10, 0, 0, 10]]}]
    gt_path, det_path = write_case(tmp_path, gt, dets)
    polygon = evaluate(monkeypatch, det_path, gt_path)
    boxes = evaluate(monkeypatch, det_path, gt_path, iou_type="bbox")
    assert polygon.matching.geometry == "polygon" and polygon.classes[0].tp == 0
    assert boxes.matching.geometry == "bbox" and boxes.classes[0].tp == 1


def test_report_is_invariant_to_prediction_order(tmp_path, monkeypatch):
    gt, dets = make_coco_case(11, round_scores=None)
    a = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    (tmp_path / "r").mkdir()
    b = evaluate(monkeypatch, *reversed(write_case(tmp_path / "r", gt, dets[::-1])))
    assert [c.model_dump() for c in a.classes] == [c.model_dump() for c in b.classes]


def test_string_image_ids_stay_apart_from_int_ids(tmp_path, monkeypatch):
    """COCO image 12 and image "12" are different images (ids are read as ints only when all are)."""
    gt = {"images": [{"id": 12, "file_name": "a.jpg"}, {"id": "12", "file_name": "b.jpg"}],
          "annotations": [{"id": 1, "image_id": 12, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
                          {"id": 2, "image_id": "12", "category_id": 1, "bbox": [50, 50, 10, 10], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "car"}]}
    dets = [{"image_id": 12, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.9},  # a miss: that box is on "12"
            {"image_id": "12", "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.8}]  # a hit
    gt_path, det_path = write_case(tmp_path, gt, dets)
    car = evaluate(monkeypatch, det_path, gt_path).classes[0]
    assert car.average_precision == pytest.approx(0.5 * 51 / 101)  # the false positive ranks first
