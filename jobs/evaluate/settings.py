"""`EVAL_` settings of the evaluation job. `python -m jobs.evaluate --help` renders this class."""

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TABLE_COLUMNS = ("image", "category", "score", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "polygon")
Format = Literal["auto", "coco", "csv", "parquet", "jsonl"]
POLICY_PATTERN = re.compile(r"^(f1|fbeta:(?P<beta>[0-9.]+)|precision>=(?P<p>[0-9.]+)|recall>=(?P<r>[0-9.]+))$")


class EvalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVAL_", case_sensitive=False, extra="ignore")

    predictions_uri: str = Field(description="Model predictions: s3://bucket/key or a local path (COCO results JSON, CSV, Parquet, JSONL).")
    annotations_uri: str = Field(description="Ground truth: s3://bucket/key or a local path (COCO JSON, CSV, Parquet, JSONL).")
    output_uri: str = Field(description="Output prefix (s3://bucket/prefix or a folder); the report is <prefix>/thresholds.json.")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="A detection matches a ground truth at IoU >= this.")
    format: Format = Field("auto", description="Input format of both files; 'auto' detects from the extension and content.")
    predictions_format: Format | None = Field(None, description="Overrides EVAL_FORMAT for the predictions file.")
    annotations_format: Format | None = Field(None, description="Overrides EVAL_FORMAT for the annotations file.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Table column names, as JSON mapping our name to yours, e.g. "
        '{"image": "path", "score": "confidence"}. Our names: ' + ", ".join(TABLE_COLUMNS) + ".",
    )
    join_key: Literal["basename", "exact"] = Field(
        "basename",
        description="How image names join: 'basename' (lower-cased file name without folders or extension) or 'exact'.",
    )
    iou_type: Literal["auto", "bbox", "polygon"] = Field(
        "auto", description="'auto' uses polygon IoU when both sides carry polygons, else boxes."
    )
    policy: str = Field(
        "f1",
        description="Operating point per class: 'f1', 'fbeta:B', 'precision>=P' (most recall at that precision) "
        "or 'recall>=R' (most precision at that recall).",
    )
    min_support: int = Field(
        1, ge=1, description="Classes with fewer ground truths get the global threshold, flagged low_support."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(TABLE_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column key(s) {unknown}; expected some of {list(TABLE_COLUMNS)}")
        return value

    @field_validator("policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        match = POLICY_PATTERN.match(value.strip().replace(" ", ""))
        if not match:
            raise ValueError("expected f1, fbeta:B, precision>=P or recall>=R")
        if match["beta"] is not None and not float(match["beta"]) > 0:
            raise ValueError("beta must be > 0")
        for bound in (match["p"], match["r"]):
            if bound is not None and not 0.0 < float(bound) <= 1.0:
                raise ValueError("the bound must be in (0, 1]")
        return match.group(0)

    def column(self, name: str) -> str:
        return self.columns.get(name, name)
