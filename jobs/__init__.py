"""The batch jobs: `python -m jobs.evaluate` and `python -m jobs.train`."""
