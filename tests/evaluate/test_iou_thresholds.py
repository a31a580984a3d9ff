"""COCO AP@[.5:.95] (EVAL_IOU_THRESHOLDS) against pycocotools' default ten thresholds."""


import numpy as np
import pytest

from common.errors import ConfigError
from common.settings import load_settings
from jobs.evaluate.settings import EvalSettings
from tests.evaluate.helpers import evaluate, make_coco_case, run_cocoeval, write_case


def pycocotools_ap_by_iou(gt, dets, tmp_path) -> tuple[np.ndarray, dict]:
    """pycocotools' default IoU thresholds, and per category id the AP at each (None without GT)."""
    ev = run_cocoeval(gt, dets, tmp_path)
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        prec = ev.eval["precision"][:, :, k, 0, 0]
        out[cat] = None if (prec == -1).all() else prec.mean(axis=1)
    return ev.params.iouThrs, out


@pytest.mark.parametrize("seed", range(6))
def test_ap_50_95_matches_pycocotools(seed, tmp_path, monkeypatch):
    gt, dets = make_coco_case(seed, round_scores=2 if seed % 2 else None)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    report = evaluate(monkeypatch, det_path, gt_path, iou_thresholds="0.5:0.95:0.05")
    thresholds, oracle = pycocotools_ap_by_iou(gt, dets, tmp_path)
    assert report.matching.iou_thresholds == thresholds.tolist()
    by_id = {c.class_id: c for c in report.classes}
    means = []
    for cat, want in oracle.items():
        got = by_id[cat]
        if want is None:
            assert got.average_precision_by_iou is None and got.average_precision_iou_mean is None
            continue
        assert list(got.average_precision_by_iou.values()) == pytest.approx(want.tolist(), abs=1e-6)
        assert got.average_precision_iou_mean == pytest.approx(float(want.mean()), abs=1e-6)
        # The extra thresholds never change the single-threshold results beside them.
        assert got.average_precision_by_iou["0.5"] == got.average_precision
        means.append(want)
    assert report.summary.mean_average_precision_iou_mean == pytest.approx(float(np.mean(means)), abs=1e-6)
    assert list(report.summary.mean_average_precision_by_iou) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75",
                                                                 "0.8", "0.85", "0.9", "0.95"]


def test_extra_thresholds_leave_the_report_otherwise_unchanged(tmp_path, monkeypatch):
    gt, dets = make_coco_case(11)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    plain = evaluate(monkeypatch, det_path, gt_path)
    extra = evaluate(monkeypatch, det_path, gt_path, iou_thresholds="[0.75, 0.5]")
    assert plain.summary.mean_average_precision_by_iou is None
    assert all(c.average_precision_by_iou is None for c in plain.classes)
    strip = {"average_precision_by_iou", "average_precision_iou_mean"}
    assert [c.model_dump(exclude=strip) for c in plain.classes] == [c.model_dump(exclude=strip) for c in extra.classes]
    with_gt = [c for c in extra.classes if c.n_ground_truth]
    assert all(list(c.average_precision_by_iou) == ["0.75", "0.5"] for c in with_gt)


@pytest.mark.parametrize("value, expected", [
    ("[0.5, 0.75]", [0.5, 0.75]),
    ("0.5:0.6:0.05", [0.5, 0.55, 0.6]),
    ("", []),
])
def test_iou_thresholds_forms(value, expected):
    env = {"EVAL_PREDICTIONS_URI": "p", "EVAL_ANNOTATIONS_URI": "a", "EVAL_OUTPUT_URI": "o", "EVAL_IOU_THRESHOLDS": value}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert load_settings(EvalSettings, env).iou_thresholds == pytest.approx(expected)


@pytest.mark.parametrize("value", ["[0, 0.5]", "[1.5]", "0.9:0.5:0.05", "0.5:0.9", "[0.5, 0.5]", "[oops"])
def test_bad_iou_thresholds_are_config_errors(value):
    env = {"EVAL_PREDICTIONS_URI": "p", "EVAL_ANNOTATIONS_URI": "a", "EVAL_OUTPUT_URI": "o", "EVAL_IOU_THRESHOLDS": value}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with pytest.raises(ConfigError, match="EVAL_IOU_THRESHOLDS"):
            load_settings(EvalSettings, env)
