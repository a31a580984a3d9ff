"""Checkpoints under `<TRAIN_OUTPUT_URI>/checkpoints/`: one dict, written whole, read with weights_only.

A checkpoint is named by the position training resumes from: `e0003-s000017.pt` means three epochs
done and 17 steps of the fourth; an end-of-epoch checkpoint is `e0004-s000000.pt`. The latest
position wins, so "resume" is: list, take the largest name, load.

The dict holds the model, optimizer and scheduler state dicts, the position, the per-epoch
history, the running sums of the unfinished epoch and the RNG states, all as tensors and plain
Python values so that `torch.load(weights_only=True)` reads it and no pickle code runs.
"""

from __future__ import annotations

import io
import random
import re

import numpy as np
import torch

from common import storage
from common.errors import InputDataError

NAME = re.compile(r"^e(?P<epoch>\d{4,})-s(?P<step>\d{6,})\.pt$")


def checkpoint_uri(output_uri: str, *, epoch: int, step: int) -> str:
    return storage.join(output_uri, "checkpoints", f"e{epoch:04d}-s{step:06d}.pt")


def latest_checkpoint(output_uri: str) -> str | None:
    positions = []
    for name in storage.list_names(storage.join(output_uri, "checkpoints")):
        if match := NAME.match(name):
            positions.append((int(match["epoch"]), int(match["step"]), name))
    if not positions:
        return None
    return storage.join(output_uri, "checkpoints", max(positions)[2])


def rng_states() -> dict:
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [version, list(internal), gauss],
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(uri: str, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    storage.write(uri, buffer.getvalue())


def load_checkpoint(uri: str) -> dict:
    data = storage.read(uri).data
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # an UnpicklingError from weights_only, or a truncated file
        raise InputDataError(f"{uri}: not a loadable checkpoint: {exc}") from None
