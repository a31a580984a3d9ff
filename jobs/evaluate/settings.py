"""`EVAL_` settings of the evaluation job. `python -m jobs.evaluate --help` renders this class."""

import json
import math
from enum import Enum
from typing import Annotated, Literal

import numpy as np

from pydantic import Field, PlainSerializer, PlainValidator, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.settings import check_uri
from jobs.evaluate.formats import REGISTRY
from jobs.evaluate.sweep import Policy

TABLE_COLUMNS = ("image", "category", "score", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "polygon", "segmentation",
                 "height", "width", "iscrowd")
# The EVAL_FORMAT values: 'auto' and every format in the registry.
Format = Literal[("auto", *REGISTRY)]
MAX_IOU_THRESHOLDS = 1001  # 0.001 steps over (0, 1]; more only costs memory and report size
# EVAL_POLICY is parsed once, here; the report and --help show its text.
PolicySetting = Annotated[Policy, NoDecode, PlainValidator(Policy.parse), PlainSerializer(str, return_type=str)]


class IouType(str, Enum):
    """EVAL_IOU_TYPE: what a detection's overlap with a ground truth is measured on."""

    AUTO = "auto"  # segm when both sides carry segmentations and image sizes are known; else polygon, else bbox
    BBOX = "bbox"
    SEGM = "segm"  # COCO masks, exactly as pycocotools iouType='segm'
    POLYGON = "polygon"  # exact polygon IoU, for polygon-only inputs without image sizes


class EvalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVAL_", case_sensitive=False, extra="ignore")

    predictions_uri: str = Field(description="Model predictions: s3://bucket/key or a local path (COCO results JSON, CSV, Parquet, "
                                 "JSONL), or a folder / S3 prefix / .zip / .tar.gz of YOLO .txt files.")
    annotations_uri: str = Field(description="Ground truth: s3://bucket/key or a local path (COCO JSON, CSV, Parquet, JSONL), "
                                 "or a folder / S3 prefix / .zip / .tar.gz of YOLO .txt files.")
    output_uri: str = Field(description="Output prefix (s3://bucket/prefix or a folder); the report is <prefix>/thresholds.json.")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="A detection matches a ground truth at IoU >= this.")
    iou_thresholds: Annotated[list[float], NoDecode] = Field(
        default_factory=list,
        description="More IoU thresholds, for AP only: a JSON list, e.g. [0.5, 0.55, 0.6], or start:stop:step "
        "(stop included), e.g. 0.5:0.95:0.05 for COCO AP@[.5:.95]; at most 1001 thresholds. Each class then reports AP at each and their "
        "mean beside its EVAL_IOU_THRESHOLD results. Empty: off.",
    )
    format: Format = Field(
        "auto",
        description=f"Input format of both inputs: {', '.join(REGISTRY)}; 'auto' detects it from the leading bytes, "
        "the extension, then the content (a folder, S3 prefix or .zip/.tar.gz of .txt files: yolo).",
    )
    predictions_format: Format | None = Field(None, description="Overrides EVAL_FORMAT for the predictions file.")
    annotations_format: Format | None = Field(None, description="Overrides EVAL_FORMAT for the annotations file.")
    class_names_uri: str | None = Field(
        None,
        description="YOLO class names: an Ultralytics data YAML (`names:` a list or id: name) or a text file "
        "with one name per line (ids from 0), s3:// or a path. Unset: classes are their ids.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Table column names, as JSON mapping our name to yours, e.g. "
        '{"image": "path", "score": "confidence"}. Our names: ' + ", ".join(TABLE_COLUMNS) + ".",
    )
    join_key: Literal["basename", "exact"] = Field(
        "basename",
        description="How image names join: 'basename' (lower-cased file name without folders or extension) or 'exact'.",
    )
    iou_type: IouType = Field(
        IouType.AUTO,
        description="'segm': COCO masks (polygons and RLE rasterised at each image's height x width, as pycocotools "
        "iouType='segm'); 'polygon': exact polygon IoU (polygons only, no image sizes needed); 'bbox': boxes. 'auto': "
        "segm when both sides carry segmentations and the images have sizes, else polygon when both carry polygons, "
        "else bbox.",
    )
    policy: PolicySetting = Field(
        "f1", validate_default=True,
        description="Operating point per class: 'f1', 'fbeta:B', 'precision>=P' (most recall at that precision) "
        "or 'recall>=R' (most precision at that recall).",
    )
    min_support: int = Field(
        1, ge=1, description="Classes with fewer ground truths get the global threshold, flagged low_support."
    )
    nms_iou: float | None = Field(
        None, gt=0.0, le=1.0,
        description="Class-wise NMS per image before matching: a detection is dropped when its IoU with a kept, "
        "higher-scored detection of the same class is > this. Unset: no NMS. Thresholds are only valid under the same NMS.",
    )
    holdout_fraction: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Share of images held out (seeded split): thresholds are chosen on the rest and classes' "
        "AP/P/R/F1 are measured on the held-out images. 0: choose and measure on all images (optimistic).",
    )
    seed: int = Field(0, ge=0, description="Seed of every random draw: the holdout split, bootstrap resamples, calibration folds.")
    calibration: Literal["none", "temperature", "platt", "isotonic"] = Field(
        "none",
        description="Fit scores to 'true positive at the IoU threshold' (cross-fitted over image folds): 'temperature' "
        "(sigmoid(logit(s) / T), maximum likelihood), 'platt' (sigmoid(a logit(s) + b), logistic regression) or "
        "'isotonic' (isotonic regression); report ECE before/after, the maps (also in calibration.json) and "
        "thresholds on both scales. Needs scores in [0, 1].",
    )
    calibration_scope: Literal["global", "per_class"] = Field(
        "global", description="'global': one map for all classes; 'per_class': one map per class (classes under "
        "EVAL_CALIBRATION_MIN_DETECTIONS, or with only TPs or only FPs, use the global map, flagged).",
    )
    calibration_min_detections: int = Field(
        50, ge=1, description="With EVAL_CALIBRATION_SCOPE=per_class: detections a class needs for its own map.")
    calibration_folds: int = Field(5, ge=2, le=100, description="Image folds for cross-fitting the calibration (honest ece_after).")
    bootstrap: int = Field(
        0, ge=0, le=100_000,
        description="Bootstrap replicates (images resampled with replacement) for 95% percentile intervals of AP, "
        "F1 at the chosen threshold, and the threshold. 0: off.",
    )
    baseline_uri: str | None = Field(
        None,
        description="An earlier thresholds.json (s3:// or path) to compare with; 'latest' means the latest complete "
        "report under EVAL_OUTPUT_URI (first run: no baseline, no drift). The report gains a `drift` block.",
    )
    drift_tolerance: float = Field(
        0.05, ge=0.0, description="A class drifts when its threshold moved by more than this (absolute, raw score scale)."
    )
    drift_f1_tolerance: float = Field(0.05, ge=0.0, description="A class drifts when its F1 fell by more than this.")
    fail_on_drift: bool = Field(
        True, description="Exit 3 (drift detected) after writing the report when any class drifted; false: exit 0."
    )
    output_layout: Literal["flat", "runs"] = Field(
        "flat",
        description="'flat': write into EVAL_OUTPUT_URI. 'runs' (scheduled runs): write into "
        "EVAL_OUTPUT_URI/runs/<run id>/ (the report only if absent), then point EVAL_OUTPUT_URI/latest.json at it.",
    )
    coco_summary: bool = Field(
        True,
        description="With COCO ground truth (bbox or segm): the report's `coco` block, the 12 numbers of pycocotools' "
        "summarize() and AP@[.5:.95] per class. false: leave it out (null), which saves its time on large inputs.",
    )
    report_page: bool = Field(
        True,
        description="Write index.html beside the report: one self-contained interactive page (sortable class table, "
        "PR and P/R/F1-vs-threshold curves with a threshold slider, reliability diagrams, history of scheduled runs).",
    )
    plots: bool = Field(
        False, description="Also write PNG plots per class (plots/*.png: PR curve, F1 vs threshold, reliability), "
        "for embedding elsewhere; the page links them when both are on. Slower (matplotlib).",
    )
    max_decompressed_bytes: int = Field(
        8 * 2**30, ge=1,
        description="Most bytes a gzip-compressed input (.gz, or gzip content) may decompress to; more is an input "
        "error (65): a small file can hold a huge payload.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    @field_validator("predictions_uri", "annotations_uri")
    @classmethod
    def _object_uri(cls, value: str) -> str:
        return check_uri(value, needs_key=True)

    @field_validator("output_uri")
    @classmethod
    def _prefix_uri(cls, value: str) -> str:
        return check_uri(value, needs_key=False)

    @field_validator("class_names_uri")
    @classmethod
    def _names_uri(cls, value: str | None) -> str | None:
        return value if value is None else check_uri(value, needs_key=True)

    @field_validator("baseline_uri")
    @classmethod
    def _baseline_uri(cls, value: str | None) -> str | None:
        return value if value in (None, "latest") else check_uri(value, needs_key=True)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(TABLE_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column key(s) {unknown}; expected some of {list(TABLE_COLUMNS)}")
        return value

    @field_validator("iou_thresholds", mode="before")
    @classmethod
    def _parse_iou_thresholds(cls, value):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError("expected a JSON list of IoUs or start:stop:step")
        start, stop, step = map(float, parts)
        if not all(map(math.isfinite, (start, stop, step))):
            raise ValueError("start:stop:step must be finite numbers")
        if not step > 0 or stop < start:
            raise ValueError("start:stop:step needs step > 0 and stop >= start")
        # Counted before anything is built: 0.5:0.95:1e-12 would ask for 4.5e11 floats.
        steps = (stop - start) / step
        if steps >= MAX_IOU_THRESHOLDS:
            raise ValueError(f"start:stop:step gives {math.floor(steps) + 1:,} thresholds; at most {MAX_IOU_THRESHOLDS}")
        # Built as pycocotools builds its thresholds (a count of steps, then linspace), bit for bit.
        count = int(np.round(steps)) + 1
        return np.linspace(start, start + (count - 1) * step, count).tolist()

    @field_validator("iou_thresholds")
    @classmethod
    def _valid_iou_thresholds(cls, value: list[float]) -> list[float]:
        if len(value) > MAX_IOU_THRESHOLDS:
            raise ValueError(f"{len(value):,} IoU thresholds; at most {MAX_IOU_THRESHOLDS}")
        if any(not 0.0 < t <= 1.0 for t in value):
            raise ValueError("every IoU threshold must be in (0, 1]")
        if len(set(value)) != len(value):
            raise ValueError("IoU thresholds must be distinct")
        return value

    def column(self, name: str) -> str:
        return self.columns.get(name, name)
