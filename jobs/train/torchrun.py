"""torchrun, with the job's exit codes: use it as the container command for multi-process training.

    python -m jobs.train.torchrun --standalone --nproc_per_node=N -m jobs.train
    python -m jobs.train.torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=$HEAD_NODE:29400 --rdzv-id=$JOB_ID -m jobs.train

The arguments are torchrun's. Plain torchrun exits 1 for everything: on SIGTERM it forwards the
signal to the workers (which checkpoint and exit 75), waits for them, and then dies with a
`SignalException`; when a worker fails it exits 1 whatever the worker's code. Kubernetes'
podFailurePolicy needs the job's codes, so this wrapper exits:
- 75 (PREEMPTED) when torchrun was stopped by SIGTERM: the workers checkpointed, a rerun resumes;
- the workers' exit code when those that exited (rather than being killed by torchrun's clean-up)
  all failed with the same one of the job's codes (e.g. 65 for bad input data, 78 for bad
  configuration), so that a hopeless input is not retried;
- otherwise what torchrun would have.
"""

from __future__ import annotations

import signal
import sys

from common.exitcodes import ExitCode


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(sys.argv[1:] if argv is None else argv)
    except SignalException as exc:
        if exc.sigval == signal.SIGTERM:
            print("torchrun stopped by SIGTERM after the workers checkpointed; exit 75 (PREEMPTED)", file=sys.stderr)
            return ExitCode.PREEMPTED
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        # Negative codes are workers killed by a signal: torchrun's own clean-up of the survivors.
        codes = {failure.exitcode for failure in exc.failures.values() if failure.exitcode >= 0}
        if len(codes) == 1 and (code := codes.pop()) in {int(c) for c in ExitCode}:
            return code
        return ExitCode.FAILURE
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
