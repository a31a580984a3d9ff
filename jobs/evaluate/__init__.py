"""Evaluation job: predictions + annotations -> per-class thresholds (`thresholds.json`).

    python -m jobs.evaluate --demo          # the sample shipped in jobs/evaluate/sample/
    EVAL_PREDICTIONS_URI=s3://bucket/preds.csv EVAL_ANNOTATIONS_URI=s3://bucket/gt.json \\
    EVAL_OUTPUT_URI=s3://bucket/reports/run-1 python -m jobs.evaluate
    python -m jobs.evaluate --help          # every EVAL_ variable with its default
"""
