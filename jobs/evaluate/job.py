"""The evaluation job's recipe: load -> align -> match -> sweep and choose -> report -> write."""

from __future__ import annotations

import sys
import time

import structlog

from common import storage
from common.exitcodes import ExitCode
from common.provenance import code_version, library_versions, utc_now
from common.settings import public_config
from jobs.evaluate.align import align
from jobs.evaluate.classes import evaluate_classes
from jobs.evaluate.load import detect_format, read_input
from jobs.evaluate.match import match_detections
from jobs.evaluate.report import Alignment, Matching, Report, RunInfo, input_info
from jobs.evaluate.settings import EvalSettings

REPORT_NAME = "thresholds.json"


def load_inputs(settings: EvalSettings, log):
    tables = {}
    for side, uri, fmt in (
        ("annotations", settings.annotations_uri, settings.annotations_format or settings.format),
        ("predictions", settings.predictions_uri, settings.predictions_format or settings.format),
    ):
        t0 = time.perf_counter()
        blob = storage.read(uri)
        fmt = detect_format(blob, fmt)
        tables[side] = (read_input(blob, fmt, settings.column, predictions=side == "predictions"), fmt)
        log.info("loaded", input=side, uri=uri, format=fmt, rows=tables[side][0].rows,
                 bytes=len(blob.data), seconds=round(time.perf_counter() - t0, 3))
    return tables


def run(settings: EvalSettings, run_id: str, log: structlog.BoundLogger) -> int:
    report = build_report(settings, run_id, log)
    uri = storage.join(settings.output_uri, REPORT_NAME)
    storage.write(uri, report.model_dump_json(indent=2).encode(), content_type="application/json")
    s = report.summary
    log.info("report written", uri=uri, mean_average_precision=s.mean_average_precision,
             macro_f1=s.macro_f1, classes=len(report.classes))
    if sys.stdout.isatty():
        print(format_table(report), flush=True)
    return ExitCode.OK


def build_report(settings: EvalSettings, run_id: str, log: structlog.BoundLogger) -> Report:
    started = utc_now()
    log.info("started", predictions=settings.predictions_uri, annotations=settings.annotations_uri, output=settings.output_uri)
    tables = load_inputs(settings, log)
    (gt, gt_fmt), (pred, pred_fmt) = tables["annotations"], tables["predictions"]

    aligned = align(gt, pred, join_key=settings.join_key, iou_type=settings.iou_type)
    log.info("aligned", geometry=aligned.geometry, classes=len(aligned.classes), **_flat(aligned.alignment))

    t0 = time.perf_counter()
    matches = match_detections(aligned.det, aligned.gt, n_classes=len(aligned.classes),
                               iou_threshold=settings.iou_threshold, geometry=aligned.geometry)
    log.info("matched", detections=int(aligned.det.image.size), true_positives=int(matches.tp.sum()),
             ignored=int(matches.ignored.sum()), seconds=round(time.perf_counter() - t0, 3))

    classes, summary = evaluate_classes(aligned, matches, policy=settings.policy, min_support=settings.min_support)
    return Report(
        run=RunInfo(id=run_id, started_at=started, finished_at=utc_now(), code_version=code_version(),
                    library_versions=library_versions("numpy", "pyarrow", "msgspec", "shapely", "pydantic", "boto3")),
        inputs={"predictions": input_info(pred, pred_fmt), "annotations": input_info(gt, gt_fmt)},
        config=public_config(settings),
        alignment=Alignment(**aligned.alignment),
        matching=Matching(geometry=aligned.geometry, iou_threshold=settings.iou_threshold, policy=settings.policy),
        classes=classes,
        summary=summary,
    )


def _flat(alignment: dict) -> dict:
    unmatched = alignment["unmatched_prediction_images"]
    return {**{k: v for k, v in alignment.items() if k != "unmatched_prediction_images"},
            "unmatched_prediction_images": unmatched["images"], "unmatched_prediction_rows": unmatched["rows"]}


def format_table(report: Report) -> str:
    def f(value, spec=".3f"):
        return "-" if value is None else format(value, spec)

    rows = [("class", "status", "gt", "pred", "AP", "thresh", "P", "R", "F1")]
    for c in report.classes:
        rows.append((c.name, c.status, str(c.n_ground_truth), str(c.n_predictions), f(c.average_precision),
                     f(c.threshold, ".4f"), f(c.precision), f(c.recall), f(c.f1)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    s = report.summary
    lines.append(f"mAP {f(s.mean_average_precision)}  macro-F1 {f(s.macro_f1)}  ({report.matching.geometry}, "
                 f"IoU {report.matching.iou_threshold}, policy {report.matching.policy})")
    return "\n".join(lines)
