"""Threshold drift against an earlier report: which classes moved, and which baseline that was.

Classes are compared by name, on the raw score scale. A class is listed in `changed` when
  - both reports have a threshold and |threshold - baseline_threshold| > the threshold tolerance
    ("threshold"; a move of exactly the tolerance, up to float rounding, is not drift), or
  - both have an F1 and baseline_f1 - f1 > the F1 tolerance ("f1"; a rise never counts), or
  - only one of the two has a threshold ("threshold_appeared" / "threshold_disappeared"), or
  - the class is in only one of the reports ("class_added" / "class_removed").
Equal inputs and settings give equal thresholds, so a report compared with itself never drifts.

The baseline is read with plain JSON, not the current schema, so reports from older versions of
the job still serve; it only needs `classes` with `name`, `threshold` and `f1`.
"""

from __future__ import annotations

import json

from common import storage
from common.errors import InputDataError

# Settings that change the thresholds themselves: when they differ, the comparison is flagged.
THRESHOLD_SETTINGS = ("iou_threshold", "iou_type", "policy", "min_support", "nms_iou", "holdout_fraction", "seed",
                      "join_key")
POINTER_KIND = "ml-batch-jobs/evaluate/latest"
# Scores and F1 live in [0, 1]; a move of exactly the tolerance (0.55 - 0.5 = 0.050000000000000044)
# is not beyond it. The slack is far below any score resolution that matters.
ROUNDING_SLACK = 1e-12


def compare_classes(classes: list[dict], baseline_classes: list[dict], *, threshold_tolerance: float,
                    f1_tolerance: float) -> tuple[list[dict], int]:
    """Changed classes (dicts in the DriftChange shape, in the current report's order) and how many were compared."""
    base = {c["name"]: c for c in baseline_classes}
    now = {c["name"]: c for c in classes}
    changed = []
    for name in list(now) + [n for n in base if n not in now]:
        cur, old = now.get(name), base.get(name)
        t, bt = (cur or {}).get("threshold"), (old or {}).get("threshold")
        f, bf = (cur or {}).get("f1"), (old or {}).get("f1")
        reasons = []
        if old is None:
            reasons.append("class_added")
        elif cur is None:
            reasons.append("class_removed")
        else:
            if t is not None and bt is not None and abs(t - bt) > threshold_tolerance + ROUNDING_SLACK:
                reasons.append("threshold")
            elif (t is None) != (bt is None):
                reasons.append("threshold_appeared" if bt is None else "threshold_disappeared")
            if f is not None and bf is not None and bf - f > f1_tolerance + ROUNDING_SLACK:
                reasons.append("f1")
        if reasons:
            changed.append({"class": name, "reasons": reasons, "baseline_threshold": bt, "threshold": t,
                            "delta": None if t is None or bt is None else t - bt, "baseline_f1": bf, "f1": f})
    return changed, len(set(now) | set(base))


def config_differences(config: dict, baseline_config: dict, defaults: dict) -> list[str]:
    """Threshold-relevant settings that differ; a setting the baseline predates counts as its default."""
    out = []
    for key in THRESHOLD_SETTINGS:
        if key in config and baseline_config.get(key, defaults.get(key)) != config[key]:
            out.append(f"{key}: baseline {baseline_config.get(key, defaults.get(key))!r}, now {config[key]!r}")
    return out


def _parse(blob: storage.Blob) -> dict:
    try:
        doc = json.loads(blob.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{blob.uri}: baseline is not JSON: {exc}") from None
    except RecursionError:
        raise InputDataError(f"{blob.uri}: baseline JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise InputDataError(f"{blob.uri}: baseline is not a JSON object")
    return doc


def pointer_target(pointer_uri: str, pointer: dict) -> str:
    """The report a `latest.json` pointer names (stored relative to the pointer's folder).

    It must be a relative path inside that folder: a pointer naming `../other/thresholds.json`
    (or an absolute path) would read outside the output prefix, and is refused.
    """
    report = pointer.get("report")
    if not isinstance(report, str) or not report.strip("/"):
        raise InputDataError(f"{pointer_uri}: latest pointer has no `report` (the report's path relative to it)")
    parts = report.split("/")
    if report.startswith("/") or "://" in report or any(p in ("..", ".", "") for p in parts) or "\\" in report:
        raise InputDataError(f"{pointer_uri}: latest pointer names {report!r}, outside its folder; "
                             "expected a path like runs/<run id>/thresholds.json")
    return storage.join(pointer_uri.rsplit("/", 1)[0], report)


def read_baseline(uri: str) -> tuple[str, storage.Blob, dict]:
    """(report URI, blob, parsed report) of a thresholds.json, or of the report a latest.json names.

    A folder/prefix (no `.json` ending) stands for its latest.json, else its thresholds.json.
    """
    if not uri.endswith(".json"):
        for name in ("latest.json", "thresholds.json"):
            if storage.exists(storage.join(uri, name)):
                uri = storage.join(uri, name)
                break
    blob = storage.read(uri)
    doc = _parse(blob)
    if doc.get("kind") == POINTER_KIND:
        uri = pointer_target(uri, doc)
        blob = storage.read(uri)
        doc = _parse(blob)
    classes = doc.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "name" in c for c in classes):
        raise InputDataError(f"{uri}: baseline has no `classes` list with names; is it a thresholds.json?")
    for i, c in enumerate(classes):
        if not isinstance(c["name"], str):
            raise InputDataError(f"{uri}: baseline classes[{i}].name must be a string, got {c['name']!r}")
        for key in ("threshold", "f1"):
            value = c.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise InputDataError(f"{uri}: baseline classes[{i}].{key} must be a number or null, got {value!r}")
    if not isinstance(doc.get("config") or {}, dict) or not isinstance(doc.get("run") or {}, dict):
        raise InputDataError(f"{uri}: baseline `config` and `run` must be objects")
    return uri, blob, doc


def drift_block(report, requested: str, baseline: tuple[str, storage.Blob, dict] | None, *,
                threshold_tolerance: float, f1_tolerance: float, defaults: dict):
    """The report's `drift` block; `baseline` None means none exists yet (a first scheduled run)."""
    from jobs.evaluate.report import Drift, DriftChange

    common = dict(requested=requested, threshold_tolerance=threshold_tolerance, f1_tolerance=f1_tolerance)
    if baseline is None:
        return Drift(baseline=None, compared_classes=0, drifted=False, changed=[], **common)
    uri, blob, doc = baseline
    changed, compared = compare_classes([c.model_dump() for c in report.classes], doc["classes"],
                                        threshold_tolerance=threshold_tolerance, f1_tolerance=f1_tolerance)
    return Drift(
        baseline=uri, baseline_run_id=(doc.get("run") or {}).get("id"), baseline_version=blob.version,
        compared_classes=compared, drifted=bool(changed), changed=[DriftChange(**c) for c in changed],
        config_differences=config_differences(report.config, doc.get("config") or {}, defaults), **common,
    )
