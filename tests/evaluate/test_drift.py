"""Drift against an earlier report: the comparison rules, and the job's exit codes end to end."""

import json
import subprocess
import sys

import pytest

from common.exitcodes import ExitCode
from jobs.evaluate.drift import compare_classes, config_differences
from tests.evaluate.helpers import write_case
from tests.evaluate.synthetic import separable_case


def cls(name, threshold, f1):
    return {"name": name, "threshold": threshold, "f1": f1}


def test_rules():
    base = [cls("a", 0.5, 0.8), cls("b", 0.5, 0.8), cls("c", 0.5, 0.8), cls("d", None, None), cls("e", 0.4, 0.7),
            cls("gone", 0.3, 0.5)]
    now = [cls("a", 0.55, 0.8), cls("b", 0.5501, 0.8), cls("c", 0.5, 0.74), cls("d", 0.6, 0.5), cls("e", None, None),
           cls("new", 0.2, 0.4)]
    changed, compared = compare_classes(now, base, threshold_tolerance=0.05, f1_tolerance=0.05)
    by = {c["class"]: c for c in changed}
    assert compared == 7
    assert "a" not in by  # |delta| == tolerance is not a change (up to float rounding)
    assert by["b"]["reasons"] == ["threshold"] and by["b"]["delta"] == pytest.approx(0.0501)
    assert by["c"]["reasons"] == ["f1"] and by["c"]["baseline_f1"] == 0.8 and by["c"]["f1"] == 0.74
    assert by["d"]["reasons"] == ["threshold_appeared"]
    assert by["e"]["reasons"] == ["threshold_disappeared"] and by["e"]["delta"] is None
    assert by["new"]["reasons"] == ["class_added"] and by["gone"]["reasons"] == ["class_removed"]
    assert [c["class"] for c in changed] == ["b", "c", "d", "e", "new", "gone"]


def test_f1_rise_is_not_drift_and_zero_tolerance_catches_any_move():
    base, now = [cls("a", 0.5, 0.5)], [cls("a", 0.5, 0.9)]
    assert compare_classes(now, base, threshold_tolerance=0.0, f1_tolerance=0.0)[0] == []
    moved = [cls("a", 0.5000001, 0.5)]
    assert compare_classes(moved, base, threshold_tolerance=0.0, f1_tolerance=0.0)[0][0]["reasons"] == ["threshold"]


def test_config_differences_flag_unfair_comparisons():
    defaults = {"nms_iou": None, "iou_threshold": 0.5}
    assert config_differences({"iou_threshold": 0.5, "nms_iou": None}, {"iou_threshold": 0.5}, defaults) == []
    diff = config_differences({"iou_threshold": 0.75, "nms_iou": 0.5}, {"iou_threshold": 0.5}, defaults)
    assert len(diff) == 2 and diff[0].startswith("iou_threshold")


def run_job(job_env, **env):
    full = {**job_env, **{f"EVAL_{k.upper()}": str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture
def first_run(tmp_path, job_env):
    gt, dets = separable_case()
    gt_path, det_path = write_case(tmp_path, gt, dets)
    out = tmp_path / "first"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out, plots="false")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return gt_path, det_path, out / "thresholds.json"


def test_same_inputs_against_own_report_exit_0_and_no_drift(first_run, tmp_path, job_env):
    gt_path, det_path, baseline = first_run
    out = tmp_path / "second"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out, baseline_uri=baseline,
                   drift_tolerance="0", drift_f1_tolerance="0", plots="false")
    assert proc.returncode == ExitCode.OK, proc.stdout
    drift = json.loads((out / "thresholds.json").read_text())["drift"]
    assert drift["baseline"] == str(baseline) and drift["changed"] == [] and drift["drifted"] is False
    assert drift["compared_classes"] == 3 and drift["config_differences"] == []
    assert drift["baseline_run_id"] and drift["baseline_version"].startswith("sha256:")


