"""The `thresholds.json` schema (versioned). The README documents it from these models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

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


class Summary(BaseModel):
    mean_average_precision: float | None = Field(description="mean AP over classes with ground truth")
    macro_f1: float | None = Field(description="mean F1 at the chosen thresholds over classes with ground truth and a defined F1")
    global_threshold: float | None = Field(description="the policy's threshold on all classes pooled; the low_support fallback")
    thresholds: dict[str, float] = Field(description="class name -> threshold, for every class that has one")


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


class Matching(BaseModel):
    geometry: Literal["bbox", "polygon", "image"] = Field(description="'image' is image-level multi-label matching")
    iou_threshold: float
    policy: str


class Report(BaseModel):
    schema_version: str = SCHEMA_VERSION
    run: RunInfo
    inputs: dict[str, InputInfo]
    config: dict
    alignment: Alignment
    matching: Matching
    classes: list[ClassResult]
    summary: Summary


def input_info(table, fmt: str) -> InputInfo:
    kind, _, value = table.version.partition(":")
    return InputInfo(uri=table.uri, format=fmt, rows=table.rows, **{kind: value})
