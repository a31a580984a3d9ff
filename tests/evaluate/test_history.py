"""history.parquet of scheduled runs on real S3 (moto and SeaweedFS) and on disk: one row per
(run, class), drifted runs included, appends that race never lose rows."""

import io
import json
import threading

import pandas as pd
import pytest
import structlog

from common import storage
from common.errors import InputDataError
from common.exitcodes import ExitCode
from jobs.evaluate import history, job
from jobs.evaluate.history import COLUMNS, append_history, history_rows, read_history
from tests.evaluate.helpers import eval_settings as settings
from tests.evaluate.synthetic import separable_case
# The scheduled runs of test_scheduled: the same inputs fixture and settings.
from tests.evaluate.test_scheduled import inputs, nightly  # noqa: F401 (inputs is a fixture)

LOG = structlog.get_logger()


def parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def test_three_scheduled_runs_give_three_rows_per_class(s3, inputs, monkeypatch):
    assert job.run(nightly(monkeypatch, s3, inputs), "nightly-1", LOG) == ExitCode.OK
    assert job.run(nightly(monkeypatch, s3, inputs), "nightly-2", LOG) == ExitCode.OK
    # A drifted run appends too (and still exits 3).
    assert job.run(nightly(monkeypatch, s3, inputs, predictions="shifted"), "nightly-3", LOG) == ExitCode.DRIFT_DETECTED

    frame = parquet(s3.get("reports/nightly/history.parquet"))
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 3 * 3  # 3 runs x 3 classes
    assert frame["run_id"].tolist() == [f"nightly-{n}" for n in (1, 2, 3) for _ in range(3)]
    assert str(frame["finished_at"].dtype) == "datetime64[ms, UTC]"
    for n in (1, 2, 3):
        report = json.loads(s3.get(f"reports/nightly/runs/nightly-{n}/thresholds.json"))
        mine = frame[frame["run_id"] == f"nightly-{n}"]
        assert mine["name"].tolist() == [c["name"] for c in report["classes"]]
        assert mine["class_id"].tolist() == [str(c["class_id"]) for c in report["classes"]]
        for col in ("threshold", "precision", "recall", "f1", "average_precision", "n_ground_truth"):
            assert mine[col].tolist() == [c[col] for c in report["classes"]]
        assert (mine["report"] == f"runs/nightly-{n}/thresholds.json").all()
        assert mine["finished_at"].iloc[0] == pd.Timestamp(report["run"]["finished_at"])
    third = frame[frame["run_id"] == "nightly-3"]
    assert third["drifted"].all() and third["run_drifted"].all()
    assert third["drift_reasons"].str.contains("threshold").all()
    assert (third["baseline_run_id"] == "nightly-2").all()
    assert not frame[frame["run_id"] != "nightly-3"][["drifted", "run_drifted"]].to_numpy().any()
    assert (frame[frame["run_id"] != "nightly-3"]["drift_reasons"] == "").all()

    csv = pd.read_csv(io.BytesIO(s3.get("reports/nightly/history.csv")))
    assert list(csv.columns) == list(COLUMNS) and csv["run_id"].tolist() == frame["run_id"].tolist()
    assert csv["threshold"].tolist() == pytest.approx(frame["threshold"].tolist())

    rows = read_history(s3.uri("reports/nightly"))  # what the page reads
    assert len(rows) == 9 and rows[0]["run_id"] == "nightly-1" and rows[-1]["run_id"] == "nightly-3"
    assert rows[0]["finished_at"].endswith("+00:00") and isinstance(rows[0]["n_ground_truth"], int)
    assert json.loads(json.dumps(rows)) == rows  # plain JSON values


