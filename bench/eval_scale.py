"""Evaluation at scale: the whole `python -m jobs.evaluate` process against COCO evaluators.

    .venv/bin/python bench/eval_scale.py                 # everything (10x takes a few minutes)
    .venv/bin/python bench/eval_scale.py --scales 1      # the reference case and peers only
    .venv/bin/python bench/eval_scale.py --quick         # smoke run on small cases

Generates, with a fixed seed, the reference case (5,000 images, 80 classes, ~35,000 ground-truth
boxes, ~490,000 detections: jittered ground truth plus random false positives, at most 100 per
image, COCO JSON) and runs, alternately, every tool in its own subprocess on the same files:
the job (start, read, align, match, sweep, write thresholds.json), hotcoco, faster-coco-eval and
pycocotools (evaluate + accumulate at IoU 0.5, one area range, no per-image cap beyond the data's
100). pycocotools runs on the first tenth of the images; its time is scaled by 10 and says so.
Peak RSS is each subprocess's own `ru_maxrss` (os.wait4), so no tool pays for another.

Then: the cost of the report's `coco` block on the reference case, COCO AP@[.5:.95] via
EVAL_IOU_THRESHOLDS against the single-threshold time, a polygon case against pycocotools' `segm`
evaluation, masks (EVAL_IOU_TYPE=segm, on that polygon case and on the same masks as compressed
RLE) against pycocotools and faster-coco-eval `segm` under their default parameters, and the job
alone at 1x, 3x, 10x with Parquet predictions (the scaling exponent is the slope of log time over
log detections).

    .venv/bin/python bench/eval_scale.py --skip reference,peers,scaling,polygons,thresholds   # masks only
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SEED = 20240601
IOU = 0.5
COCO_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


# -- case generation -------------------------------------------------------------------------------


def make_case(n_images: int, *, n_classes: int = 80, seed: int = SEED, max_dets: int = 100):
    """Ground truth (dict of arrays) and detections (dict of arrays), generated with numpy only."""
    rng = np.random.default_rng(seed)
    W, H = 640.0, 480.0
    n_gt = rng.poisson(7.0, n_images)
    g_img = np.repeat(np.arange(n_images), n_gt)
    m = g_img.size
    g_cls = rng.integers(0, n_classes, m)
    gw = np.clip(rng.lognormal(3.8, 0.8, m), 4, W / 2)
    gh = np.clip(gw * rng.lognormal(0.0, 0.4, m), 4, H / 2)
    gx, gy = rng.uniform(0, W - gw), rng.uniform(0, H - gh)
    crowd = rng.random(m) < 0.01
    gt = dict(image=g_img, cls=g_cls, box=np.column_stack([gx, gy, gw, gh]), crowd=crowd)

    # Detections: each ground truth 1 + Poisson(2.5) jittered copies, then false positives up to
    # a per-image total of 96..100, at most `max_dets`.
    copies = 1 + rng.poisson(2.5, m)
    src = np.repeat(np.arange(m), copies)
    target = np.minimum(rng.integers(96, 101, n_images), max_dets)
    j_img = g_img[src]
    j_rank = np.arange(src.size) - np.repeat(np.cumsum(np.bincount(j_img, minlength=n_images)) - np.bincount(j_img, minlength=n_images), np.bincount(j_img, minlength=n_images))
    src = src[j_rank < target[j_img]]
    k = src.size
    scale = rng.normal(0, 0.12, (k, 4)) * np.column_stack([gw[src], gh[src], gw[src], gh[src]])
    jb = gt["box"][src] + scale
    jb[:, 2:] = np.maximum(jb[:, 2:], 2.0)
    j_score = rng.beta(4, 2, k)
    n_fp = target - np.bincount(g_img[src], minlength=n_images)
    f_img = np.repeat(np.arange(n_images), n_fp)
    f = f_img.size
    fw = np.clip(rng.lognormal(3.6, 0.9, f), 3, W / 2)
    fh = np.clip(fw * rng.lognormal(0.0, 0.4, f), 3, H / 2)
    fb = np.column_stack([rng.uniform(0, W - fw), rng.uniform(0, H - fh), fw, fh])
    image = np.r_[g_img[src], f_img]
    order = np.argsort(image, kind="stable")
    det = dict(
        image=image[order],
        cls=np.r_[g_cls[src], rng.integers(0, n_classes, f)][order],
        box=np.r_[jb, fb][order],
        score=np.r_[j_score, rng.beta(1.5, 4, f)][order],
    )
    return gt, det


def image_id(i: np.ndarray) -> np.ndarray:
    return 3 * i + 1  # COCO-like: ids not contiguous


def write_coco(folder: Path, gt: dict, det: dict, n_images: int, n_classes: int = 80, *, keep_images=None):
    """annotations.json and predictions.json (COCO results) for images < keep_images."""
    import msgspec

    n = n_images if keep_images is None else keep_images
    gsel, dsel = gt["image"] < n, det["image"] < n
    images = [{"id": int(image_id(i)), "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(n)]
    g_box = gt["box"][gsel]
    anns = [
        {"id": a + 1, "image_id": int(im), "category_id": int(c) + 1, "bbox": b, "area": b[2] * b[3], "iscrowd": int(cr)}
        for a, (im, c, b, cr) in enumerate(zip(image_id(gt["image"][gsel]).tolist(), gt["cls"][gsel].tolist(), g_box.tolist(), gt["crowd"][gsel].tolist()))
    ]
    cats = [{"id": c + 1, "name": f"class_{c:02d}"} for c in range(n_classes)]
    (folder / "annotations.json").write_bytes(msgspec.json.encode({"images": images, "annotations": anns, "categories": cats}))
    # Scores and boxes at float32 precision, as a detector writes them.
    f32 = lambda a: a.astype(np.float32).astype(np.float64).tolist()  # noqa: E731
    results = [
        {"image_id": im, "category_id": c + 1, "bbox": b, "score": s}
        for im, c, b, s in zip(image_id(det["image"][dsel]).tolist(), det["cls"][dsel].tolist(), f32(det["box"][dsel]), f32(det["score"][dsel]))
    ]
    (folder / "predictions.json").write_bytes(msgspec.json.encode(results))
    return folder / "annotations.json", folder / "predictions.json"


def write_parquet(folder: Path, det: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = np.char.add(np.char.zfill(det["image"].astype("U12"), 12), ".jpg")
    box = np.round(det["box"], 2)
    table = pa.table({
        "image": pa.array(names).dictionary_encode(),
        "category": pa.array(det["cls"] + 1, pa.int32()),
        "score": pa.array(np.round(det["score"], 5), pa.float32()),
        "bbox_x": box[:, 0], "bbox_y": box[:, 1], "bbox_w": box[:, 2], "bbox_h": box[:, 3],
    })
    path = folder / "predictions.parquet"
    pq.write_table(table, path)
    return path


def make_polygon_case(folder: Path, n_images: int = 1000, n_classes: int = 20, seed: int = SEED + 1):
    """~20 polygon detections per image: jittered star-shaped GT polygons plus false positives.

    Polygons are star-shaped around their centre (vertices at sorted angles), so they are simple,
    as polygons traced from masks are; detections jitter the centre, the angles and the radii.
    """
    import msgspec

    rng = np.random.default_rng(seed)
    W, H = 640, 480

    def star(cx, cy, r, n):
        return np.sort(rng.uniform(0, 2 * np.pi, n)), r * rng.uniform(0.6, 1.0, n), cx, cy

    def coords(ang, rad, cx, cy):
        return np.round(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]), 2)

    images, anns, results = [], [], []
    for i in range(n_images):
        iid = 3 * i + 1
        images.append({"id": iid, "file_name": f"{i:012d}.jpg", "width": W, "height": H})
        for _ in range(rng.poisson(6)):
            c = int(rng.integers(n_classes)) + 1
            r = rng.uniform(12, 60)
            ang, rad, cx, cy = star(rng.uniform(75, W - 75), rng.uniform(75, H - 75), r, int(rng.integers(8, 17)))
            p = coords(ang, rad, cx, cy)
            x0, y0 = p.min(0)
            x1, y1 = p.max(0)
            area = float(0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))))
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": c, "iscrowd": 0, "area": area,
                         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         "segmentation": [p.ravel().tolist()]})
            for _ in range(1 + rng.poisson(1.5)):
                q = coords(np.sort(ang + rng.normal(0, 0.05, ang.size)), rad * rng.uniform(0.85, 1.15, rad.size),
                           cx + rng.normal(0, 0.08 * r), cy + rng.normal(0, 0.08 * r))
                results.append({"image_id": iid, "category_id": c, "score": round(float(rng.beta(4, 2)), 5),
                                "segmentation": [q.ravel().tolist()]})
        for _ in range(rng.poisson(8)):
            p = coords(*star(rng.uniform(75, W - 75), rng.uniform(75, H - 75), rng.uniform(10, 50), int(rng.integers(6, 13))))
            results.append({"image_id": iid, "category_id": int(rng.integers(n_classes)) + 1,
                            "score": round(float(rng.beta(1.5, 4)), 5), "segmentation": [p.ravel().tolist()]})
    for r in results:  # results carry their box too, as detectors write them
        xy = np.asarray(r["segmentation"][0]).reshape(-1, 2)
        lo, hi = xy.min(0), xy.max(0)
        r["bbox"] = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
    cats = [{"id": c + 1, "name": f"class_{c:02d}"} for c in range(n_classes)]
    (folder / "annotations.json").write_bytes(msgspec.json.encode({"images": images, "annotations": anns, "categories": cats}))
    (folder / "predictions.json").write_bytes(msgspec.json.encode(results))
    return folder / "annotations.json", folder / "predictions.json", len(results)


# -- running one tool in its own process -----------------------------------------------------------


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MiB) of that one child, its stdout, and its CPU seconds (user + sys)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text, usage.ru_utime + usage.ru_stime  # ru_maxrss is KiB on Linux


def run_job(gt: Path, pred: Path, out: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVAL_")}
    env.update({"EVAL_ANNOTATIONS_URI": str(gt), "EVAL_PREDICTIONS_URI": str(pred), "EVAL_OUTPUT_URI": str(out),
                "EVAL_IOU_THRESHOLD": str(IOU), **{f"EVAL_{k.upper()}": str(v) for k, v in extra.items()}})
    if job_has_setting("EVAL_PLOTS"):
        env["EVAL_PLOTS"] = "false"  # the peers draw no plots either: compare evaluation with evaluation
    if job_has_setting("EVAL_REPORT_PAGE") and "report_page" not in extra:
        env["EVAL_REPORT_PAGE"] = "false"  # nor pages (bench/report_page.py measures the page)
    wall, rss, text, cpu = run_measured([PY, "-m", "jobs.evaluate"], env)
    report = json.loads((out / "thresholds.json").read_text())
    return {"wall": wall, "rss": rss, "cpu": cpu, "report": report, "log": text}


@functools.cache
def job_has_setting(name: str) -> bool:
    return name in subprocess.run([PY, "-m", "jobs.evaluate", "--help"], cwd=ROOT, capture_output=True, text=True).stdout


def run_peer(tool: str, gt: Path, pred: Path, iou_type: str = "bbox", thresholds=(IOU,)) -> dict:
    cmd = [PY, __file__, "--peer", tool, str(gt), str(pred), iou_type, json.dumps(list(thresholds))]
    wall, rss, text, cpu = run_measured(cmd)
    inner = json.loads(text.strip().splitlines()[-1])
    return {"wall": wall, "rss": rss, "cpu": cpu, **inner}


def peer_api(tool: str):
    """(COCO, COCOeval) of a peer tool: the three share pycocotools' API."""
    if tool == "hotcoco":
        from hotcoco import COCO, COCOeval
    elif tool == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval


