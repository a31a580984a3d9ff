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


# --- validation against the run ------------------------------------------------------------------

# What a checkpoint's plan must share with this run's to resume it: a different value would make the
# resumed run silently a different recipe (another schedule, another LR, other weights' shapes).
MUST_MATCH = {
    "model": "TRAIN_MODEL", "num_classes": "the data's classes", "epochs": "TRAIN_EPOCHS",
    "steps_per_epoch": "steps an epoch (data size, TRAIN_BATCH_SIZE x world size)", "total_steps": "TRAIN_EPOCHS",
    "lr": "the peak learning rate (TRAIN_LR / TRAIN_BASE_LR / the global batch)", "schedule": "TRAIN_SCHEDULE",
    "warmup_steps": "the warm-up (TRAIN_WARMUP_EPOCHS / TRAIN_WARMUP_MIN_STEPS)", "seed": "TRAIN_SEED",
}
REQUIRED = {"model": dict, "optimizer": dict, "scheduler": dict, "epoch": int, "step": int, "world_size": int,
            "history": list, "rng": dict, "seconds": (int, float), "totals": torch.Tensor, "plan": dict}


def restore_checkpoint(state, *, uri: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                       plan: dict) -> dict:
    """Check `state` against this run, then load it into model, optimizer, scheduler and the RNGs.

    Refused (InputDataError, exit 65), each naming the checkpoint and what is wrong: a missing or
    mistyped field, a plan that differs from this run's (`MUST_MATCH`), a position outside the run
    (epoch in [0, epochs], step in [0, steps an epoch), a history of `epoch` records, a scheduler at
    step epoch x steps + step), tensors whose names or shapes differ from the model's, an optimizer
    state that does not fit the parameters, RNG states that do not restore.
    """
    def refuse(why: str):
        raise InputDataError(f"{uri}: checkpoint does not fit this run: {why}; resume with the settings that wrote "
                             "it, or use a new TRAIN_OUTPUT_URI")

    if not isinstance(state, dict):
        refuse(f"holds a {type(state).__name__}, not a dict")
    for key, kind in REQUIRED.items():
        if key not in state:
            refuse(f"no {key!r}")
        if not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool)):
            refuse(f"{key!r} is a {type(state[key]).__name__}")
    for key, setting in MUST_MATCH.items():
        if state["plan"].get(key) != plan[key]:
            refuse(f"{key} was {state['plan'].get(key)!r}, this run has {plan[key]!r} ({setting})")
    epoch, step, steps = state["epoch"], state["step"], plan["steps_per_epoch"]
    if not (0 <= epoch <= plan["epochs"] and 0 <= step < steps and not (epoch == plan["epochs"] and step)):
        refuse(f"position epoch {epoch} step {step} is outside a run of {plan['epochs']} epochs of {steps} steps")
    if len(state["history"]) != epoch or not all(isinstance(h, dict) for h in state["history"]):
        refuse(f"{len(state['history'])} epoch records for {epoch} epochs done")
    if state["scheduler"].get("last_epoch") != epoch * steps + step:
        refuse(f"scheduler at step {state['scheduler'].get('last_epoch')!r}, position says {epoch * steps + step}")
    if state["totals"].shape != (3,):
        refuse(f"'totals' has shape {tuple(state['totals'].shape)}, expected (3,)")

    own = model.state_dict()
    given = state["model"]
    for name in sorted(set(own) | set(given)):
        if name not in given or name not in own:
            refuse(f"model tensor {name!r} is {'missing' if name not in given else 'not in this model'}")
        if not isinstance(given[name], torch.Tensor) or given[name].shape != own[name].shape:
            shape = tuple(given[name].shape) if isinstance(given[name], torch.Tensor) else type(given[name]).__name__
            refuse(f"model tensor {name!r} has shape {shape}, the model's is {tuple(own[name].shape)}")
    model.load_state_dict(given)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        refuse(f"optimizer/scheduler state: {type(exc).__name__}: {exc}")
    for group in optimizer.param_groups:  # load_state_dict does not check the buffers' shapes
        for param in group["params"]:
            for name, buffer in optimizer.state.get(param, {}).items():
                if isinstance(buffer, torch.Tensor) and buffer.dim() and buffer.shape != param.shape:
                    refuse(f"optimizer {name} of shape {tuple(buffer.shape)} for a parameter of {tuple(param.shape)}")
    try:
        restore_rng_states(state["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
        refuse(f"RNG states: {type(exc).__name__}: {exc}")
    return state
