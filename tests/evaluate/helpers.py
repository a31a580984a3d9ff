"""Builders shared by the evaluation tests: generated COCO data and in-process job runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import structlog

from jobs.evaluate.job import build_report
from jobs.evaluate.settings import EvalSettings


def make_coco_case(seed: int, *, n_images=30, n_classes=5, crowd_rate=0.08, round_scores=2, empty_class=True):
    """A COCO ground truth and results list with jitter, duplicates, false positives and score ties.

    Annotation ids start at 0; image ids are not contiguous; one category has no annotations.
    """
    rng = np.random.default_rng(seed)
    categories = [{"id": 10 + 3 * c, "name": f"class{c}"} for c in range(n_classes)]
    usable = categories[:-1] if empty_class else categories
    images, anns, dets = [], [], []
    ann_id = 0
    for i in range(n_images):
        image_id = 7 * i + 3
        images.append({"id": image_id, "file_name": f"img_{image_id}.jpg", "width": 200, "height": 200})
        for _ in range(rng.integers(0, 6)):
            cat = usable[rng.integers(len(usable))]["id"]
            x, y, w, h = rng.uniform(0, 150, 2).tolist() + rng.uniform(5, 60, 2).tolist()
            crowd = int(rng.random() < crowd_rate)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": crowd})
            ann_id += 1
            for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 detections per object
                jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
                box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
                dets.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": float(rng.random())})
        for _ in range(rng.integers(0, 4)):  # false positives, also of the empty class
            cat = categories[rng.integers(len(categories))]["id"]
            dets.append({"image_id": image_id, "category_id": cat,
                         "bbox": rng.uniform(0, 150, 2).tolist() + rng.uniform(5, 60, 2).tolist(),
                         "score": float(rng.random())})
    if round_scores is not None:  # ties across images and classes stress the tie rules
        for d in dets:
            d["score"] = round(d["score"], round_scores)
    return {"images": images, "annotations": anns, "categories": categories}, dets


def write_case(tmp: Path, gt: dict, dets: list) -> tuple[Path, Path]:
    gt_path, det_path = tmp / "annotations.json", tmp / "predictions.json"
    gt_path.write_text(json.dumps(gt))
    det_path.write_text(json.dumps(dets))
    return gt_path, det_path


def eval_settings(monkeypatch, **env) -> EvalSettings:
    """EvalSettings from keyword arguments as EVAL_ variables (JSON for non-strings), and no others."""
    for key in [k for k in os.environ if k.startswith("EVAL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        monkeypatch.setenv(f"EVAL_{key.upper()}", text)
    return EvalSettings()


def evaluate(monkeypatch, predictions, annotations, output="unused", **settings):
    """Run the job's report builder in-process with EVAL_ settings from keyword arguments."""
    env = {"predictions_uri": str(predictions), "annotations_uri": str(annotations), "output_uri": str(output), **settings}
    return build_report(eval_settings(monkeypatch, **env), "test-run", structlog.get_logger())


def run_cocoeval(gt: dict, dets: list, tmp_path: Path, iou_thresholds=None):
    """pycocotools' COCOeval (bbox, area 'all', no per-image cap) after evaluate() and accumulate().

    pycocotools stores the matched annotation's id as its match flag, so a detection matched to
    annotation id 0 would count as a false positive there; the annotations are renumbered from 1.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    renumbered = {**gt, "annotations": [{**a, "id": n + 1} for n, a in enumerate(gt["annotations"])]}
    path = tmp_path / "oracle_annotations.json"
    path.write_text(json.dumps(renumbered))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets) if dets else COCO(), "bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.array(iou_thresholds)
        ev.params.maxDets = [10**6]
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev
