"""Temperature scaling: the fitted T recovers a known overconfidence, and ECE drops."""

import numpy as np
import pytest

from common.errors import InputDataError
from jobs.evaluate.calibration import (
    N_BINS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    logit,
    reliability_bins,
)
from tests.evaluate.helpers import evaluate, make_coco_case, write_case
from tests.evaluate.synthetic import (
    boxes_overconfident,
    image_level_overconfident,
    sigmoid,
)


@pytest.mark.parametrize("true_t", [0.5, 2.0, 3.0])
def test_fit_temperature_recovers_known_temperature(true_t):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 50_000)
    labels = rng.random(z.size) < sigmoid(z)
    fitted = fit_temperature(logit(sigmoid(true_t * z)), labels)
    assert fitted == pytest.approx(true_t, rel=0.05)


def test_fit_temperature_is_the_likelihood_maximum():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 2000)
    y = rng.random(z.size) < sigmoid(z / 1.7)
    t = fit_temperature(z, y)

    def nll(temp):
        p = sigmoid(z / temp)
        return -np.mean(y * np.log(p) + (~y) * np.log(1 - p))

    assert nll(t) <= min(nll(t * 0.99), nll(t * 1.01))


def test_fit_temperature_needs_both_labels():
    assert fit_temperature(np.array([1.0, 2.0]), np.array([True, True])) is None
    assert fit_temperature(np.zeros(0), np.zeros(0, bool)) is None


def test_ece_by_hand_with_15_equal_width_bins():
    conf = np.array([0.05, 0.05, 0.95, 0.95, 1.0])  # 1.0 falls in the last (closed) bin
    labels = np.array([0, 1, 1, 1, 0], bool)
    count, mean_conf, acc = reliability_bins(conf, labels)
    assert count.size == N_BINS == 15 and count[0] == 2 and count[14] == 3
    want = (2 * abs(0.5 - 0.05) + 3 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3)) / 5
    assert expected_calibration_error(conf, labels) == pytest.approx(want)
    assert expected_calibration_error(np.zeros(0), np.zeros(0, bool)) is None


def test_temperature_scaling_is_monotonic_and_maps_thresholds():
    s = np.linspace(0.01, 0.99, 50)
    out = apply_temperature(s, 2.5)
    assert np.all(np.diff(out) > 0)
    assert apply_temperature(np.array([0.5]), 3.0)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("maker, true_t", [(image_level_overconfident, 2.0), (boxes_overconfident, 2.0),
                                            (image_level_overconfident, 0.5)])
def test_job_fits_known_temperature_and_ece_drops(maker, true_t, tmp_path, monkeypatch):
    pred, gt = maker(tmp_path, temperature=true_t)
    report = evaluate(monkeypatch, pred, gt, calibration="temperature")
    c = report.calibration
    assert c.method == "temperature" and c.status == "ok" and c.fit == "cross_validation"
    assert c.temperature == pytest.approx(true_t, rel=0.1)
    assert c.ece_after < c.ece_before / 2
    assert c.nll_after < c.nll_before
    assert c.n_bins == 15 and "15 equal-width" in c.binning
    assert len(c.fold_temperatures) == 5 and len(c.reliability_before) == 15
    # Thresholds on both scales: calibrated = sigmoid(logit(raw) / T), per class and in summary.
    for cls in report.classes:
        cal = next(x for x in c.classes if x.name == cls.name)
        assert cal.threshold == cls.threshold
        if cls.threshold is not None:
            want = float(apply_temperature(np.array([cls.threshold]), c.temperature)[0])
            assert cal.calibrated_threshold == pytest.approx(want)
            assert c.thresholds[cls.name] == pytest.approx(want)
    assert report.config["calibration"] == "temperature"


def test_calibration_does_not_change_thresholds(tmp_path, monkeypatch):
    pred, gt = boxes_overconfident(tmp_path, temperature=2.0, n_images=200)
    plain = evaluate(monkeypatch, pred, gt)
    calibrated = evaluate(monkeypatch, pred, gt, calibration="temperature")
    assert [c.model_dump() for c in plain.classes] == [c.model_dump() for c in calibrated.classes]
    assert plain.calibration is None


def test_calibration_is_reproducible_with_the_seed(tmp_path, monkeypatch):
    pred, gt = image_level_overconfident(tmp_path, temperature=2.0, n_images=300)
    a = evaluate(monkeypatch, pred, gt, calibration="temperature", seed="3").calibration
    b = evaluate(monkeypatch, pred, gt, calibration="temperature", seed="3").calibration
    c = evaluate(monkeypatch, pred, gt, calibration="temperature", seed="4").calibration
    assert a == b
    assert a.temperature == c.temperature  # the refit on all images does not depend on the folds
    assert a.fold_temperatures != c.fold_temperatures


def test_scores_outside_0_1_are_refused(tmp_path, monkeypatch):
    gt, dets = make_coco_case(0)
    dets[0]["score"] = 3.5
    gt_path, det_path = write_case(tmp_path, gt, dets)
    with pytest.raises(InputDataError, match=r"\[0, 1\]"):
        evaluate(monkeypatch, det_path, gt_path, calibration="temperature")


def test_all_true_positives_cannot_be_fitted(tmp_path, monkeypatch):
    gt = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    gt_path, det_path = write_case(tmp_path, gt, dets)
    c = evaluate(monkeypatch, det_path, gt_path, calibration="temperature").calibration
    assert c.status == "not_fitted" and c.temperature is None and c.ece_after is None
    assert c.ece_before == pytest.approx(0.1)
