"""The history of scheduled runs: `<EVAL_OUTPUT_URI>/history.parquet`, one row per (run, class).

With EVAL_OUTPUT_LAYOUT=runs every run, drifted or not, appends its classes after its report
and the `latest.json` pointer are written (so a row always names a complete report). The file
is read, extended with pandas and written whole, conditionally on the version that was read
(S3 `If-Match` on the ETag; on disk a compare-and-rename under a lock): when another run
replaced it in between, the write is refused and the append starts again from the new version,
so two runs finishing at once never lose each other's rows. A run's rows are appended once: a
retry of a slot whose rows are there appends nothing, and one whose append failed (after the
report was committed) appends them then.

`history.csv` beside it is the same table for spreadsheets, rewritten from the Parquet file after
each append with the same protection; the Parquet file is the reference (the CSV follows it, with
text that a spreadsheet would run as a formula prefixed by an apostrophe).

Columns (COLUMNS): run_id, finished_at (UTC timestamp), class_id (as text: COCO ids and table
names alike), name, status, threshold, precision, recall, f1, average_precision, n_ground_truth,
and the drift flags: drifted (this class is in the run's `drift.changed`), drift_reasons (its
reasons, comma-separated; empty when none), run_drifted (any class drifted), baseline_run_id;
report (the run's thresholds.json, relative to EVAL_OUTPUT_URI).
"""

from __future__ import annotations

import io
import random
import time

from common import storage
from common.errors import InputDataError, StorageError

HISTORY_NAME = "history.parquet"
HISTORY_CSV_NAME = "history.csv"
COLUMNS = {
    "run_id": "string", "finished_at": "datetime64[ms, UTC]", "class_id": "string", "name": "string",
    "status": "string", "threshold": "float64", "precision": "float64", "recall": "float64", "f1": "float64",
    "average_precision": "float64", "n_ground_truth": "int64", "drifted": "bool", "drift_reasons": "string",
    "run_drifted": "bool", "baseline_run_id": "string", "report": "string",
}
# Conditional writes refused in a row before giving up (74, retried by the Job). Each refusal means
# another run appended in between; a handful is already a crowd for a nightly schedule.
MAX_ATTEMPTS = 20


def history_rows(report: dict, report_path: str | None = None) -> list[dict]:
    """The rows one report contributes (a thresholds.json as a dict), in its class order.

    `report_path`: where the report lies relative to EVAL_OUTPUT_URI (the `report` column).
    """
    drift = report.get("drift") or {}
    reasons = {c.get("class"): c.get("reasons") or [] for c in drift.get("changed") or []}
    run = report["run"]
    return [{
        "run_id": run["id"], "finished_at": run["finished_at"],
        "class_id": None if c.get("class_id") is None else str(c["class_id"]), "name": c["name"],
        "status": c["status"], "threshold": c.get("threshold"), "precision": c.get("precision"),
        "recall": c.get("recall"), "f1": c.get("f1"), "average_precision": c.get("average_precision"),
        "n_ground_truth": c["n_ground_truth"], "drifted": c["name"] in reasons,
        "drift_reasons": ",".join(reasons.get(c["name"], [])), "run_drifted": bool(drift.get("drifted")),
        "baseline_run_id": drift.get("baseline_run_id"), "report": report_path,
    } for c in report["classes"]]


def history_frame(rows: list[dict]):
    """A DataFrame with the history's columns and types (COLUMNS) from `history_rows` dicts."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["finished_at"] = pd.to_datetime(frame["finished_at"], utc=True, format="ISO8601")
    return frame.astype(COLUMNS)


def read_history_frame(output_uri: str):
    """The history under `output_uri` as a DataFrame (empty, with the columns, before any run)."""
    uri = storage.join(output_uri, HISTORY_NAME)
    blob = _read_if_exists(uri)
    return history_frame([]) if blob is None else _parse(blob)


def read_history(output_uri: str) -> list[dict]:
    """The history as plain dicts, oldest run first (for the page): finished_at as ISO 8601 text,
    missing values as None. The same rows as history.parquet."""
    return history_rows_of(read_history_frame(output_uri))


def history_rows_of(frame) -> list[dict]:
    """A history frame's rows as plain dicts, oldest run first (what `read_history` returns)."""
    return _plain_rows(frame.sort_values(["finished_at", "run_id"], kind="stable"))


