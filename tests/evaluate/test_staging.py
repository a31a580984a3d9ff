"""A failed run leaves the output prefix entirely the previous run's (issue 12, item 2).

A loopback proxy in front of a real S3 server (moto, SeaweedFS) answers 500 to the PUT of
thresholds.json and forwards everything else byte for byte (the SigV4 signature covers the Host
header the client sent, which is forwarded unchanged).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from common.exitcodes import ExitCode
from tests.evaluate.helpers import make_coco_case

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FailingProxy:
    """Forwards to `upstream`; a PUT whose path ends with one of `fail_puts` gets a 500."""

    def __init__(self, upstream: str):
        self.fail_puts: tuple[str, ...] = ()
        self.failed: list[str] = []
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlsplit(self.path).path
                if self.command == "PUT" and path.endswith(proxy.fail_puts or ("\0",)):
                    proxy.failed.append(path)
                    payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        conn.putheader(key, value)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(s3):
    p = FailingProxy(s3.server.endpoint_url)
    yield p
    p.close()


def run_job(env, **eval_vars):
    env = {**env, **{f"EVAL_{k.upper()}": v for k, v in eval_vars.items()}}
    return subprocess.run([sys.executable, "-m", "jobs.evaluate"], env=env, capture_output=True, text=True, timeout=120)


def snapshot(s3, prefix: str) -> dict[str, bytes]:
    return {key: s3.get(key) for key in s3.keys(prefix)}


@pytest.mark.parametrize("layout", ["flat", "runs"])
def test_a_failed_report_write_leaves_the_previous_run_whole(s3, proxy, job_env, layout):
    gt, dets = make_coco_case(3, n_images=20, n_classes=3)
    gt_uri = s3.put("in/gt.json", json.dumps(gt).encode())
    first = s3.put("in/first.json", json.dumps(dets).encode())
    second = s3.put("in/second.json", json.dumps([{**d, "score": round(1 - d["score"], 2)} for d in dets]).encode())
    env = {**job_env, **s3.env, "AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "1"}
    common = dict(annotations_uri=gt_uri, output_uri=s3.uri("out"), plots="true", output_layout=layout)

    ok = run_job({**env, "RUN_ID": "first"}, predictions_uri=first, **common)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    before = snapshot(s3, "out/")
    report = json.loads(before["out/thresholds.json" if layout == "flat" else "out/runs/first/thresholds.json"])
    assert report["artifacts"]["plots"] and ("out/index.html" in before or "out/runs/first/index.html" in before)

    proxy.fail_puts = ("/thresholds.json",)
    failed = run_job({**env, "RUN_ID": "second"}, predictions_uri=second, **common)
    assert failed.returncode == ExitCode.STORAGE, failed.stdout + failed.stderr
    assert proxy.failed, "the report's PUT was attempted"
    after = snapshot(s3, "out/")
    if layout == "flat":
        assert after == before  # before the fix: index.html and plots/ held the failed run's versions
    else:  # readers go through latest.json, which still names the first run's complete report
        assert {k: v for k, v in after.items() if not k.startswith("out/runs/second/")} == before
        assert "out/runs/second/thresholds.json" not in after
        pointer = json.loads(after["out/latest.json"])
        assert pointer["run_id"] == "first"

    # The page and report the reader finds are one run's: every plot the page shows is the report's.
    if layout == "flat":
        proxy.fail_puts = ()
        ok = run_job({**env, "RUN_ID": "third"}, predictions_uri=second, **common)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        report = json.loads(s3.get("out/thresholds.json"))
        html = s3.get("out/index.html").decode()
        assert report["run"]["id"] == "third" and "third" in html
        for plot in report["artifacts"]["plots"]:
            assert plot.startswith("artifacts/third-") and f'src="{plot}"' in html
            assert s3.get(f"out/{plot}")[:4] == b"\x89PNG"
