"""COCO masks (EVAL_IOU_TYPE=segm) and COCO's standard summary, against pycocotools as the oracle.

Generated cases carry every encoding on both sides (polygons of one and of several overlapping
parts, self-intersecting rings, compressed and uncompressed RLE), crowd regions as uncompressed
RLE, annotation ids from 0 and tied scores. Per-class AP equals pycocotools `segm` within 1e-6;
thresholds, P, R and F1 equal the sweep over pycocotools' own matches within 1e-9; the 12
summary numbers equal pycocotools' `summarize()` within 1e-6, for bbox and segm.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from common.exitcodes import ExitCode
from tests.evaluate.helpers import (compressed_rle, evaluate, make_coco_case, make_mask_case, run_cocoeval,
                                    uncompressed_rle, write_case)
from tests.evaluate.test_errors import assert_clean_failure, run_job
from tests.evaluate.test_pycocotools_oracle import assert_like_oracle, pycocotools_oracle

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "coco-sample-100"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_segm_matches_pycocotools(seed, iou, tmp_path, monkeypatch):
    gt, dets = make_mask_case(seed, det_boxes=seed % 2 == 0)
    encodings = {type(a["segmentation"]).__name__ + str(type(a["segmentation"]) is dict and type(a["segmentation"]["counts"]))
                 for a in gt["annotations"] + dets}
    assert len(encodings) == 3  # polygons, compressed and uncompressed RLE
    assert any(a["iscrowd"] for a in gt["annotations"]) and gt["annotations"][0]["id"] == 0
    report = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)), iou_threshold=str(iou))
    assert report.matching.geometry == "segm" and "auto" in report.matching.reason
    assert_like_oracle(report, pycocotools_oracle(gt, dets, iou, tmp_path, iou_type="segm"))


def test_segm_ap_differs_from_box_ap(tmp_path, monkeypatch):
    """The case the issue found: masks evaluated as boxes give another AP; segm gives pycocotools' segm."""
    gt, dets = make_mask_case(7)
    paths = write_case(tmp_path, gt, dets)
    segm = evaluate(monkeypatch, *reversed(paths))
    boxes = evaluate(monkeypatch, *reversed(paths), iou_type="bbox")
    assert boxes.matching.geometry == "bbox" and boxes.coco.iou_type == "bbox"
    assert segm.coco.iou_type == "segm"
    assert abs(segm.summary.mean_average_precision - boxes.summary.mean_average_precision) > 0.01
    assert_like_oracle(boxes, pycocotools_oracle(gt, dets, 0.5, tmp_path))


def test_multi_part_union_as_pycocotools(tmp_path, monkeypatch):
    """[bowtie, square 2..8] against the square 0..10: the union of the parts, IoU 0.68."""
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}],
          "categories": [{"id": 1, "name": "x"}],
          "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [0, 0, 10, 10],
                           "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}]}
    part = [[0, 0, 10, 10, 10, 0, 0, 10], [2, 2, 8, 2, 8, 8, 2, 8]]
    dets = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": part}]
    from pycocotools import mask as mask_utils

    theirs = mask_utils.iou([mask_utils.merge(mask_utils.frPyObjects(part, 20, 20))],
                            [mask_utils.frPyObjects(gt["annotations"][0]["segmentation"], 20, 20)[0]], [0])[0, 0]
    for threshold, hit in ((theirs - 1e-9, 1), (theirs + 1e-9, 0)):
        report = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)), iou_threshold=str(threshold))
        assert report.matching.geometry == "segm" and report.classes[0].tp == hit
    assert theirs == pytest.approx(0.68, abs=0.06)


def coco_stats(ev) -> dict:
    return {name: (None if value == -1 else float(value)) for name, value in zip(STAT_NAMES, ev.stats)}


def assert_stats(report, ev):
    want = coco_stats(ev)
    got = report.coco.stats.model_dump()
    for name in STAT_NAMES:
        if want[name] is None:
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(want[name], abs=1e-6), name
    # Per class AP@[.5:.95]: the class's mean over IoUs and recall points (area all, maxDets 100).
    by_id = {c.class_id: c.average_precision for c in report.coco.classes}
    for k, cat in enumerate(ev.params.catIds):
        prec = ev.eval["precision"][:, :, k, 0, -1]
        if (prec == -1).all():
            assert by_id[cat] is None
        else:
            assert by_id[cat] == pytest.approx(float(prec.mean()), abs=1e-6)


