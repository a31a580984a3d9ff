"""Hostile and malformed input ends with 65 and one line naming the file (and row), never a
traceback or exit 1 (which Kubernetes would retry): issue 12, item 4, 8 (pointer) and 9."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.exitcodes import ExitCode
from jobs.evaluate.drift import POINTER_KIND
from tests.evaluate.test_errors import CSV_HEADER, SAMPLE, assert_clean_failure, run_job, write

DEEP = 100_000
DEEP_LIST = "[" * DEEP + "]" * DEEP
ROW = "frame_0001.jpg,car,0.9,1,1,5,5"


def _gt_with(**first_annotation) -> str:
    gt = json.loads((SAMPLE / "annotations.json").read_text())
    gt["annotations"][0].update(first_annotation)
    return json.dumps(gt)


DEEP_JSON = {
    # side, file name, text, what the error names
    "predictions, whole file": ("predictions", "predictions.json", DEEP_LIST, ["predictions.json", "nested too deeply"]),
    "annotations, unknown field": ("annotations", "annotations.json",
                                   '{"info": ' + DEEP_LIST + ', "images": [], "annotations": []}',
                                   ["annotations.json", "nested too deeply"]),
    "annotations, segmentation": ("annotations", "annotations.json", _gt_with(segmentation="@DEEP@"),
                                  ["annotations.json", "nested too deeply"]),
    # pyarrow's JSON reader recursed until the process died by SIGSEGV (exit -11)
    "predictions, jsonl polygon": ("predictions", "predictions.jsonl",
                                   '{"image": "frame_0001.jpg", "category": "car", "score": 0.9, "bbox_x": 1, "bbox_y": 1, '
                                   '"bbox_w": 5, "bbox_h": 5}\n{"image": "frame_0001.jpg", "polygon": ' + DEEP_LIST + "}\n",
                                   ["predictions.jsonl", "row 2", "nested too deeply"]),
    "predictions, polygon column": ("predictions", "predictions.csv",
                                    CSV_HEADER.replace("\n", ",polygon\n") + f'{ROW},"{DEEP_LIST}"\n',
                                    ["predictions.csv", "row 1", "'polygon'", "nested too deeply"]),
}


@pytest.mark.parametrize("case", sorted(DEEP_JSON))
def test_deeply_nested_json_is_an_input_error(case, job_env, tmp_path):
    side, name, text, needles = DEEP_JSON[case]
    path = write(tmp_path, name, text.replace('"@DEEP@"', DEEP_LIST))
    proc = run_job(job_env, tmp_path, **{f"{side}_uri": path})
    assert_clean_failure(proc, ExitCode.INPUT_DATA, *needles, out=tmp_path / "out")


NESTED_COLUMNS = {
    "score as a list": ("score", [[0.9]], "list<"),
    "score as a struct": ("score", [{"a": 0.9}], "struct<"),
    "box as a list": ("bbox_w", [[5.0]], "list<"),
    "image as a list": ("image", [["frame_0001.jpg"]], "list<"),
    "category as a struct": ("category", [{"name": "car"}], "struct<"),
    "polygon as a struct": ("polygon", [{"x": 1.0}], "not a list of x, y"),
}


@pytest.mark.parametrize("case", sorted(NESTED_COLUMNS))
def test_parquet_nested_columns_where_values_are_expected(case, job_env, tmp_path):
    column, value, needle = NESTED_COLUMNS[case]
    columns = {"image": ["frame_0001.jpg"], "category": ["car"], "score": [0.9], "bbox_x": [1.0], "bbox_y": [1.0],
               "bbox_w": [5.0], "bbox_h": [5.0], column: value}
    path = tmp_path / "predictions.parquet"
    pq.write_table(pa.table(columns), path)
    proc = run_job(job_env, tmp_path, predictions_uri=str(path))
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.parquet", f"'{column}'", needle, out=tmp_path / "out")


def test_mathtext_class_name_plots(job_env, tmp_path):
    """A class named like mathtext (`$\\frac{a$`) is drawn as typed; matplotlib used to fail parsing it."""
    name = "$\\frac{a$"
    gt = json.loads((SAMPLE / "annotations.json").read_text())
    for c in gt["categories"]:
        if c["name"] == "dog":
            c["name"] = name
    gt_path = write(tmp_path, "annotations.json", json.dumps(gt))
    pred_path = write(tmp_path, "predictions.csv", (SAMPLE / "predictions.csv").read_text().replace(",dog,", f",{name},"))
    proc = run_job(job_env, tmp_path, annotations_uri=gt_path, predictions_uri=pred_path, plots="true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "thresholds.json").read_text())
    drawn = [c for c in report["classes"] if c["name"] == name]
    assert drawn and drawn[0]["n_predictions"] > 0
    assert any("frac_a-pr.png" in p for p in report["artifacts"]["plots"])


def _baseline(job_env, tmp_path: Path) -> dict:
    assert run_job(job_env, tmp_path, output_uri=str(tmp_path / "base")).returncode == 0
    return json.loads((tmp_path / "base" / "thresholds.json").read_text())


BAD_BASELINES = {
    "string threshold": (lambda r: r["classes"][0].update(threshold="0.5"), ["classes[0].threshold", "'0.5'"]),
    "list as a name": (lambda r: r["classes"][0].update(name=["car"]), ["classes[0].name", "['car']"]),
    "string f1": (lambda r: r["classes"][1].update(f1="high"), ["classes[1].f1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BASELINES))
def test_malformed_baseline_is_a_named_input_error(case, job_env, tmp_path):
    mangle, needles = BAD_BASELINES[case]
    report = _baseline(job_env, tmp_path)
    mangle(report)
    path = write(tmp_path, "baseline.json", json.dumps(report))
    proc = run_job(job_env, tmp_path, baseline_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "baseline.json", *needles, out=tmp_path / "out")


def test_deep_baseline_is_a_named_input_error(job_env, tmp_path):
    path = write(tmp_path, "baseline.json", DEEP_LIST)
    proc = run_job(job_env, tmp_path, baseline_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "baseline.json", "nested too deeply", out=tmp_path / "out")


POINTERS = {
    "no report": ({}, ["latest.json", "no `report`"]),
    "report not a string": ({"report": ["thresholds.json"]}, ["latest.json", "no `report`"]),
    "report outside via ..": ({"report": "../elsewhere/thresholds.json"}, ["latest.json", "outside its folder"]),
    "report as an absolute path": ({"report": "@ABS@"}, ["latest.json", "outside its folder"]),
}


@pytest.mark.parametrize("case", sorted(POINTERS))
def test_latest_pointer_must_name_a_report_inside_its_folder(case, job_env, tmp_path):
    fields, needles = POINTERS[case]
    _baseline(job_env, tmp_path)  # tmp/base/thresholds.json: a real report a `../` pointer could reach
    scheduled = tmp_path / "scheduled"
    scheduled.mkdir()
    # ../elsewhere from scheduled/ is tmp/elsewhere: put a valid report there, so only the check refuses it.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "thresholds.json").write_bytes((tmp_path / "base" / "thresholds.json").read_bytes())
    fields = {k: (str(tmp_path / "base" / "thresholds.json") if v == "@ABS@" else v) for k, v in fields.items()}
    pointer = {"kind": POINTER_KIND, "run_id": "r1", "finished_at": "2026-01-01T00:00:00Z", **fields}
    (scheduled / "latest.json").write_text(json.dumps(pointer))
    proc = run_job({**job_env, "RUN_ID": "r2"}, tmp_path, output_uri=str(scheduled), output_layout="runs",
                   baseline_uri="latest")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, *needles, out=scheduled / "runs" / "r2")


def _statuses(path: Path) -> dict:
    report = json.loads(path.read_text())
    return {c["name"]: (c["status"], c["n_ground_truth"], c["n_predictions"], c["average_precision"], c["threshold"])
            for c in report["classes"]}


def test_empty_prediction_list_is_a_valid_evaluation_like_a_header_only_csv(job_env, tmp_path):
    """`[]` used to exit 65 ("predictions have no boxes") while a header-only CSV exited 0."""
    empty_json = write(tmp_path, "predictions.json", "[]")
    header_only = write(tmp_path, "predictions.csv", CSV_HEADER)
    for name, path in (("json", empty_json), ("csv", header_only)):
        proc = run_job(job_env, tmp_path, predictions_uri=path, output_uri=str(tmp_path / name))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _statuses(tmp_path / "json" / "thresholds.json") == _statuses(tmp_path / "csv" / "thresholds.json")
    statuses = _statuses(tmp_path / "json" / "thresholds.json")
    annotated = {name: s for name, s in statuses.items() if s[1] > 0}  # the sample also lists an unannotated class
    assert len(annotated) == 3 and all(s[0] == "no_predictions" and s[2] == 0 and s[3] == 0 for s in annotated.values())


def test_gzip_inputs_are_decompressed(job_env, tmp_path):
    import gzip

    plain = run_job(job_env, tmp_path, output_uri=str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    gt = tmp_path / "annotations.json.gz"
    gt.write_bytes(gzip.compress((SAMPLE / "annotations.json").read_bytes()))
    pred = tmp_path / "predictions.csv.gz"
    pred.write_bytes(gzip.compress((SAMPLE / "predictions.csv").read_bytes()))
    proc = run_job(job_env, tmp_path, annotations_uri=str(gt), predictions_uri=str(pred), output_uri=str(tmp_path / "gz"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _statuses(tmp_path / "gz" / "thresholds.json") == _statuses(tmp_path / "plain" / "thresholds.json")
    report = json.loads((tmp_path / "gz" / "thresholds.json").read_text())
    assert report["inputs"]["predictions"]["format"] == "csv"


def test_gzip_bomb_and_broken_gzip_are_input_errors(job_env, tmp_path):
    import gzip

    bomb = tmp_path / "predictions.csv.gz"
    bomb.write_bytes(gzip.compress(CSV_HEADER.encode() + b"x" * 5_000_000))
    proc = run_job(job_env, tmp_path, predictions_uri=str(bomb), max_decompressed_bytes="1000000")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.csv.gz", "EVAL_MAX_DECOMPRESSED_BYTES=1,000,000",
                         out=tmp_path / "out")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress((SAMPLE / "predictions.csv").read_bytes())[:200])
    proc = run_job(job_env, tmp_path, predictions_uri=str(broken))
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "broken.csv.gz", "not a readable gzip file", out=tmp_path / "out")


def test_jsonl_rows_count_from_one(job_env, tmp_path):
    good = '{"image": "frame_0001.jpg", "category": "car", "score": 0.9, "bbox_x": 1, "bbox_y": 1, "bbox_w": 5, "bbox_h": 5}'
    path = write(tmp_path, "predictions.jsonl", good + "\n" + good.replace("0.9", '"high"') + "\n")
    proc = run_job(job_env, tmp_path, predictions_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.jsonl", "in row 2", out=tmp_path / "out")
    path = write(tmp_path, "predictions.jsonl", good + "\n" + good.replace('"score": 0.9, ', "") + "\n")
    proc = run_job(job_env, tmp_path, predictions_uri=path)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "predictions.jsonl", "row 2", out=tmp_path / "out")
