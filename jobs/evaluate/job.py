"""The evaluation job's recipe: load -> align -> match -> sweep and choose -> report -> write."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

import structlog

from common import storage
from common.exitcodes import ExitCode
from common.provenance import code_version, library_versions, utc_now
from common.settings import public_config
from common.storage import AlreadyExists
from jobs.evaluate.align import Aligned, align
from jobs.evaluate.bootstrap import bootstrap_intervals
from jobs.evaluate.calibration import calibrate
from jobs.evaluate.classes import add_ap_by_iou, evaluate_at_thresholds, evaluate_classes
from jobs.evaluate.drift import drift_block, read_baseline
from jobs.evaluate.load import detect_format, read_input
from jobs.evaluate.coco import IOU_THRESHOLDS as COCO_IOU_THRESHOLDS
from jobs.evaluate.coco import coco_summary
from jobs.evaluate.match import Matches, candidate_pairs, lowest_threshold, match_at_thresholds
from jobs.evaluate.nms import nms_keep
from jobs.evaluate.page import render_index
from jobs.evaluate.plots import class_curves, render_plots
from jobs.evaluate.publish import REPORT_NAME, destination, latest_report_uri, update_pointer
from jobs.evaluate.report import Alignment, Artifacts, Holdout, Matching, Nms, Report, RunInfo, input_info
from jobs.evaluate.settings import EvalSettings
from jobs.evaluate.split import holdout_mask, take_images

INDEX_NAME = "index.html"


def load_inputs(settings: EvalSettings, log):
    tables = {}
    for side, uri, fmt in (
        ("annotations", settings.annotations_uri, settings.annotations_format or settings.format),
        ("predictions", settings.predictions_uri, settings.predictions_format or settings.format),
    ):
        t0 = time.perf_counter()
        blob = storage.read(uri, mapped=True).hash_in_background()  # the digest overlaps the parsing
        fmt = detect_format(blob, fmt)
        tables[side] = (read_input(blob, fmt, settings.column, predictions=side == "predictions"), fmt)
        log.info("loaded", input=side, uri=uri, format=fmt, rows=tables[side][0].rows,
                 bytes=len(blob.data), seconds=round(time.perf_counter() - t0, 3))
    return tables


def run(settings: EvalSettings, run_id: str, log: structlog.BoundLogger) -> int:
    """Evaluate, write plots and index.html, then the report (the commit), then the latest pointer."""
    started = time.perf_counter()
    dest = destination(settings.output_uri, settings.output_layout, run_id)
    # Before the work: a missing bucket or read-only credentials fail now, not after it.
    storage.confine_local_writes(settings.output_uri, setting="EVAL_OUTPUT_URI")
    storage.check_writable(dest.prefix, setting="EVAL_OUTPUT_URI")
    if dest.conditional and storage.exists(dest.report_uri):
        # This slot is done (a retry after a complete run): never evaluate or write it twice.
        doc = json.loads(storage.read(dest.report_uri).data)
        log.warning("run already has a report; not evaluating again", uri=dest.report_uri)
        update_pointer(dest, doc, log)
        return drift_exit_code(doc, settings.fail_on_drift, log)

    report, evidence = evaluate(settings, run_id, log)
    if settings.plots:
        t0 = time.perf_counter()
        files, per_class, pooled = render_plots(report, class_curves(
            evidence.aligned, evidence.matches, evidence.evaluation_mask, evidence.calibrated))
        files[INDEX_NAME] = render_index(report, per_class, pooled, REPORT_NAME).encode()
        report.artifacts = Artifacts(index=INDEX_NAME, plots=sorted(n for n in files if n != INDEX_NAME))
        for name, data in files.items():
            storage.write(storage.join(dest.prefix, name), data,
                          content_type="text/html; charset=utf-8" if name == INDEX_NAME else "image/png")
        log.info("plots written", prefix=dest.prefix, files=len(files), seconds=round(time.perf_counter() - t0, 3))

    body = report.model_dump_json(indent=2).encode()
    try:
        storage.write(dest.report_uri, body, content_type="application/json", if_absent=dest.conditional)
    except AlreadyExists:
        log.warning("another run wrote this slot's report first; keeping theirs", uri=dest.report_uri)
        body = storage.read(dest.report_uri).data
    doc = json.loads(body)
    s = report.summary
    log.info("report written", uri=dest.report_uri, mean_average_precision=s.mean_average_precision,
             macro_f1=s.macro_f1, classes=len(report.classes), seconds=round(time.perf_counter() - started, 3))
    update_pointer(dest, doc, log)
    if sys.stdout.isatty():
        print(format_table(report), flush=True)
    return drift_exit_code(doc, settings.fail_on_drift, log)


def drift_exit_code(doc: dict, fail_on_drift: bool, log) -> int:
    """DRIFT_DETECTED when the written report lists changed classes (and EVAL_FAIL_ON_DRIFT), else OK."""
    changed = (doc.get("drift") or {}).get("changed") or []
    if not changed:
        return ExitCode.OK
    log.warning("drift detected", classes=[c.get("class") for c in changed], exit_code=int(ExitCode.DRIFT_DETECTED)
                if fail_on_drift else 0)
    return ExitCode.DRIFT_DETECTED if fail_on_drift else ExitCode.OK


def build_report(settings: EvalSettings, run_id: str, log: structlog.BoundLogger) -> Report:
    return evaluate(settings, run_id, log)[0]


@dataclass
class Evidence:
    """The arrays behind a report, for its plots: matches, the holdout split, calibrated scores."""

    aligned: Aligned
    matches: Matches
    evaluation_mask: np.ndarray | None  # held-out images, or None without a holdout
    calibrated: np.ndarray | None  # per detection, cross-fitted; NaN where ignored


def evaluate(settings: EvalSettings, run_id: str, log: structlog.BoundLogger) -> tuple[Report, Evidence]:
    started = utc_now()
    baseline = load_baseline(settings, log)  # first: a wrong baseline URI fails before the work
    log.info("started", predictions=settings.predictions_uri, annotations=settings.annotations_uri, output=settings.output_uri)
    tables = load_inputs(settings, log)
    (gt, gt_fmt), (pred, pred_fmt) = tables["annotations"], tables["predictions"]

    aligned = align(gt, pred, join_key=settings.join_key, iou_type=settings.iou_type)
    log.info("aligned", geometry=aligned.geometry, reason=aligned.geometry_reason, classes=len(aligned.classes),
             **_flat(aligned.alignment))
    nms_info = None
    if settings.nms_iou is not None:
        aligned, nms_info = apply_nms(aligned, settings.nms_iou, log)

    t0 = time.perf_counter()
    # The extra EVAL_IOU_THRESHOLDS (AP only) and COCO's summary match on the same pairs: the IoUs are computed once.
    with_coco = gt.is_coco and aligned.geometry in ("bbox", "segm")
    thresholds = [settings.iou_threshold, *settings.iou_thresholds]
    pairs = candidate_pairs(aligned.det, aligned.gt, n_classes=len(aligned.classes), geometry=aligned.geometry,
                            min_iou=lowest_threshold([*thresholds, *(COCO_IOU_THRESHOLDS if with_coco else [])]))
    matches, *matches_by_iou = match_at_thresholds(
        aligned.det, aligned.gt, n_classes=len(aligned.classes), iou_thresholds=thresholds, geometry=aligned.geometry,
        pairs=pairs)
    log.info("matched", detections=int(aligned.det.image.size), true_positives=int(matches.tp.sum()),
             ignored=int(matches.ignored.sum()), seconds=round(time.perf_counter() - t0, 3))
    coco = None
    if with_coco:
        t0 = time.perf_counter()
        coco = coco_summary(aligned, pairs, iou_type=aligned.geometry)
        log.info("coco summary", iou_type=coco.iou_type, **coco.stats.model_dump(), seconds=round(time.perf_counter() - t0, 3))

    evaluation_mask = holdout = None
    if settings.holdout_fraction > 0:
        evaluation_mask = holdout_mask(aligned.n_images, fraction=settings.holdout_fraction, seed=settings.seed)
        classes, summary, holdout = evaluate_with_holdout(aligned, matches, evaluation_mask, settings)
    else:
        classes, summary = evaluate_classes(aligned, matches, policy=settings.policy, min_support=settings.min_support)
    if settings.iou_thresholds:
        classes, summary = ap_by_iou(aligned, matches_by_iou, settings.iou_thresholds, evaluation_mask, classes, summary)
    calibration = calibrated = None
    if settings.calibration == "temperature":
        calibration, calibrated = calibrate(aligned, matches, classes, summary,
                                            folds=settings.calibration_folds, seed=settings.seed)
        log.info("calibrated", temperature=calibration.temperature, ece_before=calibration.ece_before,
                 ece_after=calibration.ece_after)
    intervals = None
    if settings.bootstrap:
        intervals = bootstrap_intervals(aligned, matches, replicates=settings.bootstrap, seed=settings.seed,
                                        policy=settings.policy, min_support=settings.min_support,
                                        evaluation_mask=evaluation_mask, log=log)
    report = Report(
        run=RunInfo(id=run_id, started_at=started, finished_at=utc_now(), code_version=code_version(),
                    library_versions=library_versions("numpy", "pyarrow", "msgspec", "shapely", "pycocotools", "pydantic",
                                                      "boto3")),
        inputs={"predictions": input_info(pred, pred_fmt), "annotations": input_info(gt, gt_fmt)},
        config=public_config(settings),
        alignment=Alignment(**aligned.alignment),
        matching=Matching(geometry=aligned.geometry, reason=aligned.geometry_reason, iou_threshold=settings.iou_threshold,
                          policy=settings.policy, iou_thresholds=settings.iou_thresholds or None),
        classes=classes,
        summary=summary,
        coco=coco,
        nms=nms_info,
        holdout=holdout,
        calibration=calibration,
        bootstrap=intervals,
    )
    if settings.baseline_uri is not None:
        defaults = {k: f.get_default(call_default_factory=True) for k, f in EvalSettings.model_fields.items()}
        report.drift = drift_block(report, settings.baseline_uri, baseline, threshold_tolerance=settings.drift_tolerance,
                                   f1_tolerance=settings.drift_f1_tolerance, defaults=defaults)
        log.info("drift compared", baseline=report.drift.baseline, changed=len(report.drift.changed))
    return report, Evidence(aligned, matches, evaluation_mask, calibrated)


def load_baseline(settings: EvalSettings, log):
    """The baseline report to compare with, or None ('latest' before any run). A named URI must exist."""
    uri = settings.baseline_uri
    if uri is None:
        return None
    if uri == "latest":
        uri = latest_report_uri(settings.output_uri, settings.output_layout)
        if uri is None:
            log.info("no baseline yet", requested="latest", output=settings.output_uri)
            return None
    baseline = read_baseline(uri)
    log.info("baseline loaded", uri=baseline[0], run_id=(baseline[2].get("run") or {}).get("id"))
    return baseline


def apply_nms(aligned: Aligned, iou_threshold: float, log) -> tuple[Aligned, Nms]:
    t0 = time.perf_counter()
    keep = nms_keep(aligned.det, n_classes=len(aligned.classes), iou_threshold=iou_threshold, geometry=aligned.geometry)
    info = Nms(iou_threshold=iou_threshold, geometry=aligned.geometry,
               detections_before=int(keep.size), detections_after=int(keep.sum()))
    log.info("nms", before=info.detections_before, after=info.detections_after, seconds=round(time.perf_counter() - t0, 3))
    return replace(aligned, det=aligned.det.take(keep)), info


def ap_by_iou(aligned: Aligned, matches_by_iou: list[Matches], iou_thresholds: list[float],
              evaluation_mask: np.ndarray | None, classes, summary):
    """AP at each extra IoU threshold, on the images the classes were measured on."""
    if evaluation_mask is not None:
        images = np.flatnonzero(evaluation_mask)
        taken = [take_images(aligned, m, images) for m in matches_by_iou]
        aligned, matches_by_iou = taken[0][0], [m for _, m in taken]
    return add_ap_by_iou(aligned, matches_by_iou, iou_thresholds, classes, summary)


def evaluate_with_holdout(aligned: Aligned, matches: Matches, evaluation_mask: np.ndarray, settings: EvalSettings):
    """Thresholds chosen on the selection images; classes and summary measured on the held-out ones."""
    sel_aligned, sel_matches = take_images(aligned, matches, np.flatnonzero(~evaluation_mask))
    chosen, sel_summary = evaluate_classes(sel_aligned, sel_matches, policy=settings.policy, min_support=settings.min_support)
    ev_aligned, ev_matches = take_images(aligned, matches, np.flatnonzero(evaluation_mask))
    classes, summary = evaluate_at_thresholds(ev_aligned, ev_matches, chosen, global_threshold=sel_summary.global_threshold)
    holdout = Holdout(fraction=settings.holdout_fraction, seed=settings.seed,
                      selection_images=int((~evaluation_mask).sum()), evaluation_images=int(evaluation_mask.sum()),
                      selection_classes=chosen, selection_summary=sel_summary)
    return classes, summary, holdout


def _flat(alignment: dict) -> dict:
    unmatched = alignment["unmatched_prediction_images"]
    return {**{k: v for k, v in alignment.items() if k != "unmatched_prediction_images"},
            "unmatched_prediction_images": unmatched["images"], "unmatched_prediction_rows": unmatched["rows"]}


def format_table(report: Report) -> str:
    def f(value, spec=".3f"):
        return "-" if value is None else format(value, spec)

    by_iou = bool(report.matching.iou_thresholds)  # EVAL_IOU_THRESHOLDS: AP over them beside AP
    rows = [("class", "status", "gt", "pred", "AP", *(["AP@IoUs"] if by_iou else []), "thresh", "P", "R", "F1")]
    for c in report.classes:
        rows.append((c.name, c.status, str(c.n_ground_truth), str(c.n_predictions), f(c.average_precision),
                     *([f(c.average_precision_iou_mean)] if by_iou else []),
                     f(c.threshold, ".4f"), f(c.precision), f(c.recall), f(c.f1)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    s = report.summary
    over_ious = f"  mAP@IoUs {f(s.mean_average_precision_iou_mean)}" if by_iou else ""
    lines.append(f"mAP {f(s.mean_average_precision)}{over_ious}  macro-F1 {f(s.macro_f1)}  ({report.matching.geometry}, "
                 f"IoU {report.matching.iou_threshold}, policy {report.matching.policy})")
    if report.coco is not None:
        stats = report.coco.stats.model_dump()
        lines.append(f"COCO {report.coco.iou_type}: " + "  ".join(f"{k} {f(v)}" for k, v in stats.items()))
    return "\n".join(lines)
