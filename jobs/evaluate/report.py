"""The `thresholds.json` schema (versioned). The README documents it from these models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"

Status = Literal["ok", "no_ground_truth", "no_predictions", "low_support", "policy_unreachable"]


class ClassResult(BaseModel):
    class_id: int | str | None = Field(description="COCO category id, or the table's id; null for a name-only class")
    name: str
    status: Status
    n_ground_truth: int = Field(description="non-crowd ground-truth objects (labels, image-level)")
    n_predictions: int = Field(description="prediction rows on joined images")
    average_precision: float | None = Field(description="COCO 101-point AP at the IoU threshold; null without ground truth")
    threshold: float | None = Field(description="keep detections with score >= threshold; null when none is defined")
    precision: float | None
    recall: float | None
    f1: float | None
    tp: int
    fp: int
    fn: int
    average_precision_by_iou: dict[str, float] | None = Field(
        None, description="AP at each EVAL_IOU_THRESHOLDS value (key: the IoU); absent unless set, null without ground truth")
    average_precision_iou_mean: float | None = Field(
        None, description="mean of average_precision_by_iou: COCO AP@[.5:.95] with EVAL_IOU_THRESHOLDS=0.5:0.95:0.05")


class Summary(BaseModel):
    mean_average_precision: float | None = Field(description="mean AP over classes with ground truth")
    macro_f1: float | None = Field(description="mean F1 at the chosen thresholds over classes with ground truth and a defined F1")
    global_threshold: float | None = Field(description="the policy's threshold on all classes pooled; the low_support fallback")
    thresholds: dict[str, float] = Field(description="class name -> threshold, for every class that has one")
    mean_average_precision_by_iou: dict[str, float] | None = Field(
        None, description="mean over classes with ground truth of AP at each EVAL_IOU_THRESHOLDS value; absent unless set")
    mean_average_precision_iou_mean: float | None = Field(
        None, description="mean of mean_average_precision_by_iou: COCO mAP@[.5:.95] with the COCO thresholds")


class InputInfo(BaseModel):
    uri: str
    etag: str | None = None
    sha256: str | None = None
    format: str
    rows: int


class RunInfo(BaseModel):
    id: str
    started_at: str
    finished_at: str
    code_version: str
    library_versions: dict[str, str]


class UnmatchedImages(BaseModel):
    images: int
    rows: int
    examples: list[str]


class Alignment(BaseModel):
    join: str = Field(description="coco_image_id, basename or exact")
    annotation_images: int
    prediction_images: int
    matched_images: int
    unmatched_prediction_images: UnmatchedImages = Field(description="prediction images not in the annotations: excluded")
    annotated_images_without_predictions: int = Field(description="their ground truth counts as missed")
    collapsed_prediction_rows: int = Field(
        0, description="image-level only: rows after the first for the same (image, class), folded into its maximum score")


Geometry = Literal["bbox", "polygon", "segm", "image"]


class Matching(BaseModel):
    geometry: Geometry = Field(description="'segm': COCO masks; 'polygon': exact polygon IoU; 'image': image-level multi-label matching")
    reason: str = Field("", description="why this geometry (EVAL_IOU_TYPE, or what 'auto' found in the inputs)")
    iou_threshold: float
    policy: str
    iou_thresholds: list[float] | None = Field(None, description="EVAL_IOU_THRESHOLDS: the extra IoUs AP is reported at")
    coordinates: Literal["pixels", "normalised"] = Field(
        "pixels", description="'normalised': fractions of the image size (YOLO without image sizes); IoU is unchanged")
    coordinates_note: str | None = Field(None, description="why pixel areas are unknown, where they are")


class Nms(BaseModel):
    iou_threshold: float = Field(description="a detection is dropped when IoU > this with a kept, higher-scored one")
    scope: str = Field("per image and class", description="NMS never suppresses across images or classes")
    geometry: Geometry = Field(description="'image': rows have no geometry, so the best row per (image, class) is kept")
    detections_before: int
    detections_after: int


class Holdout(BaseModel):
    fraction: float = Field(description="share of images held out; `classes` report P/R/F1/AP on them")
    seed: int
    unit: Literal["image"] = "image"
    selection_images: int = Field(description="images that chose the thresholds")
    evaluation_images: int = Field(description="held-out images that `classes` and `summary` are measured on")
    selection_classes: list[ClassResult] = Field(description="in-sample results on the selection images (optimistic)")
    selection_summary: Summary


class ReliabilityBin(BaseModel):
    lower: float
    upper: float
    count: int
    confidence: float | None = Field(description="mean score in the bin; null when empty")
    accuracy: float | None = Field(description="share of true positives in the bin; null when empty")


class ClassCalibration(BaseModel):
    name: str
    n_detections: int
    threshold: float | None = Field(description="the class threshold on the raw score scale")
    calibrated_threshold: float | None = Field(description="the same threshold on the calibrated scale")
    ece_before: float | None
    ece_after: float | None = Field(description="on cross-fitted (out-of-fold) calibrated scores")


CalibrationMethod = Literal["temperature", "platt", "isotonic"]


class CalibrationMap(BaseModel):
    """One fitted map from a raw score s to a probability; only its method's parameters are set."""

    method: CalibrationMethod
    temperature: float | None = Field(None, description="temperature: sigmoid(logit(s) / temperature)")
    a: float | None = Field(None, description="platt: sigmoid(a * logit(s) + b)")
    b: float | None = Field(None, description="platt: the intercept")
    score_breakpoints: list[float] | None = Field(
        None, description="isotonic: numpy.interp(s, score_breakpoints, calibrated_breakpoints), constant beyond the ends")
    calibrated_breakpoints: list[float] | None = Field(None, description="isotonic: the map's values at score_breakpoints")


