"""Where a run's files go, and the `latest.json` pointer that scheduled runs share.

Layout 'flat' writes into EVAL_OUTPUT_URI and replaces what is there (a manual run).
Layout 'runs' (a CronJob) writes into EVAL_OUTPUT_URI/runs/<run id>/ and then points
EVAL_OUTPUT_URI/latest.json at the report. Either way a run's files are staged where they
replace nothing, and the report is its commit: a run that fails before the report is written
leaves what a reader finds (thresholds.json, index.html, the plots they name) the previous run's.

  1. plots, each a whole file (one PUT / a rename), under this run's own folder: flat,
     EVAL_OUTPUT_URI/artifacts/<run id>-<random>/plots/; runs, the run's prefix. Flat: when a
     later step fails they are deleted again (best effort: they are named by nothing). Earlier
     runs' artifacts folders stay (the previous report names its own; remove old ones with a
     lifecycle rule);
  2. thresholds.json: the commit point of the run. Flat: one PUT replacing the previous report.
     Runs: a conditional write (if absent). A run id
     is one schedule slot, so a second run for the same slot (a retry, or a duplicate) can never
     replace the first one's report; it finds the report there and stops (see job.run);
  3. index.html beside the report (it links the report and this run's plots), only after it;
  4. latest.json, a single PUT of {run_id, report (relative), ...}, only after the report exists,
     and only when the pointed report finished no later than this one (a late retry of an older
     slot never moves the pointer back). The pointer therefore always names a complete report.
     The PUT is conditional on the pointer version that was compared (S3 If-Match / If-None-Match;
     on disk a compare-and-rename under a lock): when another run moved it in between, the
     comparison is made again with what it wrote, so two slots finishing at once leave it at the
     later one;
  5. history.parquet / history.csv: the run's classes appended (jobs/evaluate/history.py), with
     the same conditional writes, so concurrent appends never lose rows.

A retry that starts after the slot's report exists writes nothing (job.run checks first) but the
history rows it may lack. Two attempts of one slot running at the same time can both write plots
and index.html: each file is whole, and both come from the same slot's inputs (PNG bytes carry no
timestamp), but the page may be the later attempt's while thresholds.json is the first one's.
Readers take a run as complete once its thresholds.json exists, and find complete runs through
latest.json.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from common import storage
from common.errors import ConfigError, StorageError
from jobs.evaluate.drift import POINTER_KIND

REPORT_NAME = "thresholds.json"
POINTER_NAME = "latest.json"
RUNS_FOLDER = "runs"
POINTER_ATTEMPTS = 20  # conditional writes refused in a row (each one: another run moved the pointer)
ARTIFACTS_FOLDER = "artifacts"  # flat layout: artifacts/<run id>/plots/...
SAFE_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,199}$")


@dataclass(frozen=True)
class Destination:
    root: str  # EVAL_OUTPUT_URI
    prefix: str  # this run's folder
    report_uri: str
    pointer_uri: str | None  # runs layout only
    conditional: bool  # the report is written only if absent
    staging: str = ""  # this run's own folder for plots, relative to `prefix` ("" when `prefix` is already)


def destination(output_uri: str, layout: str, run_id: str) -> Destination:
    if not SAFE_RUN_ID.match(run_id) or ".." in run_id:
        raise ConfigError(f"RUN_ID {run_id!r} cannot name a folder; use letters, digits and . _ - : + = @")
    if layout == "flat":
        return Destination(output_uri, output_uri, storage.join(output_uri, REPORT_NAME), None, False,
                           staging=f"{ARTIFACTS_FOLDER}/{run_id}-{secrets.token_hex(4)}")  # unique if RUN_ID repeats
    prefix = storage.join(output_uri, RUNS_FOLDER, run_id)
    return Destination(output_uri, prefix, storage.join(prefix, REPORT_NAME), storage.join(output_uri, POINTER_NAME), True)


def latest_report_uri(output_uri: str, layout: str) -> str | None:
    """What EVAL_BASELINE_URI=latest means: the pointer ('runs') or the report in place ('flat')."""
    uri = storage.join(output_uri, POINTER_NAME if layout == "runs" else REPORT_NAME)
    return uri if storage.exists(uri) else None


def pointer_document(dest: Destination, report: dict) -> dict:
    relative = dest.report_uri[len(dest.root.rstrip("/")) + 1:]
    index = (report.get("artifacts") or {}).get("index")
    return {
        "kind": POINTER_KIND,
        "run_id": report["run"]["id"],
        "report": relative,
        "report_uri": dest.report_uri,
        "index": None if index is None else storage.join(dest.prefix, index)[len(dest.root.rstrip("/")) + 1:],
        "finished_at": report["run"]["finished_at"],
        "drifted": bool((report.get("drift") or {}).get("drifted")),
    }


def update_pointer(dest: Destination, report: dict, log) -> bool:
    """Point latest.json at `report` unless it names one that finished later. True when written."""
    if dest.pointer_uri is None:
        return False
    new = pointer_document(dest, report)
    for attempt in range(1, POINTER_ATTEMPTS + 1):
        blob = storage.read(dest.pointer_uri) if storage.exists(dest.pointer_uri) else None
        if blob is not None:
            try:
                current = json.loads(blob.data)
                current_finished = str(current["finished_at"])
            except (ValueError, KeyError, TypeError):
                current, current_finished = None, ""  # unreadable: replace it
            if current is not None and current.get("report") != new["report"] and current_finished > new["finished_at"]:
                log.info("latest pointer kept", pointer=dest.pointer_uri, points_to=current.get("run_id"),
                         reason="it names a report that finished later")
                return False
        try:
            storage.write(dest.pointer_uri, json.dumps(new, indent=2).encode(), content_type="application/json",
                          if_absent=blob is None, if_match=None if blob is None else blob.version)
        except (storage.AlreadyExists, storage.VersionChanged):
            log.info("latest pointer moved by another run; comparing again", pointer=dest.pointer_uri, attempt=attempt)
            continue
        log.info("latest pointer updated", pointer=dest.pointer_uri, run_id=new["run_id"])
        return True
    raise StorageError(f"{dest.pointer_uri}: moved by other runs {POINTER_ATTEMPTS} times while updating; giving up")
