"""The job as a process, reading inputs from and writing the report to a real S3 server."""

import json
import subprocess
import sys
from pathlib import Path

from common.exitcodes import ExitCode

SAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "evaluate" / "sample"


def run_job(env, **eval_vars):
    env = {**env, **{f"EVAL_{k.upper()}": v for k, v in eval_vars.items()}}
    return subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, capture_output=True, text=True, timeout=120)


def test_reads_and_writes_s3(s3, job_env):
    preds = s3.put("inputs/predictions.csv", (SAMPLE / "predictions.csv").read_bytes())
    gt = s3.put("inputs/annotations.json", (SAMPLE / "annotations.json").read_bytes())
    proc = run_job({**job_env, **s3.env}, predictions_uri=preds, annotations_uri=gt,
                   output_uri=s3.uri("reports/run-1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(s3.get("reports/run-1/thresholds.json"))
    assert report["inputs"]["predictions"]["etag"] and report["inputs"]["predictions"]["uri"] == preds
    assert report["alignment"]["unmatched_prediction_images"]["images"] == 3
    statuses = {c["name"]: c["status"] for c in report["classes"]}
    assert statuses["bicycle"] == "no_ground_truth" and set(report["summary"]["thresholds"]) == {"person", "car", "dog"}


def test_missing_object_and_bucket_are_input_errors(s3, job_env):
    gt = s3.put("inputs/annotations.json", (SAMPLE / "annotations.json").read_bytes())
    for missing in (s3.uri("inputs/nope.csv"), "s3://no-such-bucket-here/predictions.csv"):
        proc = run_job({**job_env, **s3.env}, predictions_uri=missing, annotations_uri=gt, output_uri=s3.uri("reports/x"))
        assert proc.returncode == ExitCode.INPUT_DATA, proc.stdout + proc.stderr
        assert missing in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert s3.keys("reports/") == []
