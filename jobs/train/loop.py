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

from common.errors import JobError
from common.exitcodes import ExitCode
from jobs.train.augment import augment_batch, normalize, step_seed
from jobs.train.distributed import DistEnv, StopFlag, all_reduce_max, all_reduce_sum, any_rank, gather_rows


STOP_CHECK_GPU = 8
BN_RECALIBRATE_BELOW = 50  # steps an epoch: with fewer, BatchNorm's running averages (momentum 0.1) lag the weights


class Diverged(JobError):
    """The training loss became non-finite or stayed far above a fresh classifier's: a rerun diverges again."""

    exit_code = ExitCode.DIVERGED


class DivergenceGuard:
    """Watches the per-step training loss on the device; `check()` agrees across ranks and raises `Diverged`.

    The bound is `factor` x ln(K): a fresh K-class classifier guesses uniformly and starts at ln(K)
    (2.30 for 10 classes), so a loss that stays above twice that for `patience` steps in a row is
    not learning. A non-finite loss stops at once. The state lives on the device (no host sync per
    step); `check` syncs it, which the loop does where it already agrees on SIGTERM.
    """

    def __init__(self, *, num_classes: int, factor: float, patience: int, device: torch.device):
        self.bound = factor * math.log(num_classes) if factor > 0 else math.inf
        self.patience = patience
        # [first non-finite step + 1 (0: none), current streak above the bound, its first step + 1]
        self.state = torch.zeros(3, dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, *, step: int) -> None:
        value = loss.detach().double()
        nonfinite = ~torch.isfinite(value)
        above = (value > self.bound) | nonfinite
        first_bad = torch.where(nonfinite & (self.state[0] == 0), step + 1.0, self.state[0])
        streak = torch.where(above, self.state[1] + 1, torch.zeros_like(value))
        since = torch.where(above & (self.state[1] == 0), step + 1.0, torch.where(above, self.state[2], torch.zeros_like(value)))
        self.state = torch.stack([first_bad, streak, since])

    def check(self, *, env: DistEnv, epoch: int, lr: float, loss: torch.Tensor) -> None:
        state = all_reduce_max(self.state.clone(), env).tolist()
        if state[0]:
            raise Diverged(f"training loss became non-finite ({float(loss.detach()):g}) at epoch {epoch + 1} step "
                           f"{int(state[0])} with learning rate {lr:.4g}; the last good checkpoint is kept. "
                           "Lower TRAIN_LR (or TRAIN_BASE_LR) or lengthen TRAIN_WARMUP_EPOCHS")
        if state[1] >= self.patience:
            raise Diverged(f"training loss above {self.bound:.3g} (TRAIN_DIVERGENCE_FACTOR x ln classes) for "
                           f"{int(state[1])} steps since epoch {epoch + 1} step {int(state[2])} (now {float(loss.detach()):.4g}, "
                           f"learning rate {lr:.4g}); the last good checkpoint is kept. Lower TRAIN_LR (or "
                           "TRAIN_BASE_LR) or lengthen TRAIN_WARMUP_EPOCHS")


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


WARMUP_MAX_SHARE = 0.25  # of the run's optimizer steps: the rest is the schedule's way down


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based, the step about to be taken).

    Warm-up: (step + 1) / warmup_steps, so the first step already moves and step warmup_steps - 1
    is at the peak (1.0). Then 'none' stays at 1.0, 'cosine' follows 0.5 (1 + cos(pi p)) and
    'onecycle' 1 - p, with p the share of the post-warm-up steps done; both would reach 0 at step
    `total_steps`, one past the last.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress  # onecycle: the linear way down after the linear way up


def warmup_steps(*, warmup_epochs: float, steps_per_epoch: int, total_steps: int, min_steps: int) -> int:
    """The warm-up in optimizer steps: `warmup_epochs` worth, at least `min_steps`, at most a quarter of the run.

    Counting steps, not epochs, keeps the warm-up a warm-up when an epoch is a few steps (a small
    data set or a large batch); the cap keeps the shape (up, then down) when TRAIN_EPOCHS shortens the run.
    """
    if warmup_epochs <= 0:
        return 0
    wanted = max(int(round(warmup_epochs * steps_per_epoch)), min_steps)
    return max(1, min(wanted, int(WARMUP_MAX_SHARE * total_steps)))


def make_scheduler(optimizer: torch.optim.Optimizer, *, schedule: str, total_steps: int,
                   warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: its state (last_epoch = steps taken) goes into the checkpoint, the shape is `lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, total_steps=total_steps, warmup_steps=warmup, schedule=schedule)
    )


def to_model_input(x: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, images: torch.Tensor,
                    labels: torch.Tensor, order: torch.Tensor, epoch: int, start_step: int, steps: int,
                    totals: torch.Tensor, recipe: StepRecipe, env: DistEnv, stop: StopFlag, log_every: int,
                    guard: DivergenceGuard, log) -> int:
    """Train from `start_step` to the end of the epoch or to an agreed stop; return the step reached.

    `totals` (float64 [loss_sum, correct, seen], on the device) accumulates in place, so a
    checkpoint can carry an unfinished epoch's sums. Raises `Diverged` (on every rank at the same
    step) before a diverged state can reach a checkpoint.
    """
    model.train()
    device = images.device
    since, window = time.perf_counter(), torch.zeros(2, dtype=torch.float64, device=device)
    # Agreeing on the stop costs an all_reduce and, on GPUs, a host sync: across several GPUs it is
    # asked every STOP_CHECK_GPU steps (milliseconds each), elsewhere at every step.
    check_every = STOP_CHECK_GPU if env.distributed and device.type == "cuda" else 1
    guard_every = STOP_CHECK_GPU if device.type == "cuda" else 1  # reading the loss syncs the GPU
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
        guard.update(loss, step=step)
        if (step + 1) % guard_every == 0 or step + 1 == steps:
            # Before the update: the weights stay those of the last finite step.
            guard.check(env=env, epoch=epoch, lr=scheduler.get_last_lr()[0], loss=loss)
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


@torch.no_grad()
def recalibrate_batchnorm(*, model: nn.Module, images: torch.Tensor, order: torch.Tensor, batch_size: int,
                          batches: int, env: DistEnv, channels_last: bool) -> int:
    """Recompute every BatchNorm's running mean and variance from `batches` training batches; return how many.

    The batches are this rank's first ones of `order` (the epoch's data order), unaugmented, in train
    mode with momentum None (an exact average over the batches instead of an exponential one), so
    the statistics belong to the current weights only. Ranks then average theirs (equal batch
    counts: the mean of means is the global mean; the variance is the mean of per-rank variances,
    which leaves out the spread of the rank means, tiny for shards of one shuffled set).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = min(batches, len(order) // batch_size)
    if not norms or batches == 0:
        return 0
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    model.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    for b in range(batches):
        idx = order[b * batch_size:(b + 1) * batch_size].to(images.device)
        model(to_model_input(normalize(images[idx]), channels_last=channels_last))
    for m, (momentum, _) in zip(norms, saved):
        m.momentum = momentum
        if env.distributed:
            m.running_mean.copy_(all_reduce_sum(m.running_mean.clone(), env) / env.world_size)
            m.running_var.copy_(all_reduce_sum(m.running_var.clone(), env) / env.world_size)
    model.train(was_training)
    return batches


def reduce_totals(totals: torch.Tensor, env: DistEnv) -> torch.Tensor:
    return all_reduce_sum(totals.clone(), env)
