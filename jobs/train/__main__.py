"""Train a CIFAR-10-layout classifier; write checkpoints, weights, metrics and predictions.

One process (CPU or one GPU), no torchrun needed:

    TRAIN_DATA_URI=s3://datasets/cifar-10-python.tar.gz TRAIN_OUTPUT_URI=s3://runs/cifar/r1 \\
        python -m jobs.train

One node, N processes (NCCL on GPUs, gloo on CPU); `jobs.train.torchrun` is torchrun that keeps the
job's exit codes (plain `torchrun` works too, but exits 1 for everything, preemption included):

    python -m jobs.train.torchrun --standalone --nproc_per_node=N -m jobs.train

Several nodes (run on every node; the same rendezvous endpoint and id):

    python -m jobs.train.torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=$HEAD_NODE:29400 --rdzv-id=$JOB_ID -m jobs.train

Pack an image-folder tree (e.g. the JPEG CIFAR-10 zip) into the CIFAR python layout first:

    python -m jobs.train.pack_images ../shared/data/cifar10-jpeg.zip .bench/cifar-10-python.tar.gz

`python -m jobs.train --help` lists every TRAIN_ variable. Outputs under TRAIN_OUTPUT_URI:
`checkpoints/eEEEE-sSSSSSS.pt`, `model.safetensors`, `predictions.parquet`, `annotations.parquet`
(the evaluation job's input: `EVAL_PREDICTIONS_URI=<out>/predictions.parquet
EVAL_ANNOTATIONS_URI=<out>/annotations.parquet python -m jobs.evaluate`) and, last, `metrics.json`.

SIGTERM (Kubernetes preemption): every rank stops at the next step boundary, rank 0 writes a
checkpoint, the job exits 75 (PREEMPTED); rerunning with the same TRAIN_OUTPUT_URI resumes there.
"""

from __future__ import annotations

if __name__ == "__main__":
    # First, before importing torch (seconds): a SIGTERM now is recorded and ends the run with 75
    # once it starts, instead of killing the process by signal (143).
    from common import preemption

    preemption.record_sigterm()

import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from common import storage
from common.cli import make_parser, run_job
from common.errors import ConfigError, Preempted
from common.exitcodes import ExitCode
from common.logs import configure_logging
from common.provenance import code_version, library_versions, utc_now
from common.settings import public_config
from jobs.train.checkpoint import (checkpoint_uri, latest_checkpoint, load_checkpoint, restore_checkpoint,
                                   rng_states, save_checkpoint)
from jobs.train.data import CifarData, load_cifar
from jobs.train.distributed import (DistEnv, StopFlag, barrier, broadcast_object, init_distributed,
                                    local_rank_zero_first, rank_for_logs, shutdown)
from jobs.train.loop import (BN_RECALIBRATE_BELOW, DivergenceGuard, StepRecipe, epoch_order, make_optimizer,
                             make_scheduler, predict_all, recalibrate_batchnorm, reduce_totals, steps_per_epoch,
                             train_one_epoch, warmup_steps)
from jobs.train.metrics import classification_summary, parquet_bytes, prediction_tables
from jobs.train.models import build_model, load_pretrained
from jobs.train.settings import TrainSettings, effective_lr

EVAL_BATCH = 1000  # images per forward pass when predicting; memory only, not results
TRAIN_ACCURACY_IMAGES = 10_000  # the train accuracy (generalisation gap) is measured on a fixed sample


def main(argv: list[str] | None = None) -> int:
    make_parser(prog="python -m jobs.train", settings_cls=TrainSettings, summary=__doc__).parse_args(argv)
    return run_job(job="train", settings_cls=TrainSettings, work=train, context={"rank": rank_for_logs()})


