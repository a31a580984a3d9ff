"""Bootstrap over images: seeded, recorded, and intervals that behave."""

import json

import pytest

from tests.evaluate.helpers import evaluate, make_coco_case, write_case


@pytest.fixture
def case(tmp_path):
    gt, dets = make_coco_case(4, n_images=80, round_scores=None)
    return write_case(tmp_path, gt, dets)


def test_intervals_are_seeded_and_recorded(case, monkeypatch):
    gt_path, det_path = case
    a = evaluate(monkeypatch, det_path, gt_path, bootstrap="60", seed="7")
    b = evaluate(monkeypatch, det_path, gt_path, bootstrap="60", seed="7")
    c = evaluate(monkeypatch, det_path, gt_path, bootstrap="60", seed="8")
    assert a.bootstrap == b.bootstrap and a.bootstrap != c.bootstrap
    boot = a.bootstrap
    assert (boot.replicates, boot.seed, boot.unit, boot.confidence, boot.method) == (60, 7, "image", 0.95, "percentile")
    assert a.config["bootstrap"] == 60 and a.config["seed"] == 7
    assert [x.name for x in boot.classes] == [x.name for x in a.classes]


def test_intervals_bracket_the_estimates(case, monkeypatch):
    gt_path, det_path = case
    report = evaluate(monkeypatch, det_path, gt_path, bootstrap="200")
    for result, iv in zip(report.classes, report.bootstrap.classes):
        if result.n_ground_truth == 0:
            assert iv.average_precision.defined == 0 and iv.average_precision.low is None
            continue
        for name in ("average_precision", "f1", "threshold"):
            interval, value = getattr(iv, name), getattr(result, name)
            assert 0 < interval.defined <= 200
            assert interval.low <= interval.high
            assert interval.low - 0.05 <= value <= interval.high + 0.05
    s = report.bootstrap.mean_average_precision
    assert s.low <= report.summary.mean_average_precision <= s.high


def test_identical_images_give_zero_width_intervals(tmp_path, monkeypatch):
    gt, dets = make_coco_case(5, n_images=1, empty_class=False)
    one_gt, one_dets = gt["annotations"], dets
    images, anns, all_dets = [], [], []
    for i in range(20):  # twenty copies of one image: every resample is the same data, scaled
        images.append({"id": i + 1, "file_name": f"{i}.jpg"})
        anns += [{**a, "id": len(anns) + k + 1, "image_id": i + 1} for k, a in enumerate(one_gt)]
        all_dets += [{**d, "image_id": i + 1} for d in one_dets]
    gt_path, det_path = write_case(tmp_path, {**gt, "images": images, "annotations": anns}, all_dets)
    report = evaluate(monkeypatch, det_path, gt_path, bootstrap="30")
    for result, iv in zip(report.classes, report.bootstrap.classes):
        if result.threshold is not None:
            assert iv.threshold.low == iv.threshold.high == result.threshold
            assert iv.f1.low == pytest.approx(result.f1) and iv.f1.high == pytest.approx(result.f1)


def test_bootstrap_with_holdout_resamples_each_side(case, monkeypatch):
    gt_path, det_path = case
    report = evaluate(monkeypatch, det_path, gt_path, bootstrap="40", holdout_fraction="0.3")
    assert "separately" in report.bootstrap.resampling
    json.loads(report.model_dump_json())  # serialisable
