"""index.html and the opt-in PNG plots: the page is on by default and the PNGs off; every reference
resolves to a written file, every plot is a valid PNG, the page names no external resource, and the
report lists what was written. (The page in a browser: test_page_browser.py.)"""

import io
import json
import re

import pytest
import structlog
from PIL import Image

from jobs.evaluate import job
from tests.evaluate.helpers import eval_settings as settings
from tests.evaluate.helpers import make_coco_case, write_case
from tests.evaluate.synthetic import image_level_overconfident

LOG = structlog.get_logger()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def references(html: str) -> list[str]:
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    return [r for r in refs if not r.startswith("#")]


def assert_valid_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    Image.open(io.BytesIO(data)).verify()  # checks chunk CRCs and structure
    width, height = Image.open(io.BytesIO(data)).size
    assert width > 100 and height > 100


def check_page(read, html: str, report: dict) -> None:
    refs = references(html)
    assert refs, "the page shows nothing"
    assert not [r for r in refs if re.match(r"^[a-z]+:", r) or r.startswith("/")], "offline: relative links only"
    assert "http://" not in html and "https://" not in html and "//" + "cdn" not in html
    assert not re.search(r"<script[^>]*\bsrc=", html) and not re.search(r"<link[^>]*\bhref=", html), "inline only"
    assert re.search(r'<script type="application/json" id="report-data">', html)
    for ref in refs:
        data = read(ref)  # raises if missing
        if ref.endswith(".png"):
            assert_valid_png(data)
    pngs = [r for r in refs if r.endswith(".png")]
    assert sorted(set(pngs)) == report["artifacts"]["plots"]


def test_local_page_with_every_feature(tmp_path, monkeypatch):
    gt, dets = make_coco_case(6, n_images=60)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    code = job.run(settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                            calibration="temperature", bootstrap="20", holdout_fraction="0.3", nms_iou="0.7",
                            baseline_uri="latest", plots="true"), "page-test", LOG)
    assert code == 0
    report = json.loads((out / "thresholds.json").read_text())
    html = (out / "index.html").read_text()
    check_page(lambda ref: (out / ref).read_bytes(), html, report)
    assert report["artifacts"]["index"] == "index.html"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == report["artifacts"]["plots"]
    # Each class with ground truth and detections has its three plots; the page names every class.
    for i, c in enumerate(report["classes"]):
        assert c["name"] in html
        kinds = {p.rsplit("-", 1)[1] for p in written if re.match(rf"artifacts/page-test-[0-9a-f]{{8}}/plots/{i:03d}-", p)}
        if c["n_ground_truth"] and c["n_predictions"]:
            assert kinds == {"pr.png", "f1.png", "reliability.png"}
    for section in ("Holdout", "Calibration", "Bootstrap", "Drift", "Reliability, all classes", "PNG plots"):
        assert f">{section}" in html
    assert "COCO summary (bbox)" in html and f"<td>{report['coco']['stats']['AP']:.3f}</td>" in html


def test_image_level_page(tmp_path, monkeypatch):
    pred, gt = image_level_overconfident(tmp_path, temperature=2.0, n_images=200)
    out = tmp_path / "out"
    assert job.run(settings(monkeypatch, predictions_uri=pred, annotations_uri=gt, output_uri=out,
                            calibration="temperature", plots="true"), "image-level", LOG) == 0
    report = json.loads((out / "thresholds.json").read_text())
    check_page(lambda ref: (out / ref).read_bytes(), (out / "index.html").read_text(), report)


def test_defaults_write_the_page_and_no_pngs(tmp_path, monkeypatch):
    gt, dets = make_coco_case(7, n_images=10)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    assert job.run(settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out),
                   "defaults", LOG) == 0
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "thresholds.json"]
    report = json.loads((out / "thresholds.json").read_text())
    assert report["artifacts"] == {"index": "index.html", "plots": [], "calibration": None}
    html = (out / "index.html").read_text()
    check_page(lambda ref: (out / ref).read_bytes(), html, report)
    assert "<img" not in html


def test_pngs_without_the_page(tmp_path, monkeypatch):
    gt, dets = make_coco_case(7, n_images=10)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    assert job.run(settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                            plots="true", report_page="false"), "pngs", LOG) == 0
    report = json.loads((out / "thresholds.json").read_text())
    assert report["artifacts"]["index"] is None and report["artifacts"]["plots"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == report["artifacts"]["plots"]
    assert not (out / "index.html").exists()


def test_page_and_plots_off_write_the_report_only(tmp_path, monkeypatch):
    gt, dets = make_coco_case(7, n_images=10)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    assert job.run(settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                            report_page="false"), "no-page", LOG) == 0
    assert sorted(p.name for p in out.iterdir()) == ["thresholds.json"]
    assert json.loads((out / "thresholds.json").read_text())["artifacts"] is None


def test_s3_page_in_the_run_prefix(s3, tmp_path, monkeypatch):
    gt, dets = make_coco_case(8, n_images=30)
    gt_uri = s3.put("in/gt.json", json.dumps(gt).encode())
    det_uri = s3.put("in/det.json", json.dumps(dets).encode())
    assert job.run(settings(monkeypatch, predictions_uri=det_uri, annotations_uri=gt_uri, output_uri=s3.uri("r"),
                            output_layout="runs", calibration="temperature"), "run-7", LOG) == 0
    prefix = "r/runs/run-7/"
    report = json.loads(s3.get(prefix + "thresholds.json"))
    check_page(lambda ref: s3.get(prefix + ref), s3.get(prefix + "index.html").decode(), report)
    pointer = json.loads(s3.get("r/latest.json"))
    assert pointer["index"] == "runs/run-7/index.html"
    head = s3.client.head_object(Bucket=s3.bucket, Key=prefix + "index.html")
    assert head["ContentType"].startswith("text/html")


@pytest.mark.parametrize("name", ["a/b", "<script>", "x" * 100, ""])
def test_plot_names_are_safe(name):
    from jobs.evaluate.plots import plot_name

    path = plot_name(3, name, "pr")
    assert re.fullmatch(r"plots/003-[A-Za-z0-9_-]+-pr\.png", path) and len(path) < 70
