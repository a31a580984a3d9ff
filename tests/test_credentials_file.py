"""The Kubernetes pods get S3 credentials as a mounted AWS shared-credentials file
(AWS_SHARED_CREDENTIALS_FILE, read-only), never as environment variables: both jobs' storage must
work from that file alone, on a real S3 server (moto and SeaweedFS on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import CREDENTIALS, ROOT

SAMPLE = ROOT / "jobs" / "evaluate" / "sample"


def test_evaluation_reads_credentials_from_the_file_only(s3, job_env, tmp_path):
    creds = tmp_path / "secrets" / "credentials"
    creds.parent.mkdir()
    creds.write_text("[default]\n"
                     f"aws_access_key_id = {CREDENTIALS['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {CREDENTIALS['AWS_SECRET_ACCESS_KEY']}\n")
    os.chmod(creds, 0o440)  # as the Secret volume mounts it (defaultMode 0440)
    os.chmod(creds.parent, 0o555)
    preds = s3.put("in/predictions.csv", (SAMPLE / "predictions.csv").read_bytes())
    gt = s3.put("in/annotations.json", (SAMPLE / "annotations.json").read_bytes())
    env = {**job_env, "AWS_ENDPOINT_URL": s3.server.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "EVAL_PREDICTIONS_URI": preds, "EVAL_ANNOTATIONS_URI": gt, "EVAL_OUTPUT_URI": s3.uri("out"),
           "EVAL_PLOTS": "false", "AWS_EC2_METADATA_DISABLED": "true"}  # no metadata-endpoint lookups
    assert not {k for k in env if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    out = subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(s3.get("out/thresholds.json"))
    assert report["inputs"]["predictions"]["uri"] == preds

    # Without the file (an absent, optional Secret) nothing else supplies credentials: a clear
    # storage/config failure naming the missing credentials, not a traceback.
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "missing")
    out = subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode in (74, 78), out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