def test_shifted_scores_move_every_threshold_and_exit_drift(first_run, tmp_path, job_env):
    gt_path, _, baseline = first_run
    gt, dets = separable_case(shift=lambda s: s / 2)  # every threshold halves: it moves by >= 0.15
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    _, det_path = write_case(shifted, gt, dets)
    out = tmp_path / "drifted"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out, baseline_uri=baseline,
                   plots="false")
    assert proc.returncode == ExitCode.DRIFT_DETECTED == 3, proc.stdout
    report = json.loads((out / "thresholds.json").read_text())  # written despite the drift
    base = json.loads(baseline.read_text())
    changed = {c["class"]: c for c in report["drift"]["changed"]}
    assert set(changed) == {c["name"] for c in base["classes"]} == {"k0", "k1", "k2"}
    for b in base["classes"]:
        c = changed[b["name"]]
        assert "threshold" in c["reasons"]
        assert c["baseline_threshold"] == b["threshold"] and c["threshold"] == pytest.approx(b["threshold"] / 2)
        assert c["delta"] == pytest.approx(c["threshold"] - c["baseline_threshold"]) and c["delta"] < -0.05
        assert c["baseline_f1"] == b["f1"] and c["f1"] == pytest.approx(b["f1"])
    assert report["drift"]["drifted"] is True
    assert '"drift detected"' in proc.stdout

    # Configurable to exit 0: the report still lists the classes.
    out2 = tmp_path / "drifted-ok"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out2, baseline_uri=baseline,
                   fail_on_drift="false", plots="false")
    assert proc.returncode == 0
    assert len(json.loads((out2 / "thresholds.json").read_text())["drift"]["changed"]) == 3


def test_missing_named_baseline_is_an_input_error(first_run, tmp_path, job_env):
    gt_path, det_path, _ = first_run
    out = tmp_path / "x"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                   baseline_uri=tmp_path / "nope.json", plots="false")
    assert proc.returncode == ExitCode.INPUT_DATA
    assert not (out / "thresholds.json").exists()


def test_latest_in_flat_layout_is_the_report_in_place(first_run, job_env):
    gt_path, det_path, baseline = first_run
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=baseline.parent,
                   baseline_uri="latest", plots="false")
    assert proc.returncode == 0
    drift = json.loads(baseline.read_text())["drift"]
    assert drift["baseline"] == str(baseline) and drift["requested"] == "latest" and drift["changed"] == []


def test_bad_settings_are_config_errors(tmp_path, job_env):
    for env in ({"holdout_fraction": "1.5"}, {"calibration": "beta"}, {"nms_iou": "0"}, {"bootstrap": "-1"},
                {"output_layout": "nested"}):
        proc = run_job(job_env, predictions_uri="p", annotations_uri="a", output_uri=tmp_path, **env)
        assert proc.returncode == ExitCode.CONFIG, env


def test_baseline_may_name_the_earlier_output_folder(first_run, tmp_path, job_env):
    gt_path, det_path, baseline = first_run
    out = tmp_path / "third"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                   baseline_uri=baseline.parent, plots="false")
    assert proc.returncode == 0
    assert json.loads((out / "thresholds.json").read_text())["drift"]["baseline"] == str(baseline)


def test_baseline_schema_needs_only_names_thresholds_and_f1(tmp_path, first_run, job_env):
    gt_path, det_path, baseline = first_run
    old = {"classes": [{"name": c["name"], "threshold": c["threshold"], "f1": c["f1"]}
                       for c in json.loads(baseline.read_text())["classes"]]}
    minimal = tmp_path / "old.json"
    minimal.write_text(json.dumps(old))
    out = tmp_path / "fourth"
    proc = run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                   baseline_uri=minimal, plots="false")
    assert proc.returncode == 0, proc.stdout
    drift = json.loads((out / "thresholds.json").read_text())["drift"]
    assert drift["changed"] == [] and drift["baseline_run_id"] is None

    minimal.write_text("[1, 2]")
    assert run_job(job_env, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                   baseline_uri=minimal, plots="false").returncode == ExitCode.INPUT_DATA
