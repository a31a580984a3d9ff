"""Small distributed helpers: one process without torchrun, DDP from torchrun's environment.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; when WORLD_SIZE > 1 the
process group starts with NCCL on CUDA and gloo on CPU. Every helper is a no-op for one process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_int(name: str, default: int, *, minimum: int) -> int:
    """An integer torchrun (or the operator) set, e.g. WORLD_SIZE; ConfigError naming it when it is not one."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def rank_from_env() -> int:
    return env_int("RANK", 0, minimum=0)


def rank_for_logs() -> int | str:
    """RANK for the log context before settings are checked: as given when it is not a number."""
    try:
        return rank_from_env()
    except ConfigError:
        return os.environ.get("RANK", "")


def pick_device(*, preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TRAIN_DEVICE: 'cuda' requested but no CUDA device is available")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(*, device_preference: str) -> DistEnv:
    world_size = env_int("WORLD_SIZE", 1, minimum=1)
    rank, local_rank = rank_from_env(), env_int("LOCAL_RANK", 0, minimum=0)
    if rank >= world_size:
        raise ConfigError(f"RANK: {rank} is not below WORLD_SIZE={world_size}")
    device = pick_device(preference=device_preference, local_rank=local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A generous timeout: rank 0 may spend minutes fetching data before the first collective.
        dist.init_process_group(backend=backend, init_method="env://", timeout=dt.timedelta(minutes=30),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


@contextlib.contextmanager
def local_rank_zero_first(env: DistEnv):
    """Local rank 0 fills a shared cache first; the others then find it there.

    Rank 0 reaches the barrier even when its work fails, so the others are released and meet the
    same error themselves (one exit code on every rank) instead of dying on a broken barrier.
    """
    if env.local_rank != 0:
        barrier(env)
    try:
        yield
    finally:
        if env.local_rank == 0:
            barrier(env)


def all_reduce(tensor: torch.Tensor, env: DistEnv, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """`op` (sum by default, or max) over ranks, on the collective's device; returned on the tensor's own device."""
    if not env.distributed:
        return tensor
    on_device = tensor.to(env.device)
    dist.all_reduce(on_device, op=op)
    return on_device.to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    return all_reduce(tensor, env, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    return all_reduce(tensor, env, dist.ReduceOp.MAX)


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when it is true on one: the agreed stop decision."""
    if not env.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(obj, env: DistEnv):
    """Rank 0's value, on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def gather_rows(rows: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's rows (rank order). Ranks may hold different numbers of rows."""
    if not env.distributed:
        return rows
    counts = [torch.zeros(1, dtype=torch.long, device=env.device) for _ in range(env.world_size)]
    dist.all_gather(counts, torch.tensor([len(rows)], device=env.device))
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=env.device)
    padded[: len(rows)] = rows.to(env.device)
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts)]).to(rows.device)


class StopFlag:
    """Set by SIGTERM; the loop reads it at each step boundary (a handler must not do the work)."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, signum, frame) -> None:
        self.requested = True
