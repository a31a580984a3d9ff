"""index.html in a real headless Chromium: no console error, no network request, the threshold
slider and the typed value read exactly the sweep's counts, the table sorts, filters and pages, and
the history panel shows one point per run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import structlog
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from jobs.evaluate import job
from jobs.evaluate.page import render_index
from jobs.evaluate.plots import class_curves
from tests.evaluate.browser import open_page, start_browser
from tests.evaluate.helpers import eval_settings, make_coco_case, write_case

LOG = structlog.get_logger()
READOUT = ("tp", "fp", "fn", "p", "r", "f1")


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def clean_load(browser, path):
    load = open_page(browser, path)
    assert load["console"] == [], load["console"]
    assert load["requests"] == [load["url"]], f"the page fetched more than itself: {load['requests']}"
    return load


def evaluated(tmp_path, monkeypatch, *, scores="dec", n_classes=5, n_images=80, names=(), **env):
    """Run the job (page on by default) and return (out folder, report dict, the table's sweeps)."""
    gt, dets = make_coco_case(11, n_images=n_images, n_classes=n_classes, round_scores=2 if scores in ("dec", "logits") else None)
    for category, name in zip(gt["categories"], names):
        category["name"] = name
    if scores == "logits":  # not probabilities, negative too: decimal keys below zero, no reliability diagram
        for d in dets:
            d["score"] = round((d["score"] - 0.5) * 12, 2)
    elif scores != "dec":
        for k, d in enumerate(dets):  # ties: some detections repeat the previous one's score
            d["score"] = dets[k - 1]["score"] if k % 4 == 3 else d["score"]
            d["score"] = float(np.float32(d["score"])) if scores == "f32" else d["score"]
    gt_path, det_path = write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    settings = eval_settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out, **env)
    assert job.run(settings, "browser-run", LOG) == 0
    report, evidence = job.evaluate(settings, "browser-run", LOG)
    curves = class_curves(evidence.aligned, evidence.matches, evidence.evaluation_mask, evidence.calibrated)
    sweeps = [c.evaluation if report.holdout else c.selection for c in curves]
    return out, json.loads((out / "thresholds.json").read_text()), sweeps, curves


def readout(browser) -> dict:
    return {k: browser.find_element(By.ID, f"ro-{k}").get_attribute("data-value") for k in READOUT}


def expected(sweep, threshold: float) -> dict:
    kept = int(np.searchsorted(-sweep.thresholds, -threshold, side="right"))  # scores >= threshold
    if kept == 0:
        return {"tp": "0", "fp": "0", "fn": str(sweep.n_ground_truth), "p": "", "r": "0", "f1": "0"}
    i = kept - 1
    return {"tp": str(sweep.tp[i]), "fp": str(sweep.fp[i]), "fn": str(sweep.fn[i]), "p": sweep.precision[i],
            "r": sweep.recall[i], "f1": sweep.fbeta_score(1.0)[i]}


def assert_readout(browser, sweep, threshold):
    got, want = readout(browser), expected(sweep, threshold)
    for k in READOUT:
        if isinstance(want[k], str):
            assert got[k] == want[k], (k, threshold, got, want)
        else:
            assert float(got[k]) == float(want[k]), (k, threshold, got, want)  # exact, not approximately


def type_threshold(browser, value: float):
    box = browser.find_element(By.ID, "thr-input")
    box.clear()
    box.send_keys(repr(float(value)))


