"""What the interactive report page costs: time against the same run without it, and its size.

    .venv/bin/python bench/report_page.py                 # reference case + 1,000 classes (~3 minutes on 2 cores)
    .venv/bin/python bench/report_page.py --quick         # smoke run on small cases
    .venv/bin/python bench/report_page.py --repeats 5 --work /tmp/page-bench

1. The reference case of bench/eval_scale.py (5,000 images, 80 classes, ~490,000 detections, COCO
   JSON): `python -m jobs.evaluate` with the defaults (page on, PNGs off) against the same run with
   EVAL_REPORT_PAGE=false, alternating, medians of --repeats rounds (goal: <= 1.3x). Prints the
   page's size (goal: <= 3 MB for 80 classes), the job's own "page written" seconds and, where
   Chromium and selenium are installed, the time the page takes to open (load to script done).
2. A 1,000-class case (20,000 images, ~1.96M detections, float32 scores in Parquet, COCO ground
   truth): the page's generation time (the job's "page written" step: per-class curves, encoding,
   HTML; goal <= 2 s) and its size (goal <= 20 MB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eval_scale  # noqa: E402  (the reference case and the measured subprocess runner)

PY = sys.executable


def page_step(log: str) -> dict:
    """The job's 'page written' log record."""
    return next(json.loads(line) for line in log.splitlines() if line.startswith("{") and '"page written"' in line)


def open_seconds(page: Path) -> float | None:
    """Seconds from navigation start to the page's script done, in headless Chromium; None without one."""
    try:
        from tests.evaluate.browser import start_browser
        browser = start_browser()
    except Exception as exc:  # noqa: BLE001 - optional part of the benchmark
        print(f"   (no browser timing: {str(exc).splitlines()[0][:100]})")
        return None
    try:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            browser.get(page.resolve().as_uri())
            assert browser.execute_script("return document.body.dataset.ready") == "1"
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        browser.quit()


def reference(work: Path, n_images: int, repeats: int) -> None:
    print(f"\n== reference case: {n_images} images, 80 classes, COCO JSON; default run vs EVAL_REPORT_PAGE=false")
    folder = work / f"ref{n_images}"
    info = eval_scale.generate("reference", folder, n_images, sub=work / "unused", fraction=10)
    gt, det = folder / "annotations.json", folder / "predictions.json"
    print(f"   {info['gt']} ground-truth boxes, {info['det']} detections")
    on, off = [], []
    for r in range(repeats):
        on.append(eval_scale.run_job(gt, det, folder / "on", report_page="true"))
        off.append(eval_scale.run_job(gt, det, folder / "off", report_page="false"))
        print(f"   round {r + 1}: page on {on[-1]['wall']:.2f} s, off {off[-1]['wall']:.2f} s", flush=True)
    w_on, w_off = statistics.median(x["wall"] for x in on), statistics.median(x["wall"] for x in off)
    b_on, b_off = min(x["wall"] for x in on), min(x["wall"] for x in off)
    c_on, c_off = statistics.median(x["cpu"] for x in on), statistics.median(x["cpu"] for x in off)
    step = statistics.median(page_step(x["log"])["seconds"] for x in on)
    step_cpu = statistics.median(page_step(x["log"])["cpu_seconds"] for x in on)
    page = folder / "on" / "index.html"
    size = page.stat().st_size
    print(f"   default run {w_on:.2f} s, without the page {w_off:.2f} s: {w_on / w_off:.2f}x (goal <= 1.3x: "
          f"{'met' if w_on / w_off <= 1.3 else 'NOT met'}); the page step itself {step:.2f} s ({step_cpu:.2f} s CPU)")
    print(f"   best rounds {b_on:.2f} s vs {b_off:.2f} s: {b_on / b_off:.2f}x; CPU (user + sys) {c_on:.2f} s vs {c_off:.2f} s: "
          f"{c_on / c_off:.2f}x (CPU time is the steadier figure on a shared machine)")
    print(f"   peak RSS {max(x['rss'] for x in on):.0f} MiB with the page, {max(x['rss'] for x in off):.0f} MiB without")
    print(f"   index.html {size / 1e6:.2f} MB for 80 classes (goal <= 3 MB: {'met' if size <= 3e6 else 'NOT met'})")
    data = json.loads(page.read_text().split('id="report-data">', 1)[1].split("</script>", 1)[0])
    curves = [c["curve"] for c in data["classes"] if "curve" in c]
    print(f"   score encoding {data['encoding']['kind']}; {sum(c['n'] for c in curves):,} points kept of "
          f"{sum(c['distinct'] for c in curves):,} distinct scores ({sum(c['n'] < c['distinct'] for c in curves)} classes subsampled)")
    seconds = open_seconds(page)
    if seconds is not None:
        print(f"   opens in headless Chromium in {seconds:.2f} s (median of 3; goal < 1 s: {'met' if seconds < 1 else 'NOT met'})")


def many_classes(work: Path, n_images: int, n_classes: int) -> None:
    print(f"\n== {n_classes} classes: {n_images} images, Parquet predictions (float32 scores), COCO ground truth")
    folder = work / f"classes{n_classes}"
    spec = json.dumps({"folder": str(folder), "n_images": n_images, "n_classes": n_classes})
    info = json.loads(subprocess.run([PY, __file__, "--generate", spec], check=True, capture_output=True, text=True).stdout)
    print(f"   {info['gt']} ground-truth boxes, {info['det']} detections")
    run = eval_scale.run_job(folder / "annotations.json", folder / "predictions.parquet", folder / "out", report_page="true")
    step = page_step(run["log"])
    size = (folder / "out" / "index.html").stat().st_size
    print(f"   job {run['wall']:.2f} s in all, peak RSS {run['rss']:.0f} MiB; page generation {step['seconds']:.2f} s, "
          f"{step['cpu_seconds']:.2f} s CPU (goal <= 2 s: {'met' if step['seconds'] <= 2 else 'NOT met'}); index.html {size / 1e6:.2f} MB "
          f"(goal <= 20 MB: {'met' if size <= 20e6 else 'NOT met'})")
    seconds = open_seconds(folder / "out" / "index.html")
    if seconds is not None:
        print(f"   opens in headless Chromium in {seconds:.2f} s (median of 3)")


def generate_main(spec: str) -> None:
    spec = json.loads(spec)
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    gt, det = eval_scale.make_case(spec["n_images"], n_classes=spec["n_classes"])
    eval_scale.write_coco(folder, gt, {k: v[:0] for k, v in det.items()}, spec["n_images"], spec["n_classes"])
    eval_scale.write_parquet(folder, det)
    print(json.dumps({"gt": int(gt["image"].size), "det": int(det["image"].size)}))


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 images, 1,000 classes on 2,000 images")
    parser.add_argument("--work", default=None, help="folder for generated files (default: a temporary folder)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        return generate_main(args.generate)
    ref_images, many_images, repeats = (500, 2000, 1) if args.quick else (5000, 20000, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"load average before: {load_average()}")
        reference(work, ref_images, repeats)
        many_classes(work, many_images, 1000)
        print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