def crowded(gt, dets, rng):
    """More than 100 detections on one image and class, and more than 10 on others: maxDets bite."""
    image = gt["annotations"][1]["image_id"]
    cat = gt["annotations"][1]["category_id"]
    template = next(d for d in dets if d["image_id"] == image) if any(d["image_id"] == image for d in dets) else None
    extra = []
    for _ in range(130):
        d = copy.deepcopy(template) if template else None
        if d is None:
            break
        d["category_id"] = cat
        d["score"] = round(float(rng.random()), 2)
        extra.append(d)
    return dets + extra


@pytest.mark.parametrize("seed", range(4))
def test_coco_stats_bbox_like_pycocotools(seed, tmp_path, monkeypatch):
    gt, dets = make_coco_case(seed, round_scores=2 if seed % 2 else None)
    for a in gt["annotations"][::3]:  # large objects too, and an area that is not the box's
        a["bbox"][2] *= 3
        a["bbox"][3] *= 3
        a["area"] = a["bbox"][2] * a["bbox"][3] * 0.9
    dets = crowded(gt, dets, np.random.default_rng(seed))
    report = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    assert_stats(report, run_cocoeval(gt, dets, tmp_path, defaults=True))


@pytest.mark.parametrize("seed", range(4))
def test_coco_stats_segm_like_pycocotools(seed, tmp_path, monkeypatch):
    gt, dets = make_mask_case(seed, det_boxes=seed % 2 == 0)
    dets = crowded(gt, dets, np.random.default_rng(seed))
    report = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    assert report.coco.iou_type == "segm"
    assert_stats(report, run_cocoeval(gt, dets, tmp_path, iou_type="segm", defaults=True))


def test_coco_stats_published_coco_sample(monkeypatch):
    """The 12 numbers published for the COCO-100 fixture (pycocotools, bbox, default parameters)."""
    table = (FIXTURE / "README.md").read_text().split("| AP | AP50")[1].splitlines()
    published = [float(v) for v in table[2].strip("| ").split(" | ")]
    report = evaluate(monkeypatch, FIXTURE / "predictions.json", FIXTURE / "annotations.json")
    got = report.coco.stats.model_dump()
    assert [got[name] for name in STAT_NAMES] == pytest.approx(published, abs=1e-6)


def test_compressed_counts_checked_as_pycocotools_reads_them():
    """Every mask pycocotools encodes passes the check (long runs, negative differences included)."""
    from pycocotools import mask as mask_utils

    from jobs.evaluate.masks import Rle, _check_compressed

    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((300, 211), bool), rng.random((40, 60)) < 0.5]
    big = np.zeros((1200, 1500), bool)
    big[100:1100, 3:1490] = True
    masks.append(big)
    segs = [Rle(size=tuple(m.shape), counts=compressed_rle(m)["counts"]) for m in masks]
    _check_compressed(segs, [m.shape[0] for m in masks], [m.shape[1] for m in masks], str)
    for m in masks:  # and our uncompressed form is pycocotools' mask
        rle = mask_utils.frPyObjects(uncompressed_rle(m), *m.shape)
        assert (mask_utils.decode(rle).astype(bool) == m).all()


def _bad_case(tmp_path, mangle_gt=None, mangle_det=None):
    gt, dets = make_mask_case(1)
    if mangle_gt:
        mangle_gt(gt)
    if mangle_det:
        mangle_det(dets)
    return write_case(tmp_path, gt, dets)


def _first(items, encoding):
    for n, item in enumerate(items):
        seg = item["segmentation"]
        if encoding == "compressed" and isinstance(seg, dict) and isinstance(seg["counts"], str):
            return n, item
        if encoding == "uncompressed" and isinstance(seg, dict) and isinstance(seg["counts"], list):
            return n, item
        if encoding == "polygon" and isinstance(seg, list):
            return n, item
    raise AssertionError(encoding)


def _set(side, encoding, change):
    def mangle(doc):
        items = doc["annotations"] if side == "gt" else doc
        n, item = _first(items, encoding)
        change(item)
        mangle.row = n
    return mangle