class ClassCalibrationMap(CalibrationMap):
    class_id: int | str | None
    name: str
    fit: Literal["class", "global"] = Field(description="'class': fitted on this class's detections; 'global': the global map")
    fallback: bool = Field(description="EVAL_CALIBRATION_SCOPE=per_class, but the class uses the global map (see fallback_reason)")
    fallback_reason: Literal["low_support", "one_label"] | None = Field(
        description="'low_support': fewer than min_detections detections; 'one_label': only TPs or only FPs")
    n: int = Field(description="non-ignored detections of the class (the calibration pairs)")
    n_true_positives: int
    ece_before: float | None
    ece_after: float | None = Field(description="on cross-fitted (out-of-fold) calibrated scores")


class Calibration(BaseModel):
    method: CalibrationMethod
    scope: Literal["global", "per_class"] = Field("global", description="one map for all classes, or one per class")
    min_detections: int = Field(description="per_class: a class needs this many detections (and both labels) for its own map")
    formula: str = Field(description="how a map turns a raw score s into a calibrated one")
    target: str = Field(description="what a calibrated score is the probability of")
    fit: Literal["cross_validation"] = Field(description="how the maps were fitted without scoring detections they saw")
    fit_description: str
    folds: int
    seed: int
    status: Literal["ok", "not_fitted"] = Field(description="'not_fitted' when the detections are all TP or all FP")
    temperature: float | None = Field(description="temperature method: T fitted on all images; calibrated = sigmoid(logit(score) / T)")
    fold_temperatures: list[float] = Field(description="temperature method: T fitted without each fold (their spread shows its stability)")
    global_map: CalibrationMap | None = Field(description="the map fitted on all classes and images; null when not fitted")
    n_detections: int
    n_true_positives: int
    score_clip: float = Field(description="scores are clipped to [score_clip, 1 - score_clip] before the logit")
    n_bins: int
    binning: str
    ece_before: float | None = Field(description="ECE of the raw scores")
    ece_after: float | None = Field(description="ECE of the cross-fitted calibrated scores")
    nll_before: float | None = Field(description="mean Bernoulli NLL of the raw scores")
    nll_after: float | None = Field(description="mean Bernoulli NLL of the cross-fitted calibrated scores")
    reliability_before: list[ReliabilityBin]
    reliability_after: list[ReliabilityBin]
    global_threshold: float | None = Field(description="summary.global_threshold on the calibrated scale")
    thresholds: dict[str, float] = Field(description="class name -> threshold on the calibrated scale (by the class's map)")
    classes: list[ClassCalibration]
    per_class: list[ClassCalibrationMap] = Field(
        description="each class's map (its own, or the global one), with ECE before/after; empty when not fitted")


class Interval(BaseModel):
    low: float | None = Field(description="2.5th percentile over the replicates where the value is defined")
    high: float | None = Field(description="97.5th percentile")
    defined: int = Field(description="replicates in which the value was defined")