def a_class_with_ties(report, sweeps, curves):
    for i, (c, s, cc) in enumerate(zip(report["classes"], sweeps, curves)):
        if s is None or s.thresholds.size < 5:
            continue
        values, counts = np.unique(cc.scores, return_counts=True)
        ties = values[counts > 1]
        if ties.size:
            return i, s, float(ties[len(ties) // 2])
    raise AssertionError("the case has no class with tied scores")


@pytest.mark.parametrize("scores", ["dec", "f32", "f64", "logits"])
def test_slider_and_typed_threshold_read_the_sweep_exactly(browser, tmp_path, monkeypatch, scores):
    out, report, sweeps, curves = evaluated(tmp_path, monkeypatch, scores=scores)
    clean_load(browser, out / "index.html")
    data = json.loads(browser.find_element(By.ID, "report-data").get_attribute("textContent"))
    assert data["encoding"]["kind"] == ("dec" if scores == "logits" else scores)
    assert (scores == "logits") == (data["reliability"] is None)
    i, sweep, tie = a_class_with_ties(report, sweeps, curves)
    browser.find_element(By.ID, f"sel-{i}").click()
    assert browser.find_element(By.ID, "detail-h").text == "Class: " + report["classes"][i]["name"]
    # Opening a class shows its policy point: the report's own numbers.
    c = report["classes"][i]
    got = readout(browser)
    assert (int(got["tp"]), int(got["fp"]), int(got["fn"]), float(got["f1"])) == (c["tp"], c["fp"], c["fn"], c["f1"])

    s = sweep.thresholds
    k = s.size // 2
    probes = [(s[k] + s[k + 1]) / 2, s[k], tie, s[0] + 0.01, s[-1], s[-1] - 1.0, s[0]]  # between, at, tie, above, ...
    for t in probes:
        type_threshold(browser, t)
        assert_readout(browser, sweep, t)

    # The slider by keyboard: Home keeps everything, each ArrowRight drops the lowest score, End keeps nothing.
    slider = browser.find_element(By.ID, "thr-slider")
    slider.send_keys(Keys.HOME)
    assert_readout(browser, sweep, s[-1])
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert_readout(browser, sweep, s[-3])
    assert float(browser.find_element(By.ID, "thr-input").get_attribute("value")) == s[-3]
    slider.send_keys(Keys.END)
    assert_readout(browser, sweep, s[0] + 1.0)

    # Every distinct score, in one pass through the page's own input handler.
    got = browser.execute_script("""
        const box = document.getElementById('thr-input'), out = [];
        for (const t of arguments[0]) {
          box.value = String(t); box.dispatchEvent(new Event('input'));
          out.push(['tp', 'fp', 'p', 'f1'].map((k) => Number(document.getElementById('ro-' + k).dataset.value)));
        }
        return out;""", s.tolist())
    assert np.array_equal(np.array(got), np.column_stack([sweep.tp, sweep.fp, sweep.precision, sweep.fbeta_score(1.0)]))
    assert browser.get_log("browser") == []


def test_table_sorts_filters_and_pages(browser, tmp_path, monkeypatch):
    out, report, _, _ = evaluated(tmp_path, monkeypatch, n_classes=120, n_images=150)
    clean_load(browser, out / "index.html")

    def shown() -> list[int]:
        return [int(r.get_attribute("data-i")) for r in browser.find_elements(By.CSS_SELECTOR, "#classes-body tr")]

    classes = report["classes"]
    assert shown() == list(range(50))  # page 1 of 3, in the report's order
    assert "page 1 of 3" in browser.find_element(By.ID, "page-info").text
    browser.find_element(By.ID, "next").click()
    browser.find_element(By.ID, "next").click()
    assert shown() == list(range(100, 120))

    # Sorting by AP, from the keyboard: highest first, classes without AP last; again: lowest first.
    ap_header = browser.find_element(By.CSS_SELECTOR, "#classes-head button[data-key=ap]")
    ap_header.send_keys(Keys.ENTER)
    with_ap = [c for c in classes if c["average_precision"] is not None]
    by_ap = sorted(range(len(classes)), key=lambda i: (classes[i]["average_precision"] is None,
                                                       -(classes[i]["average_precision"] or 0), i))
    assert shown() == by_ap[:50]  # back to page 1
    assert ap_header.find_element(By.XPATH, "..").get_attribute("aria-sort") == "descending"
    ap_header.send_keys(Keys.ENTER)
    ascending = sorted(range(len(classes)), key=lambda i: (classes[i]["average_precision"] is None,
                                                           classes[i]["average_precision"] or 0, i))
    assert shown() == ascending[:50]
    assert len(with_ap) < len(classes)  # the case has classes without ground truth, sorted last both ways

    name_header = browser.find_element(By.CSS_SELECTOR, "#classes-head button[data-key=name]")
    name_header.click()
    assert shown() == sorted(range(len(classes)), key=lambda i: classes[i]["name"])[:50]

    box = browser.find_element(By.ID, "filter")
    box.send_keys("class11")  # class11, class110..class119
    assert sorted(shown()) == [i for i, c in enumerate(classes) if "class11" in c["name"]]
    assert browser.find_element(By.ID, "count").text == f"{len(shown())} of 120 classes"
    # Status badges carry words, not colour alone.
    badges = {b.text for b in browser.find_elements(By.CSS_SELECTOR, "#classes-body .badge")}
    assert badges <= {"\u2713 ok", "\u2205 no ground truth", "\u2205 no predictions", "\u26a0 low support",
                      "\u2715 policy unreachable"}
    assert browser.get_log("browser") == []


def history_of(report: dict, runs: int) -> list[dict]:
    rows = []
    for k in range(runs):
        for c in report["classes"]:
            rows.append({"run_id": f"nightly-{k}", "finished_at": f"2026-11-{10 + k}T02:00:00+00:00", "class_id": c["class_id"],
                         "name": c["name"], "status": c["status"], "threshold": 0.3 + 0.05 * k, "precision": 0.8,
                         "recall": 0.7, "f1": 0.6 + 0.01 * k, "average_precision": 0.7, "n_ground_truth": c["n_ground_truth"]})
    return rows


@pytest.mark.parametrize("runs", [1, 4])
def test_history_panel_shows_one_point_per_run(browser, tmp_path, monkeypatch, runs):
    from jobs.evaluate.report import Report

    out, report, _, curves = evaluated(tmp_path, monkeypatch)
    page = tmp_path / "history.html"
    page.write_text(render_index(Report.model_validate(report), curves, history=history_of(report, runs)))
    clean_load(browser, page)
    points = browser.find_elements(By.CSS_SELECTOR, "#hist-chart .hist-pt[data-series=threshold]")
    assert len(points) == runs
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hist-chart .hist-pt[data-series=f1]")) == runs
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hist-table tbody tr")) == runs
    # Without history (flat layout) the panel is not shown.
    clean_load(browser, out / "index.html")
    assert not browser.find_element(By.ID, "history").is_displayed()


def test_runs_layout_page_reads_history_parquet(browser, tmp_path, monkeypatch):
    """Two earlier scheduled runs appended to <output>/history.parquet, plus this one: three points per class."""
    gt, dets = make_coco_case(12, n_images=40)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    root = tmp_path / "reports"
    settings = eval_settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=root,
                             output_layout="runs")
    for run_id in ("run-1", "run-2", "run-3"):
        assert job.run(settings, run_id, LOG) == 0
    assert len(pq.read_table(root / "history.parquet")) == 3 * len(gt["categories"])
    clean_load(browser, root / "runs" / "run-3" / "index.html")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hist-chart .hist-pt[data-series=threshold]")) == 3
    assert browser.find_elements(By.CSS_SELECTOR, "#hist-table tbody tr")[-1].text.startswith("run-3")


def test_page_with_every_feature_loads_clean(browser, tmp_path, monkeypatch):
    out, report, sweeps, _ = evaluated(tmp_path, monkeypatch, calibration="temperature", bootstrap="10",
                                       holdout_fraction="0.3", nms_iou="0.7", baseline_uri="latest",
                                       iou_thresholds="0.5:0.95:0.05")
    clean_load(browser, out / "index.html")
    # The held-out sweep drives the readout (the table is measured there), the selection curve is drawn too.
    i = next(i for i, s in enumerate(sweeps) if s is not None and s.thresholds.size >= 3)
    browser.find_element(By.ID, f"sel-{i}").click()
    type_threshold(browser, sweeps[i].thresholds[1])
    assert_readout(browser, sweeps[i], sweeps[i].thresholds[1])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pr-chart path.s-alt")) == 1
    for chart in ("rel-chart", "pooled-chart"):  # reliability before and after calibration
        assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} path.s-before")
        assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} path.s-after")
    bars = browser.find_elements(By.CSS_SELECTOR, "#ap-chart rect.bar")
    assert len(bars) == sum(c["average_precision"] is not None for c in report["classes"])
    assert browser.find_element(By.ID, "map-ious").text == f"{report['summary']['mean_average_precision_iou_mean']:.3f}"