def train(settings: TrainSettings, run_id: str, log) -> int:
    stop = StopFlag()  # before anything slow, so an early SIGTERM is not lost
    if settings.threads:
        torch.set_num_threads(settings.threads)
    env = init_distributed(device_preference=settings.device)
    try:
        run_id = broadcast_object(run_id, env)  # one run id on every rank's log lines
        log = configure_logging(job="train", run_id=run_id, level=settings.log_level if env.is_main else "warning",
                                rank=env.rank, world_size=env.world_size)
        started = utc_now()
        with local_rank_zero_first(env):  # a shared download cache is filled once per node
            data = load_cifar(data_uri=settings.data_uri, cache_dir=Path(settings.cache_dir),
                              max_extracted_bytes=settings.max_extracted_bytes,
                              download_url=settings.download_url, expected_sha256=settings.data_sha256, log=log)
        images, labels = data.train_images.to(env.device), data.train_labels.to(env.device)
        steps = steps_per_epoch(n=len(labels), batch_size=settings.batch_size, world_size=env.world_size)
        plan = run_plan(settings=settings, steps=steps, num_classes=len(data.classes), env=env)
        raw_model, model = build_network(settings=settings, num_classes=len(data.classes), env=env, log=log)
        optimizer = make_optimizer(raw_model, name=settings.optimizer, lr=plan["lr"], momentum=settings.momentum,
                                   weight_decay=settings.weight_decay)
        scheduler = make_scheduler(optimizer, schedule=settings.schedule, total_steps=plan["total_steps"],
                                   warmup=plan["warmup_steps"])
        position = resume(output_uri=settings.output_uri, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                          plan=plan, env=env, log=log)
        recipe = step_recipe(settings=settings, num_classes=len(data.classes), env=env)
        guard = DivergenceGuard(num_classes=len(data.classes), factor=settings.divergence_factor,
                                patience=settings.divergence_steps, device=env.device)
        log.info("training", device=str(env.device), start_epoch=position["epoch"] + 1, start_step=position["step"],
                 **{k: v for k, v in plan.items() if k != "seed"})

        for epoch in range(position["epoch"], settings.epochs):
            order = epoch_order(n=len(labels), seed=settings.seed, epoch=epoch, env=env)
            # Rank 0 carries an interrupted epoch's summed totals; the epoch-end all_reduce adds the rest.
            totals = position["totals"].to(env.device) if env.is_main else torch.zeros_like(position["totals"], device=env.device)
            began = time.perf_counter()
            reached = train_one_epoch(model=model, optimizer=optimizer, scheduler=scheduler, images=images,
                                      labels=labels, order=order, epoch=epoch, start_step=position["step"],
                                      steps=steps, totals=totals, recipe=recipe, env=env, stop=stop,
                                      log_every=settings.log_every, guard=guard, log=log)
            seconds = position["seconds"] + time.perf_counter() - began
            if reached < steps:
                checkpoint_and_stop(settings=settings, raw_model=raw_model, optimizer=optimizer, scheduler=scheduler,
                                    epoch=epoch, step=reached, history=position["history"], plan=plan,
                                    totals=reduce_totals(totals, env), seconds=seconds, env=env, log=log)
            if plan["bn_recalibration_batches"]:
                # Also what the final model's predictions below (and the checkpoint) use.
                recalibrate_batchnorm(model=raw_model, images=images, order=order, batch_size=settings.batch_size,
                                      batches=plan["bn_recalibration_batches"], env=env,
                                      channels_last=recipe.channels_last)
            test = evaluate(model=raw_model, images=data.test_images, labels=data.test_labels, classes=data.classes,
                            env=env, recipe=recipe)
            position["history"].append(epoch_record(epoch=epoch, totals=reduce_totals(totals, env), test=test,
                                                    seconds=seconds, lr=scheduler.get_last_lr()[0]))
            log.info("epoch", **position["history"][-1])
            position.update(step=0, seconds=0.0, totals=torch.zeros(3, dtype=torch.float64))
            if is_checkpoint_epoch(epoch=epoch, every=settings.checkpoint_every, epochs=settings.epochs):
                save_on_main(checkpoint_uri(settings.output_uri, epoch=epoch + 1, step=0), env=env, log=log,
                             state=training_state(raw_model=raw_model, optimizer=optimizer, scheduler=scheduler,
                                                  settings=settings, epoch=epoch + 1, step=0, plan=plan,
                                                  history=position["history"], env=env))

        test_logits = predict_all(model=raw_model, images=data.test_images.to(env.device), env=env,
                                  batch_size=EVAL_BATCH, autocast_dtype=recipe.autocast_dtype,
                                  channels_last=recipe.channels_last)
        train_sample = train_accuracy_sample(n=len(labels), seed=settings.seed)
        train_logits = predict_all(model=raw_model, images=images[train_sample.to(env.device)], env=env,
                                   batch_size=EVAL_BATCH, autocast_dtype=recipe.autocast_dtype,
                                   channels_last=recipe.channels_last)
        if env.is_main:
            write_outputs(settings=settings, raw_model=raw_model, data=data, test_logits=test_logits,
                          train_logits=train_logits, train_sample=train_sample, history=position["history"],
                          env=env, run_id=run_id, started=started, resumed_from=position["resumed_from"], plan=plan,
                          log=log)
        barrier(env)
        return ExitCode.OK
    finally:
        shutdown()


# --- setup -------------------------------------------------------------------------------------


def build_network(*, settings: TrainSettings, num_classes: int, env: DistEnv, log) -> tuple[nn.Module, nn.Module]:
    """(the model itself, what the loop calls: DDP-wrapped and/or compiled). Same weights on every rank."""
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN time and keep the fastest kernels
    torch.manual_seed(settings.seed)
    raw = build_model(name=settings.model, num_classes=num_classes)
    if settings.pretrained_uri:
        load_pretrained(raw, uri=settings.pretrained_uri, log=log)
    raw = raw.to(env.device, memory_format=torch.channels_last if settings.channels_last else torch.contiguous_format)
    model = raw
    if env.distributed:
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if settings.compile:
        model = torch.compile(model)
    return raw, model