def peer_main(tool: str, gt: str, pred: str, iou_type: str, thresholds: str) -> None:
    """In the child: load, evaluate, accumulate; print timings and per-category AP as JSON."""
    import contextlib
    import io

    t0 = time.perf_counter()
    COCO, COCOeval = peer_api(tool)
    t_import = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        if tool == "pycocotools" and iou_type == "segm":
            from pycocotools import mask as mask_utils  # loadRes wants RLE for segm results

            dets = json.loads(Path(pred).read_text())
            sizes = {im["id"]: (im["height"], im["width"]) for im in coco_gt.dataset["images"]}
            for d in dets:
                h, w = sizes[d["image_id"]]
                d["segmentation"] = mask_utils.merge(mask_utils.frPyObjects(d["segmentation"], h, w))
            coco_dt = coco_gt.loadRes(dets)
        else:
            coco_dt = coco_gt.loadRes(pred)
        t_load = time.perf_counter()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.iouThrs = np.array(json.loads(thresholds)) if tool != "hotcoco" else json.loads(thresholds)
        ev.params.maxDets = [100]
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    t_done = time.perf_counter()
    precision = np.asarray(ev.eval["precision"])  # [T, R, K, A, M]
    cat_ids = list(ev.params.catIds)
    ap = {}
    for k, cat in enumerate(cat_ids):
        p = precision[:, :, k, 0, 0]
        ap[str(cat)] = None if (p == -1).all() else [float(np.mean(p[t])) for t in range(p.shape[0])]
    print(json.dumps({"import": t_import - t0, "load": t_load - t_import, "eval": t_done - t_load, "ap": ap}))


