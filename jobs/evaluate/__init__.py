"""Evaluation job: predictions + annotations -> per-class thresholds (`thresholds.json`).

    python -m jobs.evaluate --demo          # the sample shipped in jobs/evaluate/sample/
    EVAL_PREDICTIONS_URI=s3://bucket/preds.csv EVAL_ANNOTATIONS_URI=s3://bucket/gt.json \\
    EVAL_OUTPUT_URI=s3://bucket/reports/run-1 python -m jobs.evaluate
    python -m jobs.evaluate --help          # every EVAL_ variable with its default

Scheduled (CronJob): each run writes <prefix>/runs/$RUN_ID/{thresholds.json,index.html},
compares with the previous run, moves <prefix>/latest.json, appends its classes to
<prefix>/history.parquet (and history.csv), and exits 3 when thresholds drifted:

    RUN_ID=nightly-29000000 EVAL_OUTPUT_URI=s3://bucket/reports/nightly EVAL_OUTPUT_LAYOUT=runs \\
    EVAL_BASELINE_URI=latest EVAL_CALIBRATION=temperature EVAL_HOLDOUT_FRACTION=0.3 EVAL_BOOTSTRAP=200 \\
    EVAL_PREDICTIONS_URI=... EVAL_ANNOTATIONS_URI=... python -m jobs.evaluate
"""