def run_plan(*, settings: TrainSettings, steps: int, num_classes: int, env: DistEnv) -> dict:
    """The effective numbers of this run: logged, in metrics.json, and what a checkpoint must match to resume."""
    global_batch = settings.batch_size * env.world_size
    lr, lr_rule = effective_lr(settings, global_batch=global_batch)
    total = settings.epochs * steps
    warmup = warmup_steps(warmup_epochs=settings.warmup_epochs, steps_per_epoch=steps, total_steps=total,
                          min_steps=settings.warmup_min_steps)
    has_bn = settings.model in ("resnet9", "resnet18")
    return {
        "model": settings.model, "num_classes": num_classes, "epochs": settings.epochs, "steps_per_epoch": steps,
        "total_steps": total, "global_batch": global_batch, "lr": lr, "lr_rule": lr_rule,
        "weight_decay": settings.weight_decay, "schedule": settings.schedule, "warmup_steps": warmup,
        "bn_recalibration_batches": settings.bn_recalibration_batches if has_bn and steps < BN_RECALIBRATE_BELOW else 0,
        "seed": settings.seed,
    }


def step_recipe(*, settings: TrainSettings, num_classes: int, env: DistEnv) -> StepRecipe:
    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if env.device.type == "cuda" else "fp32"
    return StepRecipe(
        batch_size=settings.batch_size, num_classes=num_classes, augment=tuple(settings.augment),
        crop_padding=settings.crop_padding, cutout_size=settings.cutout_size, mixup_alpha=settings.mixup_alpha,
        label_smoothing=settings.label_smoothing, autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
        channels_last=settings.channels_last, seed=settings.seed,
    )


# --- checkpoints -------------------------------------------------------------------------------


def training_state(*, raw_model: nn.Module, optimizer, scheduler, settings: TrainSettings, epoch: int, step: int,
                   history: list[dict], env: DistEnv, plan: dict, totals: torch.Tensor | None = None,
                   seconds: float = 0.0) -> dict:
    return {
        "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "step": step, "world_size": env.world_size, "model_name": settings.model,
        "seed": settings.seed, "history": history, "rng": rng_states(), "seconds": seconds, "plan": plan,
        "totals": (totals if totals is not None else torch.zeros(3, dtype=torch.float64)).cpu(),
    }


def save_on_main(uri: str, *, state: dict, env: DistEnv, log) -> None:
    if env.is_main:
        save_checkpoint(uri, state)
        log.info("checkpoint written", uri=uri)
    barrier(env)


def checkpoint_and_stop(*, settings: TrainSettings, raw_model, optimizer, scheduler, epoch: int, step: int,
                        history: list[dict], plan: dict, totals: torch.Tensor, seconds: float, env: DistEnv,
                        log) -> None:
    """The agreed SIGTERM path: rank 0 checkpoints the exact position, every rank exits PREEMPTED."""
    uri = checkpoint_uri(settings.output_uri, epoch=epoch, step=step)
    save_on_main(uri, env=env, log=log,
                 state=training_state(raw_model=raw_model, optimizer=optimizer, scheduler=scheduler, settings=settings,
                                      epoch=epoch, step=step, history=history, env=env, plan=plan, totals=totals,
                                      seconds=seconds))
    raise Preempted(f"stopped by SIGTERM at epoch {epoch + 1} step {step}; checkpoint {uri}; rerun to resume")


def resume(*, output_uri: str, model: nn.Module, optimizer, scheduler, plan: dict, env: DistEnv, log) -> dict:
    """Load the latest checkpoint under the output prefix, if any; return the position to start from.

    The checkpoint is validated against this run first (`restore_checkpoint`): one that does not fit
    is an input error (65) naming what differs, never a traceback or a silently different run.
    """
    fresh = {"epoch": 0, "step": 0, "history": [], "totals": torch.zeros(3, dtype=torch.float64),
             "seconds": 0.0, "resumed_from": None}
    uri = latest_checkpoint(output_uri)
    if uri is None:
        return fresh
    state = restore_checkpoint(load_checkpoint(uri), uri=uri, model=model, optimizer=optimizer, scheduler=scheduler,
                               plan=plan)
    position = {**fresh, "epoch": state["epoch"], "step": state["step"], "history": state["history"],
                "totals": state["totals"], "seconds": float(state["seconds"]), "resumed_from": uri}
    if state["world_size"] != env.world_size and state["step"]:
        # The shards of a half-done epoch depend on the world size: redo that epoch's remainder from
        # its start rather than skip or repeat unknown samples.
        log.warning("world size changed mid-epoch; restarting the epoch's data order", was=state["world_size"],
                    now=env.world_size)
        position.update(step=0, totals=torch.zeros(3, dtype=torch.float64), seconds=0.0)
    log.info("resumed", uri=uri, epoch=position["epoch"] + 1, step=position["step"])
    return position