def peer_coco_main(tool: str, gt: str, pred: str, iou_type: str) -> None:
    """In the child: COCO's standard evaluation under its default parameters (what the job's
    `coco` block computes): load, evaluate(), accumulate(), summarize(); timings and the 12 stats."""
    import contextlib
    import io

    t0 = time.perf_counter()
    COCO, COCOeval = peer_api(tool)
    t_import = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(pred)  # results carry boxes: loadRes keeps polygons, evaluate() rasterises them
        t_load = time.perf_counter()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    t_done = time.perf_counter()
    print(json.dumps({"import": t_import - t0, "load": t_load - t_import, "eval": t_done - t_load,
                      "stats": [float(v) for v in ev.stats]}))


def to_compressed_rle(folder: Path) -> None:
    """Rewrite a polygon case's segmentations (both files) as compressed RLE, as Detectron2 and
    MMDetection write them; the masks are pycocotools' rasterisation of the polygons."""
    import msgspec
    from pycocotools import mask as mask_utils

    gt = json.loads((folder / "annotations.json").read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    results = json.loads((folder / "predictions.json").read_text())
    for item in gt["annotations"] + results:
        rle = mask_utils.merge(mask_utils.frPyObjects(item["segmentation"], *sizes[item["image_id"]]))
        item["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    (folder / "annotations.json").write_bytes(msgspec.json.encode(gt))
    (folder / "predictions.json").write_bytes(msgspec.json.encode(results))


def generate(kind: str, folder: Path, n_images: int, **options) -> dict:
    """Write a case in a child process, so this process stays small: a child's peak RSS counts its
    parent's at fork time (Linux keeps the pre-exec high-water mark), and would blur the table."""
    options = {k: str(v) for k, v in options.items()}
    out = subprocess.run([PY, __file__, "--generate", json.dumps({"kind": kind, "folder": str(folder), "n_images": n_images, **options})],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def generate_main(spec: str) -> None:
    spec = json.loads(spec)
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    n = spec["n_images"]
    if spec["kind"] in ("polygons", "rle"):
        *_, n_det = make_polygon_case(folder, n)
        if spec["kind"] == "rle":
            to_compressed_rle(folder)
        return print(json.dumps({"det": n_det}))
    gt, det = make_case(n, seed=int(spec.get("seed", SEED)))
    if spec["kind"] == "reference":
        write_coco(folder, gt, det, n)
        sub = Path(spec["sub"])
        sub.mkdir(parents=True, exist_ok=True)
        write_coco(sub, gt, det, n, keep_images=n // int(spec["fraction"]))
    else:
        write_coco(folder, gt, {k: v[:0] for k, v in det.items()}, n)
        write_parquet(folder, det)
    print(json.dumps({"gt": int(gt["image"].size), "det": int(det["image"].size), "max_per_image": int(np.bincount(det["image"]).max())}))


# -- reporting -------------------------------------------------------------------------------------


def median(values):
    return statistics.median(values)


def job_ap(report: dict) -> dict:
    return {str(c["class_id"]): c["average_precision"] for c in report["classes"] if c["average_precision"] is not None}


def step_seconds(log: str) -> str:
    steps = {}
    for line in log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "seconds" in rec:
            steps[f"{rec.get('event')}{'/' + rec['input'][:4] if 'input' in rec else ''}"] = rec["seconds"]
    return " ".join(f"{k}={v:.2f}" for k, v in steps.items())


def reference(work: Path, n_images: int, repeats: int, peers: list[str], pyc_fraction: int) -> dict:
    print(f"\n== reference case: {n_images} images, 80 classes, COCO JSON in and out, IoU {IOU}")
    folder, sub = work / f"ref{n_images}", work / f"ref{n_images}_tenth"
    info = generate("reference", folder, n_images, sub=sub, fraction=pyc_fraction)
    gt_path, det_path = folder / "annotations.json", folder / "predictions.json"
    sub_gt, sub_det = sub / "annotations.json", sub / "predictions.json"
    print(f"   {info['gt']} ground-truth boxes, {info['det']} detections "
          f"(max {info['max_per_image']} per image), predictions.json {det_path.stat().st_size / 1e6:.0f} MB")
    runs: dict[str, list] = {"job": [], **{p: [] for p in peers}}
    for r in range(repeats):  # alternate: every tool once per round
        runs["job"].append(run_job(gt_path, det_path, folder / "out"))
        print(f"   round {r + 1}: job {runs['job'][-1]['wall']:.2f} s [{step_seconds(runs['job'][-1]['log'])}]", end="", flush=True)
        for p in peers:
            if p == "pycocotools":
                runs[p].append(run_peer(p, sub_gt, sub_det))
            else:
                runs[p].append(run_peer(p, gt_path, det_path))
            print(f", {p} {runs[p][-1]['wall']:.2f} s", end="", flush=True)
        print()
    job_wall = median([x["wall"] for x in runs["job"]])
    job_best = min(x["wall"] for x in runs["job"])
    job_cpu = median([x["cpu"] for x in runs["job"]])
    job_rss = max(x["rss"] for x in runs["job"])
    rows = [("job (python -m jobs.evaluate)", job_wall, job_best, None, job_cpu, job_rss, "whole process: start, read, align, match, sweep, write")]
    for p in peers:
        scale = pyc_fraction if p == "pycocotools" else 1
        wall = median([x["wall"] for x in runs[p]]) * scale
        best = min(x["wall"] for x in runs[p]) * scale
        inner = median([x["load"] + x["eval"] for x in runs[p]]) * scale
        cpu = median([x["cpu"] for x in runs[p]]) * scale
        note = f"on 1/{pyc_fraction} of the images, times x{pyc_fraction}" if scale > 1 else "whole process"
        rows.append((p, wall, best, inner, cpu, max(x["rss"] for x in runs[p]), note))
    print(f"\n   medians of {repeats} alternating rounds; ratio = job time / tool time (< 1: the job is faster)")
    print("   process s: wall time of the whole subprocess; best s: its fastest round (least disturbed by other load);")
    print("   load+eval+acc s: the peer's own timing of loading, evaluate() and accumulate(), without its start-up")
    print(f"   {'tool':30s} {'process s':>9s} {'job/tool':>8s} {'best s':>7s} {'job/tool':>8s} {'load+eval+acc s':>15s} "
          f"{'job/that':>8s} {'CPU s':>6s} {'job/tool':>8s} {'peak RSS MiB':>12s}  note")
    for name, wall, best, inner, cpu, rss, note in rows:
        inner_s, r_inner = (f"{inner:.2f}", f"{job_wall / inner:.2f}x") if inner else ("-", "-")
        print(f"   {name:30s} {wall:9.2f} {job_wall / wall:7.2f}x {best:7.2f} {job_best / best:7.2f}x {inner_s:>15s} "
              f"{r_inner:>8s} {cpu:6.2f} {job_cpu / cpu:7.2f}x {rss:12.0f}  {note}")
    if "hotcoco" in runs:
        ours, theirs = job_ap(runs["job"][-1]["report"]), runs["hotcoco"][-1]["ap"]
        diff = max(abs(ours[k] - theirs[k][0]) for k in ours if theirs.get(k))
        print(f"   max |AP(job) - AP(hotcoco)| over classes: {diff:.2e}")
        hot = rows[1][1]
        print(f"   goal job <= 2x hotcoco: {'met' if job_wall <= 2 * hot else 'NOT met'} ({job_wall / hot:.2f}x median, "
              f"{job_best / rows[1][2]:.2f}x best); "
              f"goal job peak RSS <= 1024 MiB: {'met' if job_rss <= 1024 else 'NOT met'} ({job_rss:.0f} MiB)")
    return {"folder": folder, "gt": gt_path, "det": det_path, "job_wall": job_wall}


def scaling(work: Path, base_images: int, scales: list[int], repeats: int) -> None:
    print(f"\n== scaling: job alone, Parquet predictions, COCO ground truth; {scales} x {base_images} images")
    points = []
    for s in scales:
        n = base_images * s
        folder = work / f"scale{s}"
        n_det = generate("parquet", folder, n, seed=SEED + s)["det"]
        gt_path, pq_path = folder / "annotations.json", folder / "predictions.parquet"
        walls, rss, log = [], 0.0, ""
        for _ in range(repeats if s < 10 else 1):
            r = run_job(gt_path, pq_path, folder / "out")
            walls.append(r["wall"])
            rss, log = max(rss, r["rss"]), r["log"]
        points.append((n_det, median(walls)))
        print(f"   {s:>3d}x: {n:>7d} images, {n_det:>9d} detections, {pq_path.stat().st_size / 1e6:6.0f} MB parquet: "
              f"{median(walls):7.2f} s, peak RSS {rss:6.0f} MiB [{step_seconds(log)}]", flush=True)
    if len(points) >= 2:
        x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
        slope = np.polyfit(x, y, 1)[0]
        print(f"   scaling exponent (slope of log time over log detections, {len(points)} points): {slope:.2f}")
        (n0, t0), (n1, t1) = points[-2], points[-1]
        print(f"   between the two largest scales: {np.log(t1 / t0) / np.log(n1 / n0):.2f} "
              "(the fixed start-up, ~0.3 s, flattens the slope at the small end)")


def in_process_seconds(log: str) -> float:
    """The job's own time from the start of its work to the report written (its last log line with seconds)."""
    return next(json.loads(line)["seconds"] for line in reversed(log.splitlines())
                if line.startswith("{") and '"report written"' in line)


def polygons(work: Path, n_images: int, repeats: int) -> None:
    folder = work / "polygons"
    n = generate("polygons", folder, n_images)["det"]
    gt_path, det_path = folder / "annotations.json", folder / "predictions.json"
    rounds = max(repeats, 5)  # a small case: more rounds against the machine's noise
    print(f"\n== polygons: {n_images} images, {n} polygon detections; job (exact polygon IoU) vs pycocotools segm "
          f"(rasterised masks); medians of {rounds} alternating rounds")
    jobs, pycs = [], []
    for _ in range(rounds):
        jobs.append(run_job(gt_path, det_path, folder / "out", iou_type="polygon"))
        pycs.append(run_peer("pycocotools", gt_path, det_path, "segm"))
    jw, pw = median([j["wall"] for j in jobs]), median([p["wall"] for p in pycs])
    jin, pin = median([in_process_seconds(j["log"]) for j in jobs]), median([p["load"] + p["eval"] for p in pycs])
    ours, theirs = job_ap(jobs[-1]["report"]), pycs[-1]["ap"]
    diffs = np.array([ours[k] - theirs[k][0] for k in ours if theirs.get(k)])
    print(f"   {'':34s} {'job':>7s} {'pycocotools':>11s} {'ratio':>7s}")
    print(f"   {'process (start to exit) s':34s} {jw:7.2f} {pw:11.2f} {pw / jw:6.1f}x")
    print(f"   {'work (read files to AP) s':34s} {jin:7.2f} {pin:11.2f} {pin / jin:6.1f}x   <- goal >= 5x: "
          f"{'met' if pin / jin >= 5 else 'NOT met'}")
    print(f"   {'peak RSS MiB':34s} {max(j['rss'] for j in jobs):7.0f} {max(p['rss'] for p in pycs):11.0f}")
    print("   work: the job's own timing from the start of its run (settings parsed) to thresholds.json written;")
    print("   pycocotools' own timing of loading both files (polygons rasterised to RLE), evaluate() and accumulate().")
    print(f"   Neither counts interpreter start and imports: the job's are {jw - jin:.2f} s (pydantic-settings, structlog, numpy).")
    print(f"   AP(job) - AP(pycocotools) per class: mean {diffs.mean():+.4f}, max |.| {np.abs(diffs).max():.4f}; "
          f"mAP {np.mean(list(ours.values())):.4f} vs {np.mean([v[0] for v in theirs.values() if v]):.4f}")


STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def masks(work: Path, n_images: int, repeats: int) -> None:
    """COCO masks: the job (EVAL_IOU_TYPE=segm: the single-IoU evaluation plus the `coco` block)
    against pycocotools and faster-coco-eval `segm` under their default parameters (summarize()),
    on the polygon case and on the same masks as compressed RLE."""
    rounds = max(repeats, 3)
    for kind in ("polygons", "rle"):
        folder = work / f"masks-{kind}"
        n = generate(kind, folder, n_images)["det"]
        gt_path, det_path = folder / "annotations.json", folder / "predictions.json"
        print(f"\n== masks ({kind}): {n_images} images, {n} detections; job EVAL_IOU_TYPE=segm vs COCOeval segm "
              f"(default parameters + summarize); medians of {rounds} alternating rounds")
        runs = {"job": [], "pycocotools": [], "faster-coco-eval": []}
        for _ in range(rounds):
            runs["job"].append(run_job(gt_path, det_path, folder / "out", iou_type="segm"))
            for tool in ("pycocotools", "faster-coco-eval"):
                cmd = [PY, __file__, "--peer-coco", tool, str(gt_path), str(det_path), "segm"]
                wall, rss, text, cpu = run_measured(cmd)
                runs[tool].append({"wall": wall, "rss": rss, "cpu": cpu, **json.loads(text.strip().splitlines()[-1])})
        job_wall = median([r["wall"] for r in runs["job"]])
        job_cpu = median([r["cpu"] for r in runs["job"]])
        ours = runs["job"][-1]["report"]["coco"]["stats"]
        print(f"   {'tool':18s} {'process s':>9s} {'CPU s':>7s} {'tool/job (process)':>19s} {'tool/job (CPU)':>15s} "
              f"{'peak RSS MiB':>12s} {'max |stat - job|':>16s}")
        print(f"   {'job':18s} {job_wall:9.2f} {job_cpu:7.2f} {'1.00x':>19s} {'1.00x':>15s} "
              f"{max(r['rss'] for r in runs['job']):12.0f} {'':>16s}")
        for tool in ("pycocotools", "faster-coco-eval"):
            wall, cpu = median([r["wall"] for r in runs[tool]]), median([r["cpu"] for r in runs[tool]])
            theirs = runs[tool][-1]["stats"]
            diff = max(abs((ours[k] if ours[k] is not None else -1.0) - v) for k, v in zip(STAT_NAMES, theirs))
            print(f"   {tool:18s} {wall:9.2f} {cpu:7.2f} {wall / job_wall:18.2f}x {cpu / job_cpu:14.2f}x "
                  f"{max(r['rss'] for r in runs[tool]):12.0f} {diff:16.1e}")
        print(f"   job steps (last round): {step_seconds(runs['job'][-1]['log'])}")
        print("   goal: pycocotools/job >= 3x and faster-coco-eval/job >= 1x (whole processes)")


def coco_block_cost(ref: dict, repeats: int) -> None:
    """The reference case with the coco block and without (EVAL_COCO_SUMMARY=false), alternating:
    its cost is the difference; the job's log gives the block's own time on its thread (beside the
    operating points). And, for the same work, hotcoco's evaluation under COCO's default parameters
    with summarize()."""
    runs, bare, peer = [], [], []
    for _ in range(repeats):
        runs.append(run_job(ref["gt"], ref["det"], ref["folder"] / "outc"))
        if job_has_setting("EVAL_COCO_SUMMARY"):
            bare.append(run_job(ref["gt"], ref["det"], ref["folder"] / "outn", coco_summary="false"))
        wall, rss, text, cpu = run_measured([PY, __file__, "--peer-coco", "hotcoco", str(ref["gt"]), str(ref["det"]), "bbox"])
        peer.append({"wall": wall, "cpu": cpu, **json.loads(text.strip().splitlines()[-1])})
    secs = [json.loads(line)["seconds"] for r in runs for line in r["log"].splitlines()
            if line.startswith("{") and '"coco summary"' in line]
    wall = median([r["wall"] for r in runs])
    without = f", without it {median([r['wall'] for r in bare]):.2f} s: it costs " \
              f"{wall - median([r['wall'] for r in bare]):.2f} s" if bare else ""
    print(f"\n== coco block on the reference case: job process {wall:.2f} s{without} "
          f"(its own time on its thread {median(secs):.2f} s; medians of {repeats})")
    ours, theirs = runs[-1]["report"]["coco"]["stats"], peer[-1]["stats"]
    diff = max(abs((ours[k] if ours[k] is not None else -1.0) - v) for k, v in zip(STAT_NAMES, theirs))
    hot = median([p["wall"] for p in peer])
    print(f"   the same work in hotcoco (default parameters, summarize()): {hot:.2f} s process, CPU "
          f"{median([p['cpu'] for p in peer]):.2f} s; job / hotcoco {wall / hot:.2f}x; max |stat - job| {diff:.1e}")


def coco_thresholds(ref: dict, repeats: int, with_hotcoco: bool) -> None:
    print(f"\n== AP@[.5:.95]: EVAL_IOU_THRESHOLDS={json.dumps(COCO_THRESHOLDS)} on the reference case")
    singles, multis = [], []
    for _ in range(repeats):
        singles.append(run_job(ref["gt"], ref["det"], ref["folder"] / "out1"))
        multis.append(run_job(ref["gt"], ref["det"], ref["folder"] / "out10", iou_thresholds=json.dumps(COCO_THRESHOLDS)))
    sw, mw = median([s["wall"] for s in singles]), median([m["wall"] for m in multis])
    print(f"   single threshold {sw:.2f} s, ten thresholds {mw:.2f} s: {mw / sw:.2f}x (goal <= 3x); "
          f"peak RSS {max(m['rss'] for m in multis):.0f} MiB")
    report = multis[-1]["report"]
    print(f"   summary: mAP@0.5 {report['summary']['mean_average_precision']:.4f}, "
          f"mAP@[.5:.95] {report['summary'].get('mean_average_precision_iou_mean'):.4f}")
    if with_hotcoco:
        hc = run_peer("hotcoco", ref["gt"], ref["det"], thresholds=COCO_THRESHOLDS)
        ours = {str(c["class_id"]): c.get("average_precision_iou_mean") for c in report["classes"]}
        diff = max(abs(ours[k] - np.mean(v)) for k, v in hc["ap"].items() if v and ours.get(k) is not None)
        print(f"   hotcoco ten thresholds {hc['wall']:.2f} s process; max |AP@[.5:.95](job) - hotcoco| {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,3,10", help="comma-separated multiples of the reference case for the scaling run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per comparison (median reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 images, scales 1,3, one round")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: reference, peers, scaling, polygons, "
                        "masks, thresholds")
    parser.add_argument("--mask-images", type=int, default=1000, help="images in the mask cases")
    parser.add_argument("--work", default=None, help="folder for generated files (default: a temporary folder)")
    parser.add_argument("--peer", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--peer-coco", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        return peer_main(*args.peer)
    if args.peer_coco:
        return peer_coco_main(*args.peer_coco)
    if args.generate:
        return generate_main(args.generate)
    images, scales, repeats = 5000, [int(s) for s in args.scales.split(",") if s], args.repeats
    poly_images = 1000
    if args.quick:
        images, scales, repeats, poly_images = 500, [1, 3], 1, 100
    skip = set(filter(None, args.skip.split(",")))
    peers = [] if "peers" in skip else ["hotcoco", "faster-coco-eval", "pycocotools"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, numpy {np.__version__}, seed {SEED}")
    # The job's own modules byte-compiled, as in the eval image (Dockerfile.eval runs compileall) and
    # as the peers' installed packages are; an editable install under PYTHONDONTWRITEBYTECODE=1
    # would otherwise compile them from source in every run (about 0.05 s).
    subprocess.run([PY, "-m", "compileall", "-q", "jobs", "common"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ref = reference(work, images, repeats, peers, 10) if "reference" not in skip else None
        if ref is not None:
            coco_block_cost(ref, repeats)
        if "thresholds" not in skip and ref is not None:
            coco_thresholds(ref, repeats, "hotcoco" in peers)
        if "polygons" not in skip:
            polygons(work, poly_images, repeats)
        if "masks" not in skip:
            masks(work, 100 if args.quick else args.mask_images, repeats)
        if "scaling" not in skip:
            scaling(work, images, scales, repeats)


if __name__ == "__main__":
    main()
