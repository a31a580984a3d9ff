"""The training recipe's moving parts: data order, optimizer, schedule, one epoch, prediction.

Determinism: the data order of an epoch is a permutation seeded by (seed, epoch), cut into one
contiguous shard per rank; each step's augmentation is seeded by (seed, epoch, step, rank). So the
position (epoch, step) alone says what comes next, and a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jobs.train.augment import augment_batch, normalize, step_seed
from jobs.train.distributed import DistEnv, StopFlag, all_reduce_sum, any_rank, gather_rows


STOP_CHECK_GPU = 8


@dataclass(frozen=True)
class StepRecipe:
    """What one training step needs besides the model and the data."""

    batch_size: int
    num_classes: int
    augment: tuple[str, ...]
    crop_padding: int
    cutout_size: int
    mixup_alpha: float
    label_smoothing: float
    autocast_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool
    seed: int


def epoch_order(*, n: int, seed: int, epoch: int, env: DistEnv) -> torch.Tensor:
    """This rank's sample indices for `epoch`: equal-sized contiguous shards of one shared permutation."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)
    per_rank = n // env.world_size
    return order[env.rank * per_rank:(env.rank + 1) * per_rank]


def steps_per_epoch(*, n: int, batch_size: int, world_size: int) -> int:
    # Drop the last partial batch: every rank takes the same number of steps, and BatchNorm
    # never sees a batch of one.
    return max(1, (n // world_size) // batch_size)


def make_optimizer(model: nn.Module, *, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress  # onecycle: the linear way down after the linear way up


def make_scheduler(optimizer: torch.optim.Optimizer, *, schedule: str, epochs: int, steps: int,
                   warmup_epochs: float) -> torch.optim.lr_scheduler.LambdaLR:
    total = epochs * steps
    warmup = int(round(min(warmup_epochs, epochs / 2) * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, total_steps=total, warmup_steps=warmup, schedule=schedule)
    )


def to_model_input(x: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, images: torch.Tensor,
                    labels: torch.Tensor, order: torch.Tensor, epoch: int, start_step: int, steps: int,
                    totals: torch.Tensor, recipe: StepRecipe, env: DistEnv, stop: StopFlag, log_every: int,
                    log) -> int:
    """Train from `start_step` to the end of the epoch or to an agreed stop; return the step reached.

    `totals` (float64 [loss_sum, correct, seen], on the device) accumulates in place, so a
    checkpoint can carry an unfinished epoch's sums.
    """
    model.train()
    device = images.device
    since, window = time.perf_counter(), torch.zeros(2, dtype=torch.float64, device=device)
    # Agreeing on the stop costs an all_reduce and, on GPUs, a host sync: across several GPUs it is
    # asked every STOP_CHECK_GPU steps (milliseconds each), elsewhere at every step.
    check_every = STOP_CHECK_GPU if env.distributed and device.type == "cuda" else 1
    for step in range(start_step, steps):
        if step % check_every == 0 and any_rank(stop.requested, env):  # every rank stops at the same boundary
            return step
        idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size].to(device)
        seed = step_seed(seed=recipe.seed, epoch=epoch, step=step, rank=env.rank)
        x, targets = augment_batch(images[idx], labels[idx], augment=list(recipe.augment),
                                   num_classes=recipe.num_classes, crop_padding=recipe.crop_padding,
                                   cutout_size=recipe.cutout_size, mixup_alpha=recipe.mixup_alpha, seed=seed)
        with torch.autocast(device.type, dtype=recipe.autocast_dtype or torch.float32,
                            enabled=recipe.autocast_dtype is not None):
            logits = model(to_model_input(x, channels_last=recipe.channels_last))
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            n = len(idx)
            correct = (logits.argmax(1) == labels[idx]).sum()
            totals += torch.stack([loss.detach().double() * n, correct.double(), torch.tensor(n, dtype=torch.float64, device=device)])
            window += torch.stack([loss.detach().double() * n, torch.tensor(n, dtype=torch.float64, device=device)])
        if (step + 1) % log_every == 0 and env.is_main:
            elapsed = time.perf_counter() - since
            seen = float(window[1]) * env.world_size
            log.info("train", epoch=epoch + 1, step=step + 1, steps=steps, loss=round(float(window[0] / window[1]), 4),
                     lr=scheduler.get_last_lr()[0], images_per_second=round(seen / elapsed, 1),
                     eta_s=round(elapsed / (float(window[1]) / recipe.batch_size) * (steps - step - 1), 1))
            since, window = time.perf_counter(), torch.zeros_like(window)
    return steps


@torch.no_grad()
def predict(*, model: nn.Module, images: torch.Tensor, batch_size: int, autocast_dtype: torch.dtype | None,
            channels_last: bool) -> torch.Tensor:
    """Logits (N, K) float32 for uint8 images (N, 3, H, W), in eval mode."""
    model.eval()
    out = []
    for chunk in images.split(batch_size):
        with torch.autocast(chunk.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out.append(model(to_model_input(normalize(chunk), channels_last=channels_last)).float())
    return torch.cat(out) if out else torch.zeros((0, 0))


def predict_all(*, model: nn.Module, images: torch.Tensor, env: DistEnv, batch_size: int,
                autocast_dtype: torch.dtype | None, channels_last: bool) -> torch.Tensor:
    """Logits for every image, each rank predicting a strided shard; every rank gets all rows, in order."""
    mine = torch.arange(env.rank, len(images), env.world_size, device=images.device)
    logits = predict(model=model, images=images[mine], batch_size=batch_size,
                     autocast_dtype=autocast_dtype, channels_last=channels_last)
    rows = gather_rows(torch.cat([mine[:, None].float(), logits.float()], 1).cpu(), env)
    # Indices travel as float32: exact below 2**24 images, far beyond CIFAR's 60,000.
    ordered = torch.empty_like(rows[:, 1:])
    ordered[rows[:, 0].long()] = rows[:, 1:]
    return ordered


def reduce_totals(totals: torch.Tensor, env: DistEnv) -> torch.Tensor:
    return all_reduce_sum(totals.clone(), env)