class ClassIntervals(BaseModel):
    name: str
    average_precision: Interval
    f1: Interval = Field(description="F1 at the threshold chosen in the same replicate")
    threshold: Interval


class Bootstrap(BaseModel):
    replicates: int
    seed: int
    unit: Literal["image"] = "image"
    confidence: float = 0.95
    method: Literal["percentile"] = "percentile"
    resampling: str = Field(description="which images were resampled, and how the holdout was kept")
    mean_average_precision: Interval
    macro_f1: Interval
    classes: list[ClassIntervals]


class DriftChange(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    class_: str = Field(alias="class", serialization_alias="class", description="class name")
    reasons: list[Literal["threshold", "f1", "threshold_appeared", "threshold_disappeared", "class_added", "class_removed"]]
    baseline_threshold: float | None
    threshold: float | None
    delta: float | None = Field(description="threshold - baseline_threshold")
    baseline_f1: float | None
    f1: float | None


class Drift(BaseModel):
    baseline: str | None = Field(description="the baseline report compared with; null when none was found")
    requested: str = Field(description="EVAL_BASELINE_URI as given")
    baseline_run_id: str | None = None
    baseline_version: str | None = Field(None, description="ETag or sha256 of the baseline report")
    threshold_tolerance: float = Field(description="a class drifts when |delta| > this")
    f1_tolerance: float = Field(description="... or when baseline_f1 - f1 > this")
    compared_classes: int
    drifted: bool = Field(description="true when `changed` is not empty")
    changed: list[DriftChange]
    config_differences: list[str] = Field(
        default_factory=list,
        description="settings that change thresholds and differ from the baseline's (comparison may be unfair)")


class CocoStats(BaseModel):
    """pycocotools' summarize() order; null where pycocotools prints -1 (no ground truth in the range)."""

    AP: float | None = Field(description="AP @ IoU 0.50:0.95, all areas, maxDets 100")
    AP50: float | None = Field(description="AP @ IoU 0.50")
    AP75: float | None = Field(description="AP @ IoU 0.75")
    APs: float | None = Field(description="AP, small objects (area < 32^2)")
    APm: float | None = Field(description="AP, medium objects (32^2 .. 96^2)")
    APl: float | None = Field(description="AP, large objects (> 96^2)")
    AR1: float | None = Field(description="AR @ IoU 0.50:0.95, maxDets 1")
    AR10: float | None = Field(description="AR, maxDets 10")
    AR100: float | None = Field(description="AR, maxDets 100")
    ARs: float | None
    ARm: float | None
    ARl: float | None


class CocoClass(BaseModel):
    class_id: int | str | None
    name: str
    average_precision: float | None = Field(description="AP @ IoU 0.50:0.95, all areas, maxDets 100; null without ground truth")


class CocoSummary(BaseModel):
    iou_type: Literal["bbox", "segm"]
    parameters: str = Field("pycocotools defaults: IoU 0.50:0.05:0.95, areas all/small/medium/large, maxDets 1/10/100, "
                            "all annotated images", description="what the numbers are computed under")
    stats: CocoStats
    area_ranges_note: str | None = Field(None, description="why the small/medium/large numbers are null, when "
                                         "that is not pycocotools' own -1 (no ground truth in the range)")
    classes: list[CocoClass] = Field(description="per class AP@[.5:.95] at maxDets 100")


class Artifacts(BaseModel):
    index: str | None = Field(description="the HTML page, relative to the report")
    plots: list[str] = Field(description="PNG files, relative to the report")
    calibration: str | None = Field(None, description="calibration.json (the fitted maps, for serving), relative to the report")


class Report(BaseModel):
    schema_version: str = SCHEMA_VERSION
    run: RunInfo
    inputs: dict[str, InputInfo]
    config: dict
    alignment: Alignment
    matching: Matching
    classes: list[ClassResult]
    summary: Summary
    coco: CocoSummary | None = Field(None, description="COCO's standard summary (COCO ground truth, bbox or segm)")
    nms: Nms | None = None
    holdout: Holdout | None = None
    calibration: Calibration | None = None
    bootstrap: Bootstrap | None = None
    drift: Drift | None = None
    artifacts: Artifacts | None = None


def input_info(table, fmt: str) -> InputInfo:
    kind, _, value = (table.version() if callable(table.version) else table.version).partition(":")
    return InputInfo(uri=table.uri, format=fmt, rows=table.rows, **{kind: value})
