"""Bad input and bad settings end cleanly: a message naming the culprit, a distinct exit code,
no traceback, and no report written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.exitcodes import ExitCode

SAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "evaluate" / "sample"
CSV_HEADER = "image,category,score,bbox_x,bbox_y,bbox_w,bbox_h\n"


def run_job(env: dict, tmp_path: Path, **eval_vars) -> subprocess.CompletedProcess:
    env = dict(env)
    env.setdefault("EVAL_ANNOTATIONS_URI", str(SAMPLE / "annotations.json"))
    env.setdefault("EVAL_PREDICTIONS_URI", str(SAMPLE / "predictions.csv"))
    env.setdefault("EVAL_OUTPUT_URI", str(tmp_path / "out"))
    env.update({f"EVAL_{k.upper()}": v for k, v in eval_vars.items()})
    return subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, capture_output=True, text=True, timeout=120)


def assert_clean_failure(proc, code: ExitCode, *needles: str, out: Path):
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output
    assert "Traceback" not in output
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["level"] == "error" and last["exit_code"] == code
    for needle in needles:
        assert needle in last["error"], last["error"]
    assert not (out / "thresholds.json").exists()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_PREDICTIONS = {
    "missing column": (CSV_HEADER.replace("score,", "confidence,") + "frame_0001.jpg,car,0.9,1,1,5,5\n",
                       ["missing column 'score'", "EVAL_COLUMNS"]),
    "non-numeric score": (CSV_HEADER + "frame_0001.jpg,car,0.9,1,1,5,5\nframe_0002.jpg,car,high,1,1,5,5\n",
                          ["row 2", "'score'", "'high'"]),
    "negative box size": (CSV_HEADER + "frame_0001.jpg,car,0.9,1,1,5,5\nframe_0002.jpg,car,0.5,1,1,-5,5\n",
                          ["row 2", "negative box width or height"]),
    "missing score value": (CSV_HEADER + "frame_0001.jpg,car,,1,1,5,5\n", ["row 1", "missing value"]),
}


@pytest.mark.parametrize("case", sorted(BAD_PREDICTIONS))
def test_bad_prediction_tables(case, job_env, tmp_path):
    text, needles = BAD_PREDICTIONS[case]
    path = write(tmp_path, "predictions.csv", text)
    proc = run_job(job_env, tmp_path, predictions_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.csv", *needles, out=tmp_path / "out")


BAD_JSON = {
    "truncated": (lambda gt: gt[: len(gt) // 2], ["not valid JSON", "truncated"]),
    "empty": (lambda gt: "", ["is empty"]),
    "wrong type": (lambda gt: gt.replace('"image_id": 1001', '"image_id": [1001]', 1), ["annotations[0].image_id"]),
    "not a list of numbers": (lambda gt: gt.replace('"bbox": [', '"bbox": ["x", ', 1), ["annotations[0].bbox"]),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_coco_json(case, job_env, tmp_path):
    mangle, needles = BAD_JSON[case]
    text = (SAMPLE / "annotations.json").read_text()
    path = write(tmp_path, "annotations.json", mangle(json.dumps(json.loads(text))))
    proc = run_job(job_env, tmp_path, annotations_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "annotations.json", *needles, out=tmp_path / "out")


LATE_ROW = 4321  # results are decoded in chunks: a bad row deep in the file is still named by its place


BAD_RESULTS = {
    "score not a number": (lambda d: {**d, "score": "high"}, ["[4321].score", "Expected `float`"]),
    "box missing": (lambda d: {k: v for k, v in d.items() if k != "bbox"}, ["[4321] has no bbox while other results do"]),
    "polygon too short": (lambda d: {**d, "segmentation": [[1, 2, 3, 4]]}, ["[4321].segmentation", ">= 3 finite x, y"]),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_coco_results_deep_in_the_file(case, job_env, tmp_path):
    mangle, needles = BAD_RESULTS[case]
    gt = json.loads((SAMPLE / "annotations.json").read_text())
    image, category = gt["images"][0]["id"], gt["categories"][0]["id"]
    dets = [{"image_id": image, "category_id": category, "bbox": [1, 1, 5, 5], "score": 0.5}] * 6000
    dets[LATE_ROW] = mangle(dets[LATE_ROW])
    path = write(tmp_path, "predictions.json", json.dumps(dets))
    proc = run_job(job_env, tmp_path, predictions_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.json", *needles, out=tmp_path / "out")


def test_missing_file(job_env, tmp_path):
    proc = run_job(job_env, tmp_path, predictions_uri=str(tmp_path / "nope.csv"))
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "nope.csv", "no such file", out=tmp_path / "out")


def test_two_images_normalising_to_one_key(job_env, tmp_path):
    gt = json.loads((SAMPLE / "annotations.json").read_text())
    gt["images"][1]["file_name"] = "other/FRAME_0001.png"
    path = write(tmp_path, "annotations.json", json.dumps(gt))
    proc = run_job(job_env, tmp_path, annotations_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "'frame_0001.jpg'", "'other/FRAME_0001.png'", "EVAL_JOIN_KEY",
                         out=tmp_path / "out")


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("iou_threshold", "1.5", "EVAL_IOU_THRESHOLD"),
        ("iou_threshold", "half", "EVAL_IOU_THRESHOLD"),
        ("policy", "precision>=2", "EVAL_POLICY"),
        ("min_support", "0", "EVAL_MIN_SUPPORT"),
        ("columns", '{"scroe": "confidence"}', "EVAL_COLUMNS"),
        ("columns", "image=path", "EVAL_COLUMNS"),  # not JSON: pydantic-settings' own error was exit 1
        ("iou_treshold", "0.5", "EVAL_IOU_TRESHOLD"),  # a typo is refused, not ignored
    ],
)
def test_bad_settings(variable, value, needle, job_env, tmp_path):
    proc = run_job(job_env, tmp_path, **{variable: value})
    assert_clean_failure(proc, ExitCode.CONFIG, needle, out=tmp_path / "out")


def test_missing_required_setting(job_env, tmp_path):
    env = {k: v for k, v in job_env.items()}
    proc = subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, capture_output=True, text=True, timeout=60)
    assert_clean_failure(proc, ExitCode.CONFIG, "EVAL_PREDICTIONS_URI", "EVAL_ANNOTATIONS_URI", out=tmp_path / "out")


def test_unreachable_endpoint(job_env, tmp_path):
    from tests.conftest import CREDENTIALS, free_port

    env = {**job_env, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    proc = run_job(env, tmp_path, predictions_uri="s3://bucket-x/predictions.csv")
    assert_clean_failure(proc, ExitCode.STORAGE, "s3://bucket-x/predictions.csv", "cannot reach S3 endpoint",
                         out=tmp_path / "out")


def test_existing_report_survives_a_failed_run(job_env, tmp_path):
    out = tmp_path / "out"
    assert run_job(job_env, tmp_path).returncode == 0
    before = (out / "thresholds.json").read_bytes()
    bad = write(tmp_path, "predictions.csv", CSV_HEADER + "frame_0001.jpg,car,oops,1,1,5,5\n")
    proc = run_job(job_env, tmp_path, predictions_uri=bad)
    assert proc.returncode == ExitCode.INPUT_DATA
    assert (out / "thresholds.json").read_bytes() == before


def test_help_lists_every_variable(job_env):
    from jobs.evaluate.settings import EvalSettings

    proc = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--help"], env=job_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for name, field in EvalSettings.model_fields.items():
        assert f"EVAL_{name.upper()}" in proc.stdout
    assert "[default: 0.5]" in proc.stdout


def test_sigterm_exits_preempted_and_writes_nothing(job_env, tmp_path):
    import signal
    import time

    from tests.evaluate.helpers import make_coco_case, write_case

    gt, dets = make_coco_case(5, n_images=3000)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    env = {**job_env, "EVAL_ANNOTATIONS_URI": str(gt_path), "EVAL_PREDICTIONS_URI": str(det_path),
           "EVAL_OUTPUT_URI": str(tmp_path / "out"), "EVAL_BOOTSTRAP": "100000"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.evaluate"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until it is working, then preempt it
        if '"matched"' in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.PREEMPTED, out + err
    assert "Traceback" not in out + err and "SIGTERM" in out
    assert not (tmp_path / "out" / "thresholds.json").exists()