def test_a_retried_slot_appends_once_and_fills_a_missing_append(s3, inputs, monkeypatch):
    assert job.run(nightly(monkeypatch, s3, inputs), "slot-1", LOG) == ExitCode.OK
    before = s3.get("reports/nightly/history.parquet")
    assert job.run(nightly(monkeypatch, s3, inputs), "slot-1", LOG) == ExitCode.OK  # a retry after success
    assert s3.get("reports/nightly/history.parquet") == before
    # The first attempt committed its report but stopped before its rows were in: the retry adds them.
    s3.client.delete_object(Bucket=s3.bucket, Key="reports/nightly/history.parquet")
    assert job.run(nightly(monkeypatch, s3, inputs), "slot-1", LOG) == ExitCode.OK
    assert parquet(s3.get("reports/nightly/history.parquet"))["run_id"].tolist() == ["slot-1"] * 3


def test_flat_layout_keeps_no_history(tmp_path, monkeypatch):
    gt, dets = separable_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    s = settings(monkeypatch, predictions_uri=str(tmp_path / "pred.json"), annotations_uri=str(tmp_path / "gt.json"),
                 output_uri=str(tmp_path / "out"), plots="false")
    assert job.run(s, "manual", LOG) == ExitCode.OK
    assert not (tmp_path / "out" / "history.parquet").exists()


def test_an_unreadable_history_is_an_input_error_before_any_write(s3, inputs, monkeypatch):
    s3.put("reports/nightly/history.parquet", b"not parquet")
    with pytest.raises(InputDataError, match=r"history\.parquet: not a readable Parquet history"):
        job.run(nightly(monkeypatch, s3, inputs), "nightly-1", LOG)
    assert s3.keys("reports/nightly/") == ["reports/nightly/history.parquet"]


def report_doc(run_id: str, finished_at: str, n_classes: int = 4) -> dict:
    return {"run": {"id": run_id, "finished_at": finished_at},
            "classes": [{"class_id": k, "name": f"c{k}", "status": "ok", "threshold": 0.5, "precision": 0.9,
                         "recall": 0.8, "f1": 0.85, "average_precision": 0.7, "n_ground_truth": 10}
                        for k in range(n_classes)]}


def test_two_appends_that_read_the_same_version_lose_nothing_on_s3(s3, monkeypatch):
    two_appends_that_read_the_same_version(s3.uri("reports/race"), monkeypatch)


def test_two_appends_that_read_the_same_version_lose_nothing_on_disk(tmp_path, monkeypatch):
    two_appends_that_read_the_same_version(str(tmp_path / "race"), monkeypatch)


def two_appends_that_read_the_same_version(output_root, monkeypatch):
    """Both writers read the history before either writes: the second write is refused, and its
    writer reads again and appends to the first one's rows."""
    append_history(output_root, report_doc("r0", "2026-01-01T00:00:00.000+00:00"), "runs/r0/thresholds.json", LOG)
    both_read = threading.Barrier(2, timeout=30)
    attempts = {}
    real_read = history._read_if_exists

    def read_then_wait(uri):
        blob = real_read(uri)
        me = threading.current_thread().name
        if uri.endswith(".parquet"):
            attempts[me] = attempts.get(me, 0) + 1
            if attempts[me] == 1:  # the first reads of both writers see the same version
                both_read.wait()
        return blob

    monkeypatch.setattr(history, "_read_if_exists", read_then_wait)
    errors = []

    def writer(run_id, finished_at):
        try:
            append_history(output_root, report_doc(run_id, finished_at), f"runs/{run_id}/thresholds.json", LOG)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"r{n}", f"2026-01-0{n + 1}T00:00:00.000+00:00"), name=f"w{n}")
               for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(attempts.values())[-1] >= 2  # one writer was refused and read again
    frame = parquet(storage.read(storage.join(output_root, "history.parquet")).data)
    assert sorted(frame["run_id"].unique()) == ["r0", "r1", "r2"] and len(frame) == 3 * 4
    csv = pd.read_csv(io.BytesIO(storage.read(storage.join(output_root, "history.csv")).data))
    assert sorted(csv["run_id"].tolist()) == sorted(frame["run_id"].tolist())


