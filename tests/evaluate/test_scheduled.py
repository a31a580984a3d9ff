"""Scheduled runs on real S3 (moto and SeaweedFS): per-run prefixes, the `latest` pointer, drift
against the previous run, and two runs of one slot."""

import json

import pytest
import structlog

from common.errors import ConfigError
from common.exitcodes import ExitCode
from jobs.evaluate import job
from jobs.evaluate.publish import destination, update_pointer
from tests.evaluate.helpers import eval_settings as settings
from tests.evaluate.synthetic import separable_case

LOG = structlog.get_logger()


@pytest.fixture
def inputs(s3):
    gt, dets = separable_case()
    _, shifted = separable_case(shift=lambda s: s / 2)
    return {"gt": s3.put("in/annotations.json", json.dumps(gt).encode()),
            "pred": s3.put("in/predictions.json", json.dumps(dets).encode()),
            "shifted": s3.put("in/shifted.json", json.dumps(shifted).encode())}


def nightly(monkeypatch, s3, inputs, predictions="pred", **extra):
    return settings(monkeypatch, predictions_uri=inputs[predictions], annotations_uri=inputs["gt"],
                    output_uri=s3.uri("reports/nightly"), output_layout="runs", baseline_uri="latest",
                    plots="false", report_page="false", **extra)


def test_each_run_compares_with_the_previous_one(s3, inputs, monkeypatch):
    assert job.run(nightly(monkeypatch, s3, inputs), "evaluate-nightly-1000", LOG) == ExitCode.OK
    first = json.loads(s3.get("reports/nightly/runs/evaluate-nightly-1000/thresholds.json"))
    assert first["drift"]["baseline"] is None and first["drift"]["changed"] == []  # nothing to compare yet
    pointer = json.loads(s3.get("reports/nightly/latest.json"))
    assert pointer["run_id"] == "evaluate-nightly-1000"
    assert pointer["report"] == "runs/evaluate-nightly-1000/thresholds.json"

    assert job.run(nightly(monkeypatch, s3, inputs), "evaluate-nightly-1001", LOG) == ExitCode.OK
    second = json.loads(s3.get("reports/nightly/runs/evaluate-nightly-1001/thresholds.json"))
    assert second["drift"]["baseline"] == s3.uri("reports/nightly/runs/evaluate-nightly-1000/thresholds.json")
    assert second["drift"]["baseline_run_id"] == "evaluate-nightly-1000" and second["drift"]["changed"] == []
    assert json.loads(s3.get("reports/nightly/latest.json"))["run_id"] == "evaluate-nightly-1001"

    code = job.run(nightly(monkeypatch, s3, inputs, predictions="shifted"), "evaluate-nightly-1002", LOG)
    assert code == ExitCode.DRIFT_DETECTED
    third = json.loads(s3.get("reports/nightly/runs/evaluate-nightly-1002/thresholds.json"))
    assert {c["class"] for c in third["drift"]["changed"]} == {"k0", "k1", "k2"}
    pointer = json.loads(s3.get("reports/nightly/latest.json"))  # the pointer names the previous run, drifted or not
    assert pointer["run_id"] == "evaluate-nightly-1002" and pointer["drifted"] is True
    assert s3.keys("reports/nightly/") == [
        "reports/nightly/history.csv",
        "reports/nightly/history.parquet",
        "reports/nightly/latest.json",
        *[f"reports/nightly/runs/evaluate-nightly-{n}/thresholds.json" for n in (1000, 1001, 1002)],
    ]


def test_a_slot_is_evaluated_once(s3, inputs, monkeypatch):
    assert job.run(nightly(monkeypatch, s3, inputs), "slot-1", LOG) == ExitCode.OK
    report = s3.get("reports/nightly/runs/slot-1/thresholds.json")
    pointer = s3.get("reports/nightly/latest.json")
    # A retry of the same slot, even with other inputs, finds the report and keeps it.
    assert job.run(nightly(monkeypatch, s3, inputs, predictions="shifted"), "slot-1", LOG) == ExitCode.OK
    assert s3.get("reports/nightly/runs/slot-1/thresholds.json") == report
    assert s3.get("reports/nightly/latest.json") == pointer


