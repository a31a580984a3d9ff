"""Honest thresholds: chosen on one seeded image split, measured on the other."""

import numpy as np
import pytest
import structlog

from jobs.evaluate.align import align
from jobs.evaluate.classes import evaluate_at_thresholds, evaluate_classes
from jobs.evaluate.job import load_inputs
from jobs.evaluate.match import match_detections
from jobs.evaluate.settings import EvalSettings
from jobs.evaluate.split import holdout_mask, take_images
from jobs.evaluate.sweep import Policy
from tests.evaluate.helpers import evaluate, make_coco_case, write_case


def prepared(tmp_path, monkeypatch, seed=0, n_images=80):
    gt, dets = make_coco_case(seed, n_images=n_images)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    monkeypatch.setenv("EVAL_PREDICTIONS_URI", str(det_path))
    monkeypatch.setenv("EVAL_ANNOTATIONS_URI", str(gt_path))
    monkeypatch.setenv("EVAL_OUTPUT_URI", str(tmp_path / "out"))
    tables = load_inputs(EvalSettings(), structlog.get_logger())
    aligned = align(tables["annotations"][0], tables["predictions"][0], join_key="basename", iou_type="auto")
    matches = match_detections(aligned.det, aligned.gt, n_classes=len(aligned.classes), iou_threshold=0.5,
                               geometry=aligned.geometry)
    return (gt_path, det_path), aligned, matches


def test_holdout_mask_is_seeded_and_sized():
    a = holdout_mask(100, fraction=0.3, seed=1)
    assert a.sum() == 30 and np.array_equal(a, holdout_mask(100, fraction=0.3, seed=1))
    assert not np.array_equal(a, holdout_mask(100, fraction=0.3, seed=2))
    assert holdout_mask(100, fraction=0.0, seed=1).sum() == 0
    assert holdout_mask(2, fraction=0.01, seed=0).sum() == 1  # both sides keep an image
    assert holdout_mask(2, fraction=0.99, seed=0).sum() == 1


def test_taking_every_image_changes_nothing(tmp_path, monkeypatch):
    _, aligned, matches = prepared(tmp_path, monkeypatch)
    sub, sub_matches = take_images(aligned, matches, np.arange(aligned.n_images))
    want = evaluate_classes(aligned, matches, policy=Policy.parse("f1"), min_support=1)
    got = evaluate_classes(sub, sub_matches, policy=Policy.parse("f1"), min_support=1)
    assert got == want


def test_duplicated_images_double_the_counts(tmp_path, monkeypatch):
    _, aligned, matches = prepared(tmp_path, monkeypatch)
    twice = np.repeat(np.arange(aligned.n_images), 2)
    base, _ = evaluate_classes(aligned, matches, policy=Policy.parse("f1"), min_support=1)
    doubled, _ = evaluate_classes(*take_images(aligned, matches, twice), policy=Policy.parse("f1"), min_support=1)
    for b, d in zip(base, doubled):
        assert d.n_ground_truth == 2 * b.n_ground_truth and d.n_predictions == 2 * b.n_predictions
        assert d.threshold == b.threshold and d.f1 == pytest.approx(b.f1) if b.f1 is not None else True


def test_at_thresholds_on_the_same_images_reproduces_the_choice(tmp_path, monkeypatch):
    _, aligned, matches = prepared(tmp_path, monkeypatch)
    chosen, summary = evaluate_classes(aligned, matches, policy=Policy.parse("f1"), min_support=3)
    again, again_summary = evaluate_at_thresholds(aligned, matches, chosen, global_threshold=summary.global_threshold)
    assert again == chosen and again_summary == summary


def test_job_chooses_on_selection_and_reports_held_out(tmp_path, monkeypatch):
    (gt_path, det_path), aligned, matches = prepared(tmp_path, monkeypatch, n_images=120)
    report = evaluate(monkeypatch, det_path, gt_path, holdout_fraction="0.25", seed="5")
    h = report.holdout
    mask = holdout_mask(aligned.n_images, fraction=0.25, seed=5)
    assert (h.fraction, h.seed, h.unit) == (0.25, 5, "image")
    assert (h.selection_images, h.evaluation_images) == (90, 30)
    chosen, sel_summary = evaluate_classes(*take_images(aligned, matches, np.flatnonzero(~mask)), policy=Policy.parse("f1"), min_support=1)
    assert h.selection_classes == chosen and h.selection_summary == sel_summary
    held, _ = evaluate_at_thresholds(*take_images(aligned, matches, np.flatnonzero(mask)), chosen,
                                     global_threshold=sel_summary.global_threshold)
    assert report.classes == held
    for c, sel in zip(report.classes, chosen):
        assert c.threshold == sel.threshold and c.status == sel.status
        assert c.tp + c.fn == c.n_ground_truth  # counts describe the held-out images only
    assert sum(c.n_ground_truth for c in report.classes) + sum(c.n_ground_truth for c in chosen) == sum(
        1 for a in __import__("json").loads(gt_path.read_text())["annotations"] if not a["iscrowd"])
    assert report.summary.thresholds == sel_summary.thresholds
    assert report.config["holdout_fraction"] == 0.25


def test_no_holdout_by_default(tmp_path, monkeypatch):
    (gt_path, det_path), _, _ = prepared(tmp_path, monkeypatch)
    assert evaluate(monkeypatch, det_path, gt_path).holdout is None
