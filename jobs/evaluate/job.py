"""The evaluation job's recipe: load -> align -> match -> sweep and choose -> report -> write."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
from jobs.evaluate.calibration import calibrate, calibration_document
from jobs.evaluate.classes import accumulation_order, add_ap_by_iou, evaluate_at_thresholds, evaluate_classes
from jobs.evaluate.drift import drift_block, read_baseline
from jobs.evaluate.coco import IOU_THRESHOLDS as COCO_IOU_THRESHOLDS
from jobs.evaluate.coco import coco_summary
from jobs.evaluate.formats import ReadOptions, detect_format, open_source
from jobs.evaluate.history import append_history, history_rows_of, history_with_run, read_history_frame
from jobs.evaluate.load import decompressed
from jobs.evaluate.match import Matches, candidate_pairs, descending_rank, lowest_threshold, match_at_thresholds
from jobs.evaluate.nms import nms_keep
from jobs.evaluate.page import render_index
from jobs.evaluate.plots import class_curves, render_plots
from jobs.evaluate.publish import REPORT_NAME, destination, latest_report_uri, update_pointer
from jobs.evaluate.report import Alignment, Artifacts, Holdout, Matching, Nms, Report, RunInfo, input_info
from jobs.evaluate.settings import EvalSettings
from jobs.evaluate.split import holdout_mask, take_images

INDEX_NAME = "index.html"
CALIBRATION_NAME = "calibration.json"
NORMALISED_NOTE = ("YOLO coordinates without image sizes (no images/ folder): IoU is the same as in pixels, "
                   "but pixel areas (COCO's small/medium/large ranges) are unknown")


def load_inputs(settings: EvalSettings, log):
    tables = {}
    for side, uri, fmt in (
        ("annotations", settings.annotations_uri, settings.annotations_format or settings.format),
        ("predictions", settings.predictions_uri, settings.predictions_format or settings.format),
    ):
        t0 = time.perf_counter()
        source = open_source(uri)  # one file (its sha256 runs on a thread once it is parsed), or a folder's names
        if source.blob is not None:
            source.blob = decompressed(source.blob, max_bytes=settings.max_decompressed_bytes)
        reader = detect_format(source, fmt)
        options = ReadOptions(predictions=side == "predictions", columns=settings.column,
                              class_names_uri=settings.class_names_uri)
        tables[side] = (reader.read(source, options), reader.name)
        log.info("loaded", input=side, uri=uri, format=reader.name, rows=tables[side][0].rows,
                 bytes=source.size, seconds=round(time.perf_counter() - t0, 3))
    return tables


def run(settings: EvalSettings, run_id: str, log: structlog.BoundLogger) -> int:
    """Evaluate, write index.html (and PNG plots), then the report (the commit), then the latest pointer."""
    started = time.perf_counter()
    dest = destination(settings.output_uri, settings.output_layout, run_id)
    # Before the work: a missing bucket or read-only credentials fail now, not after it.
    storage.confine_local_writes(settings.output_uri, setting="EVAL_OUTPUT_URI")
    storage.check_writable(dest.prefix, setting="EVAL_OUTPUT_URI")
    # Scheduled runs: an unreadable history.parquet fails now (65), before any write; the page shows
    # the rows read here (read once; the append re-reads, conditionally on the version it saw).
    earlier = None
    if dest.pointer_uri is not None:
        frame = read_history_frame(dest.root)
        earlier = history_rows_of(frame) if settings.report_page else None
    if dest.conditional and storage.exists(dest.report_uri):
        # This slot is done (a retry after a complete run): never evaluate or write it twice.
        doc = json.loads(storage.read(dest.report_uri).data)
        log.warning("run already has a report; not evaluating again", uri=dest.report_uri)
        write_calibration_maps(dest, doc, log)  # if the first attempt stopped before writing them
        update_pointer(dest, doc, log)
        append_to_history(dest, doc, log)  # if the first attempt stopped before its rows were in
        return drift_exit_code(doc, settings.fail_on_drift, log)

    report, evidence = evaluate(settings, run_id, log)
    page, staged = None, []
    try:
        if settings.report_page or settings.plots:
            page = stage_page_and_plots(settings, dest, report, evidence, staged, earlier, log)
        if report.calibration is not None and report.calibration.status == "ok":  # written right after the report
            report.artifacts = (report.artifacts or Artifacts(index=None, plots=[])).model_copy(
                update={"calibration": CALIBRATION_NAME})
        body = report.model_dump_json(indent=2).encode()
        try:
            storage.write(dest.report_uri, body, content_type="application/json", if_absent=dest.conditional)
        except AlreadyExists:
            log.warning("another run wrote this slot's report first; keeping theirs", uri=dest.report_uri)
            body, page = storage.read(dest.report_uri).data, None  # their page, not ours
    except BaseException:
        _remove_staged(staged, log)  # named by no report: a reader never sees them either way
        raise
    if page is not None:  # exposed only now that the report it shows is committed
        storage.write(storage.join(dest.prefix, INDEX_NAME), page, content_type="text/html; charset=utf-8")
    doc = json.loads(body)
    s = report.summary
    log.info("report written", uri=dest.report_uri, mean_average_precision=s.mean_average_precision,
             macro_f1=s.macro_f1, classes=len(report.classes), seconds=round(time.perf_counter() - started, 3),
             page=storage.join(dest.prefix, report.artifacts.index) if report.artifacts and report.artifacts.index else None)
    write_calibration_maps(dest, doc, log)
    update_pointer(dest, doc, log)
    append_to_history(dest, doc, log)
    if sys.stdout.isatty():
        print(format_table(report), flush=True)
    return drift_exit_code(doc, settings.fail_on_drift, log)


def stage_page_and_plots(settings: EvalSettings, dest, report: Report, evidence: "Evidence", staged: list[str],
                         earlier: list[dict] | None, log) -> bytes | None:
    """Write plots/*.png (EVAL_PLOTS) now, under this run's own folder (their URIs appended to `staged`
    when that folder is the run's alone), and return index.html (EVAL_REPORT_PAGE) for the caller to
    expose once the report is committed. Sets report.artifacts."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    curves = class_curves(evidence.aligned, evidence.matches, evidence.evaluation_mask, evidence.calibrated)
    files, per_class, pooled = render_plots(report, curves) if settings.plots else ({}, {}, None)
    files, per_class, pooled = _staged(dest.staging, files, per_class, pooled)
    report.artifacts = Artifacts(index=INDEX_NAME if settings.report_page else None, plots=sorted(files))
    for name, data in files.items():
        storage.write(storage.join(dest.prefix, name), data, content_type="image/png")
        if dest.staging:  # a folder of this run's alone: safe to remove again
            staged.append(storage.join(dest.prefix, name))
    page = None
    if settings.report_page:
        history = None  # the panel needs the runs layout: earlier runs' rows, then this run's
        if earlier is not None:
            history = history_with_run(dest.root, json.loads(report.model_dump_json()), rows=earlier)
        page = render_index(report, curves, history=history, plots=per_class, pooled=pooled,
                            report_name=REPORT_NAME).encode()
    log.info("page rendered, plots written", plots=len(files), page_bytes=len(page or b""),
             plot_bytes=sum(map(len, files.values())), seconds=round(time.perf_counter() - t0, 3),
             cpu_seconds=round(time.process_time() - cpu0, 3))
    return page


def write_calibration_maps(dest, doc: dict, log) -> None:
    """calibration.json beside the committed report `doc` (when it names one): the maps a serving
    system applies (calibration.apply_calibration). Written from the report after it, so the maps
    always come from the report in place; a slot's copy is written once."""
    name = (doc.get("artifacts") or {}).get("calibration")
    if name is None:
        return
    uri = storage.join(dest.prefix, name)
    try:
        storage.write(uri, json.dumps(calibration_document(doc), indent=2).encode(), content_type="application/json",
                      if_absent=dest.conditional)
    except AlreadyExists:
        return
    log.info("calibration maps written", uri=uri)


def append_to_history(dest, doc: dict, log) -> None:
    """Scheduled runs ('runs' layout) add their classes to EVAL_OUTPUT_URI/history.parquet, drifted or not."""
    if dest.pointer_uri is not None:
        append_history(dest.root, doc, dest.report_uri[len(dest.root.rstrip("/")) + 1:], log)


def _staged(folder: str, files: dict, per_class: dict, pooled: str | None):
    """The plots' names moved under this run's own `folder` (relative to the report's)."""
    if not folder:
        return files, per_class, pooled
    moved = lambda name: f"{folder}/{name}"  # noqa: E731
    return ({moved(n): data for n, data in files.items()},
            {c: {kind: moved(n) for kind, n in names.items()} for c, names in per_class.items()},
            None if pooled is None else moved(pooled))


def _remove_staged(uris: list[str], log) -> None:
    for uri in uris:
        try:
            storage.delete(uri)
        except Exception as exc:  # the run's own error matters more; a leftover is named by nothing
            log.warning("staged file not removed", uri=uri, error=str(exc))
            return


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
    with_coco = settings.coco_summary and gt.images is not None and aligned.geometry in ("bbox", "segm")
    thresholds = [settings.iou_threshold, *settings.iou_thresholds]
    n_classes = len(aligned.classes)
    # COCO's summary runs on a second thread, beside the matching and then the operating points:
    # all of them mostly numpy, which releases the GIL, and each alone leaves the second CPU idle
    # at times. It and the sweep share the accumulation order (by score, from the shared ranks),
    # sorted on that thread first, while this one pairs detections with ground truths.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coco") as side:
        order_work = None
        if with_coco:
            descending_rank(aligned.det.score)  # here first: then both threads read the one result
            order_work = side.submit(accumulation_order, aligned.det, n_classes, aligned.n_images)
        pairs = candidate_pairs(aligned.det, aligned.gt, n_classes=n_classes, geometry=aligned.geometry,
                                min_iou=lowest_threshold([*thresholds, *(COCO_IOU_THRESHOLDS if with_coco else [])]))
        matches, *matches_by_iou = match_at_thresholds(
            aligned.det, aligned.gt, n_classes=n_classes, iou_thresholds=thresholds, geometry=aligned.geometry,
            pairs=pairs)
        log.info("matched", detections=int(aligned.det.image.size), true_positives=int(matches.tp.sum()),
                 ignored=int(matches.ignored.sum()), seconds=round(time.perf_counter() - t0, 3))
        coco = None
        if with_coco:
            order_work.result()  # kept: the sweep and the summary take it from here
            t_coco = time.perf_counter()
            coco_work = side.submit(coco_summary, aligned, pairs, iou_type=aligned.geometry)
        measured = measure(settings, aligned, matches, matches_by_iou, log)
        if with_coco:
            coco = coco_work.result()
            log.info("coco summary", iou_type=coco.iou_type, **coco.stats.model_dump(),
                     seconds=round(time.perf_counter() - t_coco, 3))
    classes, summary, evaluation_mask, holdout, calibration, calibrated, intervals = measured
    report = Report(
        run=RunInfo(id=run_id, started_at=started, finished_at=utc_now(), code_version=code_version(),
                    library_versions=library_versions("numpy", "pyarrow", "msgspec", "shapely", "pycocotools", "pydantic",
                                                      "boto3", *(["scikit-learn"] if settings.calibration in ("platt", "isotonic") else []))),
        inputs={"predictions": input_info(pred, pred_fmt), "annotations": input_info(gt, gt_fmt)},
        config=public_config(settings),
        alignment=Alignment(**aligned.alignment),
        matching=Matching(geometry=aligned.geometry, reason=aligned.geometry_reason, iou_threshold=settings.iou_threshold,
                          policy=str(settings.policy), iou_thresholds=settings.iou_thresholds or None,
                          coordinates="normalised" if aligned.normalised else "pixels",
                          coordinates_note=NORMALISED_NOTE if aligned.normalised else None),
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


def measure(settings: EvalSettings, aligned: Aligned, matches: Matches, matches_by_iou: list[Matches], log):
    """Per class: the sweep and operating point (on held-out images with a holdout), AP at the extra
    IoU thresholds, calibration and bootstrap intervals, as configured."""
    evaluation_mask = holdout = None
    if settings.holdout_fraction > 0:
        evaluation_mask = holdout_mask(aligned.n_images, fraction=settings.holdout_fraction, seed=settings.seed)
        classes, summary, holdout = evaluate_with_holdout(aligned, matches, evaluation_mask, settings)
    else:
        classes, summary = evaluate_classes(aligned, matches, policy=settings.policy, min_support=settings.min_support)
    if settings.iou_thresholds:
        classes, summary = ap_by_iou(aligned, matches_by_iou, settings.iou_thresholds, evaluation_mask, classes, summary)
    calibration = calibrated = None
    if settings.calibration != "none":
        t0 = time.perf_counter()
        calibration, calibrated = calibrate(
            aligned, matches, classes, summary, method=settings.calibration, scope=settings.calibration_scope,
            min_detections=settings.calibration_min_detections, folds=settings.calibration_folds, seed=settings.seed)
        log.info("calibrated", method=calibration.method, scope=calibration.scope, temperature=calibration.temperature,
                 ece_before=calibration.ece_before, ece_after=calibration.ece_after,
                 fallback_classes=sum(m.fallback for m in calibration.per_class),
                 seconds=round(time.perf_counter() - t0, 3))
    intervals = None
    if settings.bootstrap:
        intervals = bootstrap_intervals(aligned, matches, replicates=settings.bootstrap, seed=settings.seed,
                                        policy=settings.policy, min_support=settings.min_support,
                                        evaluation_mask=evaluation_mask, log=log)
    return classes, summary, evaluation_mask, holdout, calibration, calibrated, intervals


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
