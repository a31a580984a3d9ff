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


def shoelace_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def make_polygon_case(seed: int, *, n_images=40, n_classes=3, size=400):
    """A COCO case of star-shaped polygons (20-60 px): ground truth, jittered copies, false positives."""
    rng = np.random.default_rng(seed)

    def ring(cx, cy, radii, angles):
        return np.round(np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]), 2)

    def entry(xy):
        lo, hi = xy.min(0), xy.max(0)
        return {"segmentation": [xy.ravel().tolist()], "bbox": [*lo.tolist(), *(hi - lo).tolist()]}

    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": size, "height": size})
        for _ in range(rng.integers(1, 5)):
            cat, n = int(rng.integers(n_classes)) + 1, int(rng.integers(6, 15))
            cx, cy, r = *rng.uniform(70, size - 70, 2), rng.uniform(20, 60)
            angles, radii = np.sort(rng.uniform(0, 2 * np.pi, n)), r * rng.uniform(0.6, 1, n)
            xy = ring(cx, cy, radii, angles)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "iscrowd": 0,
                         "area": shoelace_area(xy), **entry(xy)})
            for _ in range(rng.integers(0, 3)):
                moved = ring(cx + rng.normal(0, 0.15 * r), cy + rng.normal(0, 0.15 * r),
                             radii * rng.uniform(0.8, 1.2, n), np.sort(angles + rng.normal(0, 0.05, n)))
                dets.append({"image_id": i + 1, "category_id": cat, "score": round(float(rng.random()), 3), **entry(moved)})
        for _ in range(rng.integers(0, 3)):
            n = int(rng.integers(5, 10))
            xy = ring(*rng.uniform(70, size - 70, 2), rng.uniform(15, 50) * rng.uniform(0.6, 1, n), np.sort(rng.uniform(0, 2 * np.pi, n)))
            dets.append({"image_id": i + 1, "category_id": int(rng.integers(n_classes)) + 1,
                         "score": round(float(rng.random()), 3), **entry(xy)})
    categories = [{"id": c + 1, "name": f"shape{c}"} for c in range(n_classes)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def run_cocoeval(gt: dict, dets: list, tmp_path: Path, iou_thresholds=None, iou_type="bbox", *, defaults=False):
    """pycocotools' COCOeval (area 'all', no per-image cap) after evaluate() and accumulate();
    with `defaults`, under its default parameters and summarize() run too (`ev.stats`).

    For `iou_type="segm"` the results' polygons are rasterised to RLE first (loadRes wants RLE).

    pycocotools stores the matched annotation's id as its match flag, so a detection matched to
    annotation id 0 would count as a false positive there; the annotations are renumbered from 1.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    renumbered = {**gt, "annotations": [{**a, "id": n + 1} for n, a in enumerate(gt["annotations"])]}
    dets = [dict(d) for d in dets]  # loadRes adds keys to the results it is given
    path = tmp_path / "oracle_annotations.json"
    path.write_text(json.dumps(renumbered))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        if iou_type == "segm":
            from pycocotools import mask as mask_utils

            size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
            dets = [{**d, "segmentation": mask_utils.merge(mask_utils.frPyObjects(d["segmentation"], *size[d["image_id"]]))}
                    if isinstance(d["segmentation"], list) else d for d in dets]
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets) if dets else COCO(), iou_type)
        if defaults:
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            return ev
        if iou_thresholds is not None:
            ev.params.iouThrs = np.array(iou_thresholds)
        ev.params.maxDets = [10**6]
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a (h, w) bool mask: run lengths in column-major order, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, change, flat.size]).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat.size and flat[0] else []) + runs}


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def make_mask_case(seed: int, *, n_images=25, n_classes=4, det_boxes=True, crowd_rate=0.1):
    """A COCO case with every segmentation encoding on both sides, at non-square image sizes.

    Ground truth: ellipses as polygons (some of two overlapping parts, some self-intersecting),
    compressed RLE and uncompressed RLE; crowd regions as uncompressed RLE (as COCO val2017 marks
    them); annotation ids from 0; `area` the mask's. Sizes span COCO's small, medium and large.
    Detections: jittered copies and false positives in all three encodings, scores with ties;
    with `det_boxes` each also has its mask's bbox (pycocotools then takes area ranges from it).
    """
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    categories = [{"id": 5 + 2 * c, "name": f"thing{c}"} for c in range(n_classes)]
    images, anns, dets = [], [], []

    def ellipse(h, w, cx, cy, rx, ry, n=24):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.round(np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)]), 2).ravel().tolist()

    def encode(parts, h, w, how):
        rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
        if how == "polygon":
            return parts
        mask = mask_utils.decode(rle).astype(bool)
        return compressed_rle(mask) if how == "compressed" else uncompressed_rle(mask)

    def shape(h, w, cx, cy, rx, ry, kind):
        if kind == "two parts":  # overlapping parts: their union
            return [ellipse(h, w, cx - rx / 3, cy, rx * 0.7, ry), ellipse(h, w, cx + rx / 3, cy, rx * 0.7, ry * 0.8)]
        if kind == "bowtie":  # a self-intersecting ring
            return [[cx - rx, cy - ry, cx + rx, cy + ry, cx + rx, cy - ry, cx - rx, cy + ry]]
        return [ellipse(h, w, cx, cy, rx, ry)]

    hows = ["polygon", "compressed", "uncompressed"]
    kinds = ["one", "one", "two parts", "bowtie"]
    for i in range(n_images):
        image_id = 11 * i + 2
        h, w = int(rng.integers(90, 260)), int(rng.integers(90, 260))
        images.append({"id": image_id, "file_name": f"m{image_id}.png", "height": h, "width": w})
        for _ in range(rng.integers(0, 6)):
            cat = categories[int(rng.integers(n_classes - 1))]["id"]
            rx, ry = rng.uniform(2, min(60, w / 2 - 2)), rng.uniform(2, min(60, h / 2 - 2))
            cx, cy = rng.uniform(rx, w - rx), rng.uniform(ry, h - ry)
            kind = kinds[int(rng.integers(len(kinds)))]
            crowd = rng.random() < crowd_rate
            parts = shape(h, w, cx, cy, rx, ry, kind)
            seg = encode(parts, h, w, "uncompressed" if crowd else hows[int(rng.integers(3))])
            area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(parts, h, w))))
            bbox = mask_utils.toBbox(mask_utils.merge(mask_utils.frPyObjects(parts, h, w))).tolist()
            anns.append({"id": len(anns), "image_id": image_id, "category_id": cat, "segmentation": seg,
                         "area": area, "bbox": bbox, "iscrowd": int(crowd)})
            for _ in range(rng.integers(0, 3)):
                jx, jy = rng.normal(0, 0.15 * rx), rng.normal(0, 0.15 * ry)
                moved = shape(h, w, np.clip(cx + jx, 1, w - 1), np.clip(cy + jy, 1, h - 1),
                              rx * rng.uniform(0.8, 1.2), ry * rng.uniform(0.8, 1.2), kind)
                dets.append({"image_id": image_id, "category_id": cat, "parts": moved, "h": h, "w": w,
                             "score": round(float(rng.random()), 2)})
        for _ in range(rng.integers(0, 4)):
            rx, ry = rng.uniform(3, 40, 2)
            parts = [ellipse(h, w, rng.uniform(rx, w - rx), rng.uniform(ry, h - ry), rx, ry)]
            dets.append({"image_id": image_id, "category_id": categories[int(rng.integers(n_classes))]["id"],
                         "parts": parts, "h": h, "w": w, "score": round(float(rng.random()), 2)})
    out = []
    for d in dets:
        how = hows[int(rng.integers(3))] if det_boxes else "compressed"
        rle = mask_utils.merge(mask_utils.frPyObjects(d["parts"], d["h"], d["w"]))
        entry = {"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
                 "segmentation": encode(d["parts"], d["h"], d["w"], how)}
        if det_boxes:
            entry["bbox"] = mask_utils.toBbox(rle).tolist()
        out.append(entry)
    return {"images": images, "annotations": anns, "categories": categories}, out