BAD = {
    "RLE size not the image's": ("det", "compressed", lambda d: d["segmentation"].update(size=[d["segmentation"]["size"][0] + 1, d["segmentation"]["size"][1]]),
                                 ["RLE size", "not the image's"]),
    "uncompressed counts short": ("gt", "uncompressed", lambda a: a["segmentation"]["counts"].append(3),
                                  ["sum to height x width"]),
    "compressed counts short": ("det", "compressed", lambda d: d["segmentation"].update(counts=d["segmentation"]["counts"][:-2] + "0"),
                                ["not height x width"]),
    "invalid characters": ("gt", "compressed", lambda a: a["segmentation"].update(counts="ab~{" + a["segmentation"]["counts"]),
                           ["character outside"]),
    "truncated counts": ("det", "compressed", lambda d: d["segmentation"].update(counts=d["segmentation"]["counts"] + "o"),
                         ["ends inside a count"]),
    "odd polygon values": ("gt", "polygon", lambda a: a["segmentation"][0].append(3.0), [">= 3 finite x, y pairs"]),
    "RLE not a dict of size and counts": ("det", "compressed", lambda d: d["segmentation"].pop("size"), ["size"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_masks_exit_65_naming_file_and_row(case, job_env, tmp_path):
    side, encoding, change, needles = BAD[case]
    mangle = _set(side, encoding, change)
    gt_path, det_path = _bad_case(tmp_path, **({"mangle_gt": mangle} if side == "gt" else {"mangle_det": mangle}))
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt_path), predictions_uri=str(det_path))
    name, where = ("annotations.json", f"annotations[{mangle.row}]") if side == "gt" else ("predictions.json", f"[{mangle.row}]")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, name, where, *needles, out=tmp_path / "out")


def test_rle_is_never_evaluated_as_a_polygon_or_box(job_env, tmp_path):
    gt_path, det_path = _bad_case(tmp_path)
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt_path), predictions_uri=str(det_path), iou_type="polygon")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "RLE cannot be evaluated as a polygon", "EVAL_IOU_TYPE=segm",
                         out=tmp_path / "out")
    # Without image sizes, auto cannot rasterise: an error, never the boxes.
    gt = json.loads(Path(gt_path).read_text())
    for im in gt["images"]:
        del im["height"], im["width"]
    Path(gt_path).write_text(json.dumps(gt))
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt_path), predictions_uri=str(det_path))
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "annotations.json", "RLE", "height and width", out=tmp_path / "out")
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt_path), predictions_uri=str(det_path), iou_type="segm")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "annotations.json", "height and width", out=tmp_path / "out")


def test_missing_segmentation_under_segm(job_env, tmp_path):
    def drop(dets):
        del dets[3]["segmentation"]

    gt_path, det_path = _bad_case(tmp_path, mangle_det=drop)
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt_path), predictions_uri=str(det_path))
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.json", "[3].segmentation", "missing", out=tmp_path / "out")


def test_crowd_rle_under_bbox_uses_its_box(tmp_path, monkeypatch):
    """Box detections against ground truth with crowd RLE: bbox, as pycocotools (the RLE's bbox field)."""
    gt, dets = make_mask_case(2)
    dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    report = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    assert report.matching.geometry == "bbox" and "predictions carry no segmentations" in report.matching.reason
    assert_like_oracle(report, pycocotools_oracle(gt, dets, 0.5, tmp_path))
    assert_stats(report, run_cocoeval(gt, dets, tmp_path, defaults=True))


def test_nms_on_masks_like_a_plain_loop(tmp_path, monkeypatch):
    """EVAL_NMS_IOU under segm: the textbook greedy loop over pycocotools' mask IoU."""
    from pycocotools import mask as mask_utils

    from jobs.evaluate.align import Objects
    from jobs.evaluate.nms import nms_keep

    rng = np.random.default_rng(5)
    n = 60
    image, cls, score = rng.integers(0, 3, n), rng.integers(0, 2, n), np.round(rng.random(n), 1)
    masks = np.empty(n, dtype=object)
    for i in range(n):
        m = np.zeros((50, 40), bool)
        x, y = rng.integers(0, 20, 2)
        m[y:y + rng.integers(8, 25), x:x + rng.integers(8, 25)] = True
        masks[i] = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    det = Objects(image=image, cls=cls, boxes=None, polygons=None, crowd=np.zeros(n, bool), score=score, masks=masks)
    keep = np.zeros(n, bool)
    for i in np.lexsort((np.arange(n), -score)):
        same = np.flatnonzero(keep & (image == image[i]) & (cls == cls[i]))
        ious = np.asarray(mask_utils.iou([masks[j] for j in same], [masks[i]], [0])).reshape(-1) if same.size else []
        keep[i] = not (np.asarray(ious) > 0.3).any()
    assert 0 < keep.sum() < n
    assert nms_keep(det, n_classes=2, iou_threshold=0.3, geometry="segm").tolist() == keep.tolist()

    gt, dets = make_mask_case(4)
    report = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)), nms_iou="0.5")
    assert report.nms.geometry == "segm" and report.nms.detections_after < report.nms.detections_before


