"""Agreement with pycocotools, an independent implementation, on generated data.

AP per class must equal pycocotools' within 1e-6. The thresholds, precision, recall and F1 must
equal a sweep computed here, in plain Python, from pycocotools' own per-detection matches.

pycocotools stores the matched annotation's id as the match flag, so a detection matched to
annotation id 0 counts as a false positive there. The job treats id 0 like any id; the oracle
gets the same annotations renumbered from 1, and a test below shows ids do not matter to the job.
"""


import numpy as np
import pytest

from tests.evaluate.helpers import evaluate, make_coco_case, make_polygon_case, run_cocoeval, write_case


def pycocotools_oracle(gt, dets, iou, tmp_path, iou_type="bbox"):
    """Per category id: AP at one IoU (no per-image cap) and the F1-optimal point from its matches."""
    ev = run_cocoeval(gt, dets, tmp_path, iou_thresholds=[iou], iou_type=iou_type)
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        prec = ev.eval["precision"][0, :, k, 0, 0]
        ap = None if (prec == -1).all() else float(np.mean(prec))
        scored = []  # (score, is_tp) of non-ignored detections, from pycocotools' matching
        n_gt = 0
        for e in ev.evalImgs:
            if e is None or e["category_id"] != cat:
                continue
            n_gt += int(np.sum(np.logical_not(e["gtIgnore"])))
            for s, m, ig in zip(e["dtScores"], e["dtMatches"][0], e["dtIgnore"][0]):
                if not ig:
                    scored.append((s, m > 0))
        best = None
        if n_gt and scored:
            for t in sorted({s for s, _ in scored}, reverse=True):
                tp = sum(1 for s, hit in scored if s >= t and hit)
                fp = sum(1 for s, hit in scored if s >= t and not hit)
                f1 = 2 * tp / (2 * tp + fp + (n_gt - tp))
                if best is None or f1 > best[1]:
                    best = (t, f1, tp / (tp + fp), tp / n_gt)
        out[cat] = {"ap": ap, "best": best, "n_gt": n_gt}
    return out


def assert_like_oracle(report, oracle: dict) -> None:
    """Per class: n_gt and AP (1e-6) as pycocotools, the best-F1 threshold exactly, P/R/F1 to 1e-9."""
    by_id = {c.class_id: c for c in report.classes}
    assert set(by_id) == set(oracle)
    for cat, want in oracle.items():
        got = by_id[cat]
        assert got.n_ground_truth == want["n_gt"]
        if want["ap"] is None:
            assert got.status == "no_ground_truth" and got.average_precision is None and got.threshold is None
            continue
        assert got.average_precision == pytest.approx(want["ap"], abs=1e-6)
        if want["best"] is None:
            assert got.threshold is None
            continue
        threshold, f1, precision, recall = want["best"]
        assert got.threshold == threshold
        assert got.f1 == pytest.approx(f1, abs=1e-9)
        assert got.precision == pytest.approx(precision, abs=1e-9)
        assert got.recall == pytest.approx(recall, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_matches_pycocotools(seed, iou, tmp_path, monkeypatch):
    gt, dets = make_coco_case(seed, round_scores=2 if seed % 2 else None)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    report = evaluate(monkeypatch, det_path, gt_path, iou_threshold=str(iou))
    oracle = pycocotools_oracle(gt, dets, iou, tmp_path)
    assert_like_oracle(report, oracle)


def test_annotation_ids_do_not_matter_id_zero_included(tmp_path, monkeypatch):
    gt, dets = make_coco_case(3)
    assert any(a["iscrowd"] for a in gt["annotations"]) and gt["annotations"][0]["id"] == 0
    first = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    shuffled = {**gt, "annotations": [{**a, "id": 1000 - 7 * n} for n, a in enumerate(gt["annotations"])]}
    (tmp_path / "b").mkdir()
    second = evaluate(monkeypatch, *reversed(write_case(tmp_path / "b", shuffled, dets)))
    assert [c.model_dump() for c in first.classes] == [c.model_dump() for c in second.classes]


def test_public_coco_sample_ap50(monkeypatch):
    """The COCO-100 fixture's published AP50 (pycocotools, maxDets 100: no image has more)."""
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent / "fixtures" / "coco-sample-100"
    report = evaluate(monkeypatch, here / "predictions.json", here / "annotations.json")
    assert report.summary.mean_average_precision == pytest.approx(0.696973, abs=1e-6)
    assert report.matching.geometry == "bbox"


@pytest.mark.parametrize("seed", range(3))
def test_polygon_ap_agrees_with_pycocotools_segm(seed, tmp_path, monkeypatch):
    """Exact polygon IoU against pycocotools' rasterised masks: AP per class differs by what the
    rasterisation changes near the threshold only, and each pair's IoU by rasterisation error."""
    from pycocotools import mask as mask_utils

    from jobs.evaluate.geometry import Polygons, polygon_iou_pairs

    gt, dets = make_polygon_case(seed)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    report = evaluate(monkeypatch, det_path, gt_path, iou_type="polygon")
    assert report.matching.geometry == "polygon"
    ev = run_cocoeval(gt, dets, tmp_path, iou_thresholds=[0.5], iou_type="segm")
    theirs = {cat: float(np.mean(ev.eval["precision"][0, :, k, 0, 0])) for k, cat in enumerate(ev.params.catIds)}
    diffs = np.array([c.average_precision - theirs[c.class_id] for c in report.classes])
    assert np.abs(diffs).max() < 0.02, diffs  # 0 on these seeds

    # Pair by pair: the same image and class, exact IoU vs the masks' IoU.
    pairs = [(d, a) for d in dets for a in gt["annotations"]
             if (d["image_id"], d["category_id"]) == (a["image_id"], a["category_id"])]
    exact = polygon_iou_pairs(Polygons.from_rows([d["segmentation"] for d, _ in pairs]),
                              Polygons.from_rows([a["segmentation"] for _, a in pairs]),
                              np.arange(len(pairs)), np.arange(len(pairs)), np.zeros(len(pairs), bool))
    rle = lambda seg: mask_utils.merge(mask_utils.frPyObjects(seg, 400, 400))  # noqa: E731
    masks = np.array([mask_utils.iou([rle(d["segmentation"])], [rle(a["segmentation"])], [0])[0, 0] for d, a in pairs])
    assert (exact > 0.5).sum() > 50
    assert np.abs(exact - masks).max() < 0.03 and np.abs(exact - masks).mean() < 0.003  # measured: 0.016, 0.0013
