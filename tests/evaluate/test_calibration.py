"""Calibration: temperature, Platt and isotonic maps, global and per class: known temperatures are
recovered, fits equal independent ones on the same pairs, ECE keeps its definition, maps are exported."""

import numpy as np
import pytest
import structlog

from common.errors import InputDataError
from jobs.evaluate.calibration import (
    N_BINS,
    apply_calibration,
    apply_temperature,
    class_groups,
    cross_fitted_scores,
    expected_calibration_error,
    fit_map,
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


# --- Platt and isotonic, per class: against independent fits on the same pairs -------------------

def image_level_pairs(pred_path, gt_path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class, (raw scores, labels) of the image-level synthetic case: every prediction row is a
    pair, labelled by whether the annotations list its (image, class)."""
    import pyarrow.parquet as pq

    pred, gt = pq.read_table(pred_path).to_pydict(), pq.read_table(gt_path).to_pydict()
    positive = set(zip(gt["image"], gt["category"]))
    out = {}
    for name in sorted(set(pred["category"])):
        rows = [i for i, c in enumerate(pred["category"]) if c == name]
        out[name] = (np.array([pred["score"][i] for i in rows]),
                     np.array([(pred["image"][i], name) in positive for i in rows]))
    return out


def scipy_platt(scores, labels):
    """Maximum-likelihood (a, b) of sigmoid(a logit(s) + b), by scipy's BFGS on the NLL with its gradient."""
    from scipy.optimize import minimize

    z, y = logit(scores), labels.astype(np.float64)

    def nll(ab):
        u = ab[0] * z + ab[1]
        p = sigmoid(u)
        return np.mean(np.logaddexp(0.0, u) - y * u), np.array([np.mean((p - y) * z), np.mean(p - y)])

    return minimize(nll, np.array([1.0, 0.0]), jac=True, method="BFGS", options={"gtol": 1e-12}).x


def scipy_isotonic(scores, labels):
    """The isotonic least-squares fit at each pair (scores distinct), by scipy's PAVA."""
    from scipy.optimize import isotonic_regression

    s = np.clip(scores, 1e-6, 1 - 1e-6)
    order = np.argsort(s)
    fitted = np.empty(s.size)
    fitted[order] = isotonic_regression(labels[order].astype(np.float64)).x
    return fitted


def by_hand_ece(conf, labels, n_bins=15):
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for k in range(n_bins):
        last = k == n_bins - 1
        inside = (conf >= edges[k]) & ((conf <= edges[k + 1]) if last else (conf < edges[k + 1]))
        if inside.any():
            total += inside.sum() * abs(labels[inside].mean() - conf[inside].mean())
    return total / conf.size


TEMPERATURES = [0.5, 1.0, 2.0, 3.0]


def test_per_class_temperatures_are_recovered(tmp_path, monkeypatch):
    pred, gt = image_level_overconfident(tmp_path, temperature=TEMPERATURES, n_images=4000)
    per_class = evaluate(monkeypatch, pred, gt, calibration="temperature", calibration_scope="per_class").calibration
    pooled = evaluate(monkeypatch, pred, gt, calibration="temperature").calibration
    assert per_class.scope == "per_class" and pooled.scope == "global"
    for m in per_class.per_class:
        assert m.method == "temperature" and m.fit == "class" and not m.fallback and m.n == 4000
        assert m.temperature == pytest.approx(TEMPERATURES[int(m.name[1:])], rel=0.1)
    # One T cannot fit four: every class is better calibrated by its own, and so is the pool.
    for own, shared in zip(per_class.per_class, pooled.per_class):
        assert shared.fit == "global" and shared.temperature == pooled.temperature
        assert own.ece_after < shared.ece_after
    assert per_class.ece_after < pooled.ece_after / 2
    assert per_class.ece_before == pooled.ece_before  # the raw side is the same


@pytest.mark.parametrize("scope", ["global", "per_class"])
def test_platt_equals_an_independent_maximum_likelihood_fit(scope, tmp_path, monkeypatch):
    pred, gt = image_level_overconfident(tmp_path, temperature=TEMPERATURES, n_images=1500)
    pairs = image_level_pairs(pred, gt)
    c = evaluate(monkeypatch, pred, gt, calibration="platt", calibration_scope=scope).calibration
    assert c.method == "platt" and c.temperature is None and c.fold_temperatures == []
    a, b = scipy_platt(*map(np.concatenate, zip(*pairs.values())))
    assert (c.global_map.a, c.global_map.b) == pytest.approx((a, b), abs=1e-5)
    for m in c.per_class:
        want = scipy_platt(*pairs[m.name]) if scope == "per_class" else (a, b)
        assert (m.a, m.b) == pytest.approx(tuple(want), abs=1e-5)
        assert m.score_breakpoints is None and m.temperature is None
    if scope == "per_class":  # the per-class slopes follow 1 / T
        slopes = {m.name: m.a for m in c.per_class}
        assert [slopes[f"c{k}"] for k in range(4)] == pytest.approx([1 / t for t in TEMPERATURES], rel=0.15)


@pytest.mark.parametrize("scope", ["global", "per_class"])
def test_isotonic_equals_an_independent_fit(scope, tmp_path, monkeypatch):
    from sklearn.isotonic import IsotonicRegression

    pred, gt = image_level_overconfident(tmp_path, temperature=TEMPERATURES, n_images=1500)
    pairs = image_level_pairs(pred, gt)
    c = evaluate(monkeypatch, pred, gt, calibration="isotonic", calibration_scope=scope).calibration
    everything = tuple(map(np.concatenate, zip(*pairs.values())))
    for m in c.per_class:
        scores, labels = pairs[m.name] if scope == "per_class" else everything
        mine = apply_calibration(m.model_dump(), scores)
        assert mine == pytest.approx(scipy_isotonic(scores, labels), abs=1e-12)
        sk = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(np.clip(scores, 1e-6, 1 - 1e-6), labels)
        assert mine == pytest.approx(sk.predict(np.clip(scores, 1e-6, 1 - 1e-6)), abs=1e-12)
        assert np.all(np.diff(m.calibrated_breakpoints) >= 0) and np.all(np.diff(m.score_breakpoints) > 0)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
@pytest.mark.parametrize("scope", ["global", "per_class"])
def test_ece_definitions_are_unchanged(method, scope, tmp_path, monkeypatch):
    """ECE before on the clipped raw scores, after on the cross-fitted scores, by hand, per class and pooled."""
    from jobs.evaluate.job import evaluate as evaluate_job
    from tests.evaluate.helpers import eval_settings

    pred, gt = image_level_overconfident(tmp_path, temperature=TEMPERATURES, n_images=800)
    s = eval_settings(monkeypatch, predictions_uri=str(pred), annotations_uri=str(gt), output_uri="unused",
                      calibration=method, calibration_scope=scope)
    report, evidence = evaluate_job(s, "test-run", structlog.get_logger())
    c = report.calibration
    raw = np.clip(evidence.aligned.det.score, 1e-6, 1 - 1e-6)
    labels, cls, after = evidence.matches.tp, evidence.aligned.det.cls, evidence.calibrated
    assert c.ece_before == pytest.approx(by_hand_ece(raw, labels), abs=1e-12)
    assert c.ece_after == pytest.approx(by_hand_ece(after, labels), abs=1e-12)
    for k, m in enumerate(c.per_class):
        mine = cls == k
        assert m.ece_before == pytest.approx(by_hand_ece(raw[mine], labels[mine]), abs=1e-12)
        assert m.ece_after == pytest.approx(by_hand_ece(after[mine], labels[mine]), abs=1e-12)
        assert c.classes[k].ece_after == m.ece_after and c.classes[k].n_detections == m.n
    assert c.ece_after < c.ece_before


def test_cross_fitting_scores_each_detection_with_maps_that_never_saw_it():
    """cross_fitted_scores against refits by hand: per fold, per class, with the global fallback."""
    rng = np.random.default_rng(5)
    n = 3000
    cls = rng.integers(0, 3, n)
    scores = rng.random(n)
    labels = rng.random(n) < scores ** np.array([0.5, 1.0, 2.0])[cls]
    fold = rng.integers(0, 4, n)
    groups = class_groups(cls, 3)
    own = [True, True, False]
    fallback = fit_map("isotonic", scores, labels)
    out, fold_maps = cross_fitted_scores("isotonic", scores, labels, fold, 4, groups, own, fallback)
    assert len(fold_maps) == 4
    for k in range(4):
        held = fold == k
        pooled = fit_map("isotonic", scores[~held], labels[~held])
        for c in range(3):
            test = held & (cls == c)
            chosen = fit_map("isotonic", scores[~held & (cls == c)], labels[~held & (cls == c)]) if own[c] else pooled
            assert out[test] == pytest.approx(chosen.apply(scores[test]), abs=0)


def test_classes_under_the_minimum_support_fall_back_to_the_global_map(tmp_path, monkeypatch):
    pred, gt = image_level_overconfident(tmp_path, temperature=[2.0, 2.0, 0.5], n_images=300, n_classes=3)
    c = evaluate(monkeypatch, pred, gt, calibration="platt", calibration_scope="per_class",
                 calibration_min_detections=301).calibration
    assert all(m.fallback and m.fallback_reason == "low_support" and m.fit == "global" for m in c.per_class)
    assert {(m.a, m.b) for m in c.per_class} == {(c.global_map.a, c.global_map.b)}
    c = evaluate(monkeypatch, pred, gt, calibration="platt", calibration_scope="per_class",
                 calibration_min_detections=300).calibration
    assert not any(m.fallback for m in c.per_class) and len({m.a for m in c.per_class}) == 3


def test_a_class_with_only_true_positives_falls_back(tmp_path, monkeypatch):
    gt = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(1, 201)],
          "categories": [{"id": 1, "name": "mixed"}, {"id": 2, "name": "always_right"}], "annotations": []}
    dets, rng = [], np.random.default_rng(0)
    for i in range(1, 201):
        gt["annotations"].append({"id": 2 * i, "image_id": i, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 0})
        dets.append({"image_id": i, "category_id": 2, "bbox": [0, 0, 10, 10], "score": float(rng.uniform(0.5, 1))})
        hit = bool(rng.random() < 0.5)
        if hit:
            gt["annotations"].append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "bbox": [50, 50, 10, 10],
                                      "iscrowd": 0})
        dets.append({"image_id": i, "category_id": 1, "bbox": [50, 50, 10, 10], "score": float(rng.uniform(0.3, 0.9))})
    gt_path, det_path = write_case(tmp_path, gt, dets)
    c = evaluate(monkeypatch, det_path, gt_path, calibration="isotonic", calibration_scope="per_class",
                 calibration_min_detections=10).calibration
    by_name = {m.name: m for m in c.per_class}
    assert by_name["always_right"].fallback_reason == "one_label" and by_name["always_right"].fit == "global"
    assert by_name["mixed"].fit == "class" and not by_name["mixed"].fallback


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_never_changes_thresholds(method, tmp_path, monkeypatch):
    pred, gt = boxes_overconfident(tmp_path, temperature=2.0, n_images=200)
    plain = evaluate(monkeypatch, pred, gt)
    calibrated = evaluate(monkeypatch, pred, gt, calibration=method, calibration_scope="per_class",
                          calibration_min_detections=10)
    assert [c.model_dump() for c in plain.classes] == [c.model_dump() for c in calibrated.classes]


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_maps_are_exported_for_serving(method, tmp_path, monkeypatch):
    """calibration.json beside the report: applying a class's map to its raw threshold gives the
    report's calibrated threshold, and the pooled map gives the global one."""
    import json

    from jobs.evaluate import job
    from tests.evaluate.helpers import eval_settings

    pred, gt = image_level_overconfident(tmp_path, temperature=TEMPERATURES, n_images=600)
    out = tmp_path / "out"
    s = eval_settings(monkeypatch, predictions_uri=str(pred), annotations_uri=str(gt), output_uri=str(out),
                      calibration=method, calibration_scope="per_class", calibration_min_detections=100, plots="false")
    assert job.run(s, "serve", structlog.get_logger()) == 0
    report = json.loads((out / "thresholds.json").read_text())
    doc = json.loads((out / "calibration.json").read_text())
    assert report["artifacts"]["calibration"] == "calibration.json"
    assert doc["method"] == method and doc["scope"] == "per_class" and set(doc["classes"]) == {"c0", "c1", "c2", "c3"}
    cal = report["calibration"]
    for cls in report["classes"]:
        entry = doc["classes"][cls["name"]]
        assert entry["fit"] == "class"
        if cls["threshold"] is not None:
            want = cal["thresholds"][cls["name"]]
            assert apply_calibration(entry, [cls["threshold"]])[0] == pytest.approx(want, abs=1e-12)
    assert apply_calibration(doc["global"], [report["summary"]["global_threshold"]])[0] == pytest.approx(
        cal["global_threshold"], abs=1e-12)
    assert doc["thresholds"]["calibrated"] == cal["thresholds"]


def test_a_retried_slot_writes_the_maps_its_first_attempt_missed(tmp_path, monkeypatch):
    import json

    from jobs.evaluate import job
    from tests.evaluate.helpers import eval_settings

    pred, gt = image_level_overconfident(tmp_path, temperature=2.0, n_images=300)
    out = tmp_path / "nightly"
    s = eval_settings(monkeypatch, predictions_uri=str(pred), annotations_uri=str(gt), output_uri=str(out),
                      output_layout="runs", calibration="isotonic", plots="false")
    assert job.run(s, "slot-1", structlog.get_logger()) == 0
    maps = out / "runs" / "slot-1" / "calibration.json"
    first = maps.read_bytes()
    assert json.loads(first)["run_id"] == "slot-1"
    maps.unlink()  # the first attempt stopped between the report and the maps
    assert job.run(s, "slot-1", structlog.get_logger()) == 0
    assert maps.read_bytes() == first  # rebuilt from the committed report