def test_subsampled_class_is_exact_at_the_kept_scores(browser, tmp_path, monkeypatch):
    from jobs.evaluate import page as page_module
    from jobs.evaluate.report import Report

    out, report, sweeps, curves = evaluated(tmp_path, monkeypatch, scores="f64")
    monkeypatch.setattr(page_module, "MAX_POINTS", 8)
    page = tmp_path / "small.html"
    page.write_text(render_index(Report.model_validate(report), curves))
    clean_load(browser, page)
    i = max(range(len(sweeps)), key=lambda k: -1 if sweeps[k] is None else sweeps[k].thresholds.size)
    sweep, c = sweeps[i], report["classes"][i]
    assert sweep.thresholds.size > 8
    browser.find_element(By.ID, f"sel-{i}").click()
    kept = page_module.kept_points(sweep.thresholds.size, page_module._at(sweep, c["threshold"]), 8)
    assert browser.find_element(By.ID, "thr-note").text.startswith(f"Subsampled: {kept.size} of {sweep.thresholds.size}")
    got = readout(browser)  # the policy's point is always kept
    assert (int(got["tp"]), int(got["fp"]), float(got["f1"])) == (c["tp"], c["fp"], c["f1"])
    for t in sweep.thresholds[kept]:
        type_threshold(browser, t)
        assert_readout(browser, sweep, t)