def _append_many(args):
    output_root, env, worker, count = args
    import os

    os.environ.update(env)
    log = structlog.get_logger()
    for n in range(count):
        run_id = f"w{worker}-{n}"
        append_history(output_root, report_doc(run_id, f"2026-01-01T00:00:{n:02d}.000+00:00", 2),
                       f"runs/{run_id}/thresholds.json", log)


def test_racing_processes_lose_no_rows_on_s3(s3):
    racing_processes(s3.uri("reports/race"))


def test_racing_processes_lose_no_rows_on_disk(tmp_path):
    racing_processes(str(tmp_path / "race"))


def racing_processes(output_root):
    import multiprocessing
    import os

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    workers, count = 3, 6
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_append_many, [(output_root, env, w, count) for w in range(workers)])
    rows = read_history(output_root)
    assert len(rows) == workers * count * 2
    assert sorted({r["run_id"] for r in rows}) == sorted(f"w{w}-{n}" for w in range(workers) for n in range(count))
    csv = pd.read_csv(io.BytesIO(storage.read(storage.join(output_root, "history.csv")).data))
    assert len(csv) == len(rows)


def test_rows_of_a_report_with_missing_values():
    doc = report_doc("r", "2026-01-01T00:00:00.000+00:00", 2)
    doc["classes"][1].update(class_id=None, status="no_ground_truth", threshold=None, precision=None, recall=None,
                             f1=None, average_precision=None, n_ground_truth=0)
    doc["drift"] = {"drifted": True, "baseline_run_id": "q",
                    "changed": [{"class": "c0", "reasons": ["threshold", "f1"]}]}
    rows = history_rows(doc, "runs/r/thresholds.json")
    assert rows[0]["drifted"] and rows[0]["drift_reasons"] == "threshold,f1" and not rows[1]["drifted"]
    frame = history.history_frame(rows)
    assert frame["threshold"].isna().tolist() == [False, True] and frame["class_id"].isna().tolist() == [False, True]


def test_the_page_sees_the_history_with_the_run_being_written(tmp_path):
    root = str(tmp_path / "nightly")
    assert history.history_with_run(root, report_doc("r1", "2026-01-01T00:00:00.000+00:00"), "runs/r1/t.json") == \
        history.history_with_run(root, report_doc("r1", "2026-01-01T00:00:00.000+00:00"), "runs/r1/t.json")
    append_history(root, report_doc("r1", "2026-01-01T00:00:00.000+00:00"), "runs/r1/t.json", LOG)
    rows = history.history_with_run(root, report_doc("r2", "2026-01-02T00:00:00.123+00:00"), "runs/r2/t.json")
    assert [r["run_id"] for r in rows] == ["r1"] * 4 + ["r2"] * 4
    assert rows[-1]["finished_at"] == "2026-01-02T00:00:00.123+00:00" and rows[0] == read_history(root)[0]
    assert set(rows[-1]) == set(COLUMNS)
    append_history(root, report_doc("r2", "2026-01-02T00:00:00.123+00:00"), "runs/r2/t.json", LOG)
    assert read_history(root) == rows  # the same rows once appended


def test_the_csv_never_hands_a_spreadsheet_a_formula(tmp_path):
    root = str(tmp_path / "nightly")
    doc = report_doc("r1", "2026-01-01T00:00:00.000+00:00", 3)
    for c, name in zip(doc["classes"], ["=HYPERLINK(\"http://x\")", "@SUM(A1)", "plain -1"]):
        c["name"] = name
    append_history(root, doc, "runs/r1/t.json", LOG)
    csv = pd.read_csv(tmp_path / "nightly" / "history.csv")
    assert csv["name"].tolist() == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "plain -1"]
    assert [r["name"] for r in read_history(root)] == [c["name"] for c in doc["classes"]]  # Parquet keeps them