def history_with_run(output_uri: str, report: dict, report_path: str | None = None, *,
                     rows: list[dict] | None = None) -> list[dict]:
    """`read_history` (or `rows`, when the caller already read it) plus `report`'s own rows when its
    run is not in it yet: what the history will hold once this run has appended (the page is
    written before the report, so before the append)."""
    rows = read_history(output_uri) if rows is None else rows
    if any(r["run_id"] == report["run"]["id"] for r in rows):
        return rows
    return rows + _plain_rows(history_frame(history_rows(report, report_path)))


def _plain_rows(frame) -> list[dict]:
    """Rows as dicts of plain Python values: timestamps as ISO 8601 text, missing values as None."""
    frame = frame.copy()
    for column in frame.columns:
        if str(frame[column].dtype).startswith("datetime64"):
            frame[column] = frame[column].map(lambda t: None if t is None or t != t else t.isoformat(timespec="milliseconds"))
    plain = frame.astype(object)
    return plain.where(frame.notna(), None).to_dict("records")


def append_history(output_uri: str, report: dict, report_path: str, log) -> int:
    """Append `report`'s rows to history.parquet (unless its run is there) and refresh history.csv.

    Returns the number of rows appended (0 when the run was already in the history).
    """
    uri, csv_uri = storage.join(output_uri, HISTORY_NAME), storage.join(output_uri, HISTORY_CSV_NAME)
    rows = history_rows(report, report_path)
    run_id = report["run"]["id"]

    def appended(current: storage.Blob | None) -> bytes | None:
        import pandas as pd

        old = None if current is None else _parse(current)
        if old is not None and (old["run_id"] == run_id).any():
            return None  # a retry of a slot whose rows are in
        new = history_frame(rows)
        frame = new if old is None or old.empty else pd.concat([old, new], ignore_index=True)
        return _parquet_bytes(frame)

    added = len(rows) if _update(uri, appended, content_type="application/vnd.apache.parquet", log=log) else 0

    def as_csv(_current: storage.Blob | None) -> bytes:
        # Read after the CSV's own version was taken: whichever writer succeeds last wrote a CSV of a
        # Parquet file at least as new as every append before its read, so the CSV ends up complete.
        return spreadsheet_safe(read_history_frame(output_uri)).to_csv(
            index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ").encode()

    _update(csv_uri, as_csv, content_type="text/csv; charset=utf-8", log=log)
    log.info("history appended", uri=uri, rows=added, run_id=run_id)
    return added


def spreadsheet_safe(frame):
    """Text cells that a spreadsheet would run as a formula (=, +, -, @, tab, CR first: a class
    named '=HYPERLINK(...)') get a leading apostrophe, as OWASP advises for CSV exports. Only the
    CSV: history.parquet keeps the names as they are."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object or str(frame[column].dtype).startswith("string"):
            text = frame[column]
            risky = text.notna() & text.astype(str).str.match(r"^[=+\-@\t\r]")
            frame[column] = text.where(~risky, "'" + text.astype(str))
    return frame


def _update(uri: str, make, *, content_type: str, log) -> bool:
    """Read `uri`, write `make(current blob or None)` conditionally on what was read; again on a
    refusal. False when `make` returns None (nothing to write)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        current = _read_if_exists(uri)
        data = make(current)
        if data is None:
            return False
        try:
            storage.write(uri, data, content_type=content_type, if_absent=current is None,
                          if_match=None if current is None else current.version)
            return True
        except (storage.AlreadyExists, storage.VersionChanged):
            log.info("history changed while appending; reading it again", uri=uri, attempt=attempt)
            time.sleep(random.uniform(0.0, min(1.0, 0.02 * 2**attempt)))  # spread the racers apart
    raise StorageError(f"{uri}: changed by other runs {MAX_ATTEMPTS} times while appending; giving up")


def _read_if_exists(uri: str) -> storage.Blob | None:
    if not storage.exists(uri):
        return None
    return storage.read(uri)


def _parse(blob: storage.Blob):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # an Arrow reader, read synchronously: no Arrow thread is left holding a Python object at exit
        frame = pq.ParquetFile(pa.BufferReader(bytes(blob.data))).read().to_pandas()
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputDataError(f"{blob.uri}: not a readable Parquet history ({type(exc).__name__}: {exc}); "
                             "move it away to start a new history") from None
    missing = [c for c in ("run_id", "name") if c not in frame.columns]
    if missing:
        raise InputDataError(f"{blob.uri}: history has no column(s) {missing}; is it a history.parquet?")
    return frame


def _parquet_bytes(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