def test_concurrent_runs_of_a_slot_keep_the_first_report(s3, inputs, monkeypatch):
    """Another attempt commits the slot while this one evaluates: its report stays, whole."""
    real_evaluate = job.evaluate
    theirs = {}

    def evaluate_while_another_commits(settings_, run_id, log):
        report, evidence = real_evaluate(settings_, run_id, log)
        theirs["body"] = report.model_copy(update={"summary": report.summary.model_copy(
            update={"macro_f1": 0.123})}).model_dump_json().encode()
        s3.put(f"reports/nightly/runs/{run_id}/thresholds.json", theirs["body"])
        return report, evidence

    monkeypatch.setattr(job, "evaluate", evaluate_while_another_commits)
    assert job.run(nightly(monkeypatch, s3, inputs), "slot-2", LOG) == ExitCode.OK
    assert s3.get("reports/nightly/runs/slot-2/thresholds.json") == theirs["body"]
    assert json.loads(s3.get("reports/nightly/latest.json"))["run_id"] == "slot-2"


def test_pointer_never_moves_back(tmp_path):
    dest_new = destination(str(tmp_path), "runs", "b")
    dest_old = destination(str(tmp_path), "runs", "a")
    report = {"run": {"id": "b", "finished_at": "2026-01-02T00:00:00.000+00:00"}}
    assert update_pointer(dest_new, report, LOG)
    old = {"run": {"id": "a", "finished_at": "2026-01-01T00:00:00.000+00:00"}}
    assert not update_pointer(dest_old, old, LOG)  # a late retry of an older slot
    assert json.loads((tmp_path / "latest.json").read_text())["run_id"] == "b"


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden"])
def test_run_ids_that_cannot_name_a_folder_are_refused(run_id, tmp_path):
    for layout in ("runs", "flat"):  # flat too: its plots are staged under artifacts/<run id>-<random>/
        with pytest.raises(ConfigError):
            destination(str(tmp_path), layout, run_id)


def _pointer_race(root: str, monkeypatch) -> dict:
    """The older slot reads the pointer, the newer one moves it, then the older one writes."""
    import threading

    from common import storage

    dest_z, dest_old, dest_new = (destination(root, "runs", r) for r in ("z", "a", "b"))
    update_pointer(dest_z, {"run": {"id": "z", "finished_at": "2026-01-01T00:00:00.000+00:00"}}, LOG)
    newer_done = threading.Event()
    real_read = storage.read

    def read(uri, **kw):
        blob = real_read(uri, **kw)
        if threading.current_thread().name == "older" and not newer_done.is_set():
            assert newer_done.wait(30)
        return blob

    monkeypatch.setattr(storage, "read", read)
    older = threading.Thread(target=update_pointer, name="older", args=(
        dest_old, {"run": {"id": "a", "finished_at": "2026-01-02T00:00:00.000+00:00"}}, LOG))
    older.start()
    update_pointer(dest_new, {"run": {"id": "b", "finished_at": "2026-01-03T00:00:00.000+00:00"}}, LOG)
    newer_done.set()
    older.join(30)
    monkeypatch.setattr(storage, "read", real_read)
    return json.loads(storage.read(storage.join(root, "latest.json")).data)


def test_two_slots_finishing_at_once_leave_the_pointer_at_the_later_on_s3(s3, monkeypatch):
    assert _pointer_race(s3.uri("reports/nightly"), monkeypatch)["run_id"] == "b"


def test_two_slots_finishing_at_once_leave_the_pointer_at_the_later_on_disk(tmp_path, monkeypatch):
    assert _pointer_race(str(tmp_path), monkeypatch)["run_id"] == "b"