def test_mask_areas_of_many_masks():
    """pycocotools' area() overflows a uint8 count past 255 masks: the job asks in chunks."""
    from pycocotools import mask as mask_utils

    from jobs.evaluate.masks import mask_areas

    rng = np.random.default_rng(1)
    masks = [rng.random((12, 9)) < rng.random() for _ in range(600)]
    rles = np.empty(len(masks), dtype=object)
    rles[:] = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    assert mask_areas(rles).tolist() == [float(m.sum()) for m in masks]


def test_tables_with_height_and_width_evaluate_masks(tmp_path, monkeypatch):
    """CSV tables with a polygon column and `height` / `width` columns: segm, as the same case in COCO JSON."""
    import csv

    from tests.evaluate.helpers import make_polygon_case

    gt, dets = make_polygon_case(3, n_images=15)
    for im in gt["images"]:  # names in id order: tied scores then accumulate in the same order
        im["file_name"] = f"{im['id']:04d}.jpg"
    coco = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    assert coco.matching.geometry == "segm"
    images = {im["id"]: im for im in gt["images"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}

    def write(path, rows, score):
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["image", "category", *(["score"] if score else []), "bbox_x", "bbox_y", "bbox_w", "bbox_h",
                          "polygon", "height", "width"])
            for r in rows:
                im = images[r["image_id"]]
                out.writerow([im["file_name"], names[r["category_id"]], *([r["score"]] if score else []), *r["bbox"],
                              json.dumps(r["segmentation"]), im["height"], im["width"]])

    write(tmp_path / "gt.csv", gt["annotations"], False)
    write(tmp_path / "pred.csv", dets, True)
    table = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv")
    assert table.matching.geometry == "segm"
    by_name = {c.name: c.average_precision for c in coco.classes}
    assert {c.name: c.average_precision for c in table.classes} == pytest.approx(by_name, abs=1e-12)
    without = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv", columns={"height": "h", "width": "w"})
    assert without.matching.geometry == "polygon" and "no sizes" in without.matching.reason
    assert coco.coco.iou_type == "segm" and table.coco is None  # the coco block: COCO ground truth only


def test_ground_truth_without_area_uses_the_mask_area(tmp_path, monkeypatch):
    """pycocotools needs `area`; where a file has none the job takes the mask's, which COCO's own `area` is."""
    gt, dets = make_mask_case(5, det_boxes=False)
    ev = run_cocoeval(gt, dets, tmp_path, iou_type="segm", defaults=True)
    bare = {**gt, "annotations": [{k: v for k, v in a.items() if k != "area"} for a in gt["annotations"]]}
    (tmp_path / "b").mkdir()
    report = evaluate(monkeypatch, *reversed(write_case(tmp_path / "b", bare, dets)), holdout_fraction="0.3")
    assert report.holdout is not None
    assert_stats(report, ev)


def test_a_table_row_without_a_polygon_under_segm_names_the_row_from_1(job_env, tmp_path):
    header = "image,category,bbox_x,bbox_y,bbox_w,bbox_h,polygon,height,width\n"
    square = "[[0, 0, 10, 0, 10, 10, 0, 10]]"
    gt = tmp_path / "gt.csv"
    gt.write_text(header + f'a.jpg,car,0,0,10,10,"{square}",20,20\n' + "b.jpg,car,0,0,10,10,,20,20\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("image,category,score,bbox_x,bbox_y,bbox_w,bbox_h,polygon\n"
                    f'a.jpg,car,0.9,0,0,10,10,"{square}"\n')
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt), predictions_uri=str(pred), iou_type="segm")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "gt.csv", "row 2, column 'polygon'", "missing",
                         out=tmp_path / "out")


def test_coco_summary_can_be_left_out(monkeypatch):
    """EVAL_COCO_SUMMARY=false: no `coco` block, and the rest of the report unchanged."""
    on = evaluate(monkeypatch, FIXTURE / "predictions.json", FIXTURE / "annotations.json")
    off = evaluate(monkeypatch, FIXTURE / "predictions.json", FIXTURE / "annotations.json", coco_summary="false")
    assert on.coco is not None and off.coco is None
    assert [c.model_dump() for c in off.classes] == [c.model_dump() for c in on.classes]
    assert off.summary == on.summary