def is_checkpoint_epoch(*, epoch: int, every: int, epochs: int) -> bool:
    # The last epoch always checkpoints: a rerun of a finished run then only rewrites the outputs.
    return epoch + 1 == epochs or (every > 0 and (epoch + 1) % every == 0)


# --- evaluation and outputs --------------------------------------------------------------------


def evaluate(*, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: list[str], env: DistEnv,
             recipe: StepRecipe) -> dict:
    logits = predict_all(model=model, images=images.to(env.device), env=env, batch_size=EVAL_BATCH,
                         autocast_dtype=recipe.autocast_dtype, channels_last=recipe.channels_last)
    return classification_summary(logits=logits, labels=labels, classes=classes)


def train_accuracy_sample(*, n: int, seed: int) -> torch.Tensor:
    """Indices of up to TRAIN_ACCURACY_IMAGES training images: a clean (unaugmented) eval-mode pass over
    all 50,000 would cost as much as an epoch on CPU, and 10,000 pins the accuracy to about +-0.5%."""
    if n <= TRAIN_ACCURACY_IMAGES:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:TRAIN_ACCURACY_IMAGES].sort().values


def epoch_record(*, epoch: int, totals: torch.Tensor, test: dict, seconds: float, lr: float) -> dict:
    loss_sum, correct, seen = totals.tolist()
    return {
        "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy_running": correct / max(seen, 1),
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "seconds": round(seconds, 3),
        "images_per_second": round(seen / seconds, 1) if seconds > 0 else None, "lr": lr,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def write_outputs(*, settings: TrainSettings, raw_model: nn.Module, data: CifarData, test_logits: torch.Tensor,
                  train_logits: torch.Tensor, train_sample: torch.Tensor, history: list[dict], env: DistEnv,
                  run_id: str, started: str, resumed_from: str | None, plan: dict, log) -> None:
    """Weights, the evaluation job's tables, then metrics.json last: its presence means a complete run."""
    from safetensors.torch import save

    test = classification_summary(logits=test_logits, labels=data.test_labels, classes=data.classes)
    train = classification_summary(logits=train_logits, labels=data.train_labels[train_sample], classes=data.classes)
    weights = {k: v.detach().contiguous().cpu() for k, v in raw_model.state_dict().items()}
    out = {name: storage.join(settings.output_uri, name)
           for name in ("model.safetensors", "predictions.parquet", "annotations.parquet", "metrics.json")}
    storage.write(out["model.safetensors"], save(weights, metadata={"model": settings.model, "classes": json.dumps(data.classes)}))
    predictions, annotations = prediction_tables(logits=test_logits, labels=data.test_labels, classes=data.classes)
    storage.write(out["predictions.parquet"], parquet_bytes(predictions))
    storage.write(out["annotations.parquet"], parquet_bytes(annotations))
    metrics = {
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "train_accuracy": train["accuracy"], "train_loss": train["loss"],
        "generalization_gap": train["accuracy"] - test["accuracy"],
        "train_accuracy_images": len(train_sample),
        "per_class_accuracy": test["per_class_accuracy"], "confusion_matrix": test["confusion_matrix"],
        "epochs_completed": len(history), "world_size": env.world_size,
        "global_batch_size": settings.batch_size * env.world_size, "epochs": history,
        "effective": {k: v for k, v in plan.items() if k not in ("model", "seed")},  # lr, its rule, warm-up steps, ...
        "train_seconds": round(sum(h["seconds"] for h in history), 3),
        "outputs": out,
        "provenance": {
            "run_id": run_id, "code_version": code_version(),
            "libraries": library_versions("torch", "torchvision", "numpy", "safetensors", "pyarrow"),
            "device": device_name(env.device), "data_uri": settings.data_uri, "data_sha256": data.sha256,
            "resumed_from": resumed_from, "config": public_config(settings), "started_at": started,
            "finished_at": utc_now(), "command": " ".join(sys.argv),
        },
    }
    storage.write(out["metrics.json"], json.dumps(metrics, indent=2).encode(), content_type="application/json")
    log.info("done", test_accuracy=round(test["accuracy"], 4), test_loss=round(test["loss"], 4),
             train_accuracy=round(train["accuracy"], 4), metrics=out["metrics.json"])


if __name__ == "__main__":
    sys.exit(main())