def test_class_names_are_text_not_markup(browser, tmp_path, monkeypatch):
    hostile = ["</script><img src=x onerror=console.error(1)>", "<b>bold</b> & \u00e9\u00e8 \U0001F600", "x\"y'z"]
    out, report, _, _ = evaluated(tmp_path, monkeypatch, names=hostile)
    clean_load(browser, out / "index.html")  # an injected <img> would show as a request and a console error
    cells = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#classes-body button.link")]
    assert cells[:3] == hostile
    browser.find_element(By.ID, "sel-0").click()
    assert browser.find_element(By.ID, "detail-h").text == "Class: " + hostile[0]


def test_drifted_classes_are_marked_in_words(browser, tmp_path, monkeypatch):
    gt, dets = make_coco_case(13, n_images=80)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    first = tmp_path / "first"
    assert job.run(eval_settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=first),
                   "first", LOG) == 0
    for d in dets:
        d["score"] = round(d["score"] / 2, 3)  # every threshold halves: drift
    det_path.write_text(json.dumps(dets))
    out = tmp_path / "second"
    assert job.run(eval_settings(monkeypatch, predictions_uri=det_path, annotations_uri=gt_path, output_uri=out,
                                 baseline_uri=first / "thresholds.json", fail_on_drift="false"), "second", LOG) == 0
    report = json.loads((out / "thresholds.json").read_text())
    drifted = {c["class"] for c in report["drift"]["changed"]}
    assert drifted
    clean_load(browser, out / "index.html")
    rows = browser.find_elements(By.CSS_SELECTOR, "#classes-body tr")
    marked = {r.find_element(By.CSS_SELECTOR, "button.link").text for r in rows if "drifted" in r.get_attribute("class")}
    assert marked == drifted
    for r in rows:
        last = r.find_elements(By.TAG_NAME, "td")[-1].text
        name = r.find_element(By.CSS_SELECTOR, "button.link").text
        assert last.startswith("\u25b2 ") == (name in drifted)  # a word and a sign, not colour alone
    browser.find_element(By.ID, "drift-only").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#classes-body tr")) == len(drifted)
