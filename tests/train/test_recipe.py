"""The training recipe's numbers against their definitions: batch-scaled LR, the per-step schedule
with its warm-up floor, the divergence guard, and checkpoints checked against the run."""

from __future__ import annotations

import math

import pytest
import torch

from common.errors import InputDataError
from common.settings import load_settings
from jobs.train.checkpoint import restore_checkpoint, rng_states
from jobs.train.distributed import DistEnv
from jobs.train.loop import DivergenceGuard, Diverged, lr_factor, make_optimizer, make_scheduler, warmup_steps
from jobs.train.models import build_model
from jobs.train.settings import TrainSettings, effective_lr

CPU = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def settings(monkeypatch, **env) -> TrainSettings:
    for key, value in {"TRAIN_DATA_URI": "data.tar.gz", "TRAIN_OUTPUT_URI": "out", **env}.items():
        monkeypatch.setenv(key, value)
    return load_settings(TrainSettings)


def test_sgd_lr_scales_linearly_with_the_global_batch_and_an_explicit_lr_wins(monkeypatch):
    fast = settings(monkeypatch, TRAIN_PRESET="fast94")
    peak, _ = effective_lr(fast, global_batch=fast.reference_batch)
    assert effective_lr(fast, global_batch=fast.reference_batch // 4)[0] == pytest.approx(peak / 4)
    assert effective_lr(fast, global_batch=fast.reference_batch * 2)[0] == pytest.approx(peak * 2)
    explicit = settings(monkeypatch, TRAIN_PRESET="fast94", TRAIN_LR="0.123")
    assert effective_lr(explicit, global_batch=7)[0] == 0.123


def test_adam_lr_scales_with_the_square_root(monkeypatch):
    base = settings(monkeypatch, TRAIN_PRESET="baseline")
    peak, _ = effective_lr(base, global_batch=base.reference_batch)
    assert effective_lr(base, global_batch=base.reference_batch * 4)[0] == pytest.approx(peak * 2)


def test_schedule_values_at_start_peak_and_end():
    total, warm = 100, 20
    assert lr_factor(0, total_steps=total, warmup_steps=warm, schedule="onecycle") == pytest.approx(1 / 20)
    assert lr_factor(warm - 1, total_steps=total, warmup_steps=warm, schedule="onecycle") == 1.0
    assert lr_factor(warm, total_steps=total, warmup_steps=warm, schedule="cosine") == 1.0
    assert lr_factor(60, total_steps=total, warmup_steps=warm, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(60, total_steps=total, warmup_steps=warm, schedule="onecycle") == pytest.approx(0.5)
    assert lr_factor(total - 1, total_steps=total, warmup_steps=warm, schedule="onecycle") == pytest.approx(1 / 80)
    assert lr_factor(total, total_steps=total, warmup_steps=warm, schedule="cosine") == pytest.approx(0.0)


def test_warmup_has_a_floor_in_steps_and_a_cap_of_a_quarter_of_the_run():
    # 3 steps an epoch (1,437 digits at batch 512): 2 epochs of warm-up would be 6 steps.
    assert warmup_steps(warmup_epochs=2, steps_per_epoch=3, total_steps=72, min_steps=20) == 18  # capped at 72 / 4
    assert warmup_steps(warmup_epochs=2, steps_per_epoch=3, total_steps=300, min_steps=20) == 20  # the floor
    assert warmup_steps(warmup_epochs=2, steps_per_epoch=97, total_steps=97 * 24, min_steps=20) == 194
    assert warmup_steps(warmup_epochs=0, steps_per_epoch=97, total_steps=97 * 24, min_steps=20) == 0


def test_resume_mid_warmup_gives_the_same_learning_rates():
    def fresh():
        model = torch.nn.Linear(2, 2)
        opt = make_optimizer(model, name="sgd", lr=0.4, momentum=0.9, weight_decay=5e-4)
        return opt, make_scheduler(opt, schedule="onecycle", total_steps=50, warmup=10)

    opt, sched = fresh()
    straight = []
    for _ in range(30):
        straight.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    opt, sched = fresh()
    for _ in range(5):
        opt.step()
        sched.step()
    saved = sched.state_dict()
    opt2, sched2 = fresh()
    sched2.load_state_dict(saved)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    resumed = straight[:5]
    for _ in range(25):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == pytest.approx(straight, rel=1e-12)
    assert max(straight) == pytest.approx(0.4) and straight[0] == pytest.approx(0.04)


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_learning_rate():
    guard = DivergenceGuard(num_classes=10, factor=2.0, patience=5, device=torch.device("cpu"))
    for step, loss in enumerate([2.3, 2.2, float("nan"), 2.0]):
        guard.update(torch.tensor(loss), step=step)
    with pytest.raises(Diverged, match=r"non-finite.*step 3 with learning rate 0\.4") as err:
        guard.check(env=CPU, epoch=0, lr=0.4, loss=torch.tensor(2.0))
    assert err.value.exit_code == 4


def test_a_loss_far_above_its_start_for_patience_steps_stops_the_run_and_a_short_spike_does_not():
    bound = 2.0 * math.log(10)
    guard = DivergenceGuard(num_classes=10, factor=2.0, patience=5, device=torch.device("cpu"))
    for step in range(4):
        guard.update(torch.tensor(bound + 1), step=step)
    guard.update(torch.tensor(2.0), step=4)  # back down: the streak resets
    guard.check(env=CPU, epoch=0, lr=0.1, loss=torch.tensor(2.0))
    for step in range(5, 10):
        guard.update(torch.tensor(bound + 1), step=step)
    with pytest.raises(Diverged, match="for 5 steps"):
        guard.check(env=CPU, epoch=0, lr=0.1, loss=torch.tensor(bound + 1))


def checkpoint_and_run():
    torch.manual_seed(0)
    model = build_model(name="simple", num_classes=10)
    opt = make_optimizer(model, name="adam", lr=1e-3, momentum=0.0, weight_decay=0.0)
    sched = make_scheduler(opt, schedule="none", total_steps=40, warmup=0)
    plan = {"model": "simple", "num_classes": 10, "epochs": 4, "steps_per_epoch": 10, "total_steps": 40,
            "lr": 1e-3, "schedule": "none", "warmup_steps": 0, "seed": 0}
    for _ in range(12):
        opt.zero_grad()
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        opt.step()
        sched.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": 1, "step": 2, "world_size": 1, "history": [{}], "rng": rng_states(), "seconds": 1.0,
             "totals": torch.zeros(3), "plan": dict(plan)}
    return state, plan


def restore(state, plan):
    model = build_model(name="simple", num_classes=10)
    opt = make_optimizer(model, name="adam", lr=1e-3, momentum=0.0, weight_decay=0.0)
    sched = make_scheduler(opt, schedule="none", total_steps=40, warmup=0)
    return restore_checkpoint(state, uri="ckpt.pt", model=model, optimizer=opt, scheduler=sched, plan=plan)


def test_a_checkpoint_that_fits_the_run_restores():
    state, plan = checkpoint_and_run()
    assert restore(state, plan)["epoch"] == 1


@pytest.mark.parametrize("corrupt, message", [
    (lambda s: s.update(epoch=999), "outside a run"),
    (lambda s: s.update(epoch=-5), "outside a run"),
    (lambda s: s.pop("optimizer"), "no 'optimizer'"),
    (lambda s: s["model"].update({"7.weight": torch.zeros(3, 3)}), "shape"),
    (lambda s: s.update(rng={"python": "nonsense"}), "RNG"),
    (lambda s: s["plan"].update(epochs=12), "TRAIN_EPOCHS"),
])
def test_a_checkpoint_that_does_not_fit_the_run_is_an_input_error(corrupt, message):
    state, plan = checkpoint_and_run()
    corrupt(state)
    with pytest.raises(InputDataError, match=message):
        restore(state, plan)


def test_batchnorm_recalibration_replaces_stale_statistics_with_the_exact_mean_over_the_batches():
    from torch import nn

    from jobs.train.augment import normalize
    from jobs.train.loop import recalibrate_batchnorm

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), generator=gen, dtype=torch.uint8)
    order = torch.randperm(40, generator=gen)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    bn = model[1]
    bn.running_mean.fill_(100.0)  # stale statistics, as after the weights moved a lot
    bn.running_var.fill_(1e-4)
    model.eval()
    used = recalibrate_batchnorm(model=model, images=images, order=order, batch_size=8, batches=3, env=CPU,
                                 channels_last=False)
    assert used == 3 and not model.training and bn.momentum == 0.1  # mode and momentum restored
    with torch.no_grad():
        feats = [model[0](normalize(images[order[b * 8:(b + 1) * 8]])) for b in range(3)]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    variances = torch.stack([f.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-6)
    assert torch.allclose(bn.running_var, variances, atol=1e-5)
    # More batches than the data holds: bounded by what is there.
    assert recalibrate_batchnorm(model=model, images=images, order=order, batch_size=8, batches=99, env=CPU,
                                 channels_last=False) == 5


@pytest.mark.parametrize(("preset", "extra", "expected"), [
    ("fast94", {"TRAIN_BATCH_SIZE": "128"}, 16),  # 11 steps an epoch on digits-sized data: recalibrated
    ("fast94", {"TRAIN_BATCH_SIZE": "128", "TRAIN_BN_RECALIBRATION_BATCHES": "0"}, 0),
    ("baseline", {}, 0),  # the simple CNN has no BatchNorm
])
def test_the_plan_recalibrates_batchnorm_only_for_short_epochs_of_models_with_batchnorm(monkeypatch, preset, extra,
                                                                                      expected):
    from jobs.train.__main__ import run_plan

    s = settings(monkeypatch, TRAIN_PRESET=preset, **extra)
    assert run_plan(settings=s, steps=11, num_classes=10, env=CPU)["bn_recalibration_batches"] == expected
    assert run_plan(settings=s, steps=97, num_classes=10, env=CPU)["bn_recalibration_batches"] == 0  # CIFAR at 512


def failure(result) -> str:
    """The job's one error line (a JSON log event on stdout); no traceback or warning anywhere."""
    from tests.train.conftest import log_lines

    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr[-2000:]
    events = [e for e in log_lines(result.stdout) if e.get("event") == "failed"]
    assert len(events) == 1 and events[0]["reason"] == "Diverged" and events[0]["exit_code"] == 4
    return events[0]["error"]


def _checkpoints(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "checkpoints").iterdir())}


def test_a_run_whose_loss_explodes_exits_4_naming_step_and_lr_and_writes_nothing(digits_archive, train_env, tmp_path):
    from tests.train.conftest import run_train

    out = tmp_path / "out"
    env = {**train_env, "TRAIN_DATA_URI": str(digits_archive), "TRAIN_OUTPUT_URI": str(out), "TRAIN_EPOCHS": "2",
           "TRAIN_OPTIMIZER": "sgd", "TRAIN_LR": "1e30"}
    result = run_train(env)
    assert result.returncode == 4, result.stderr[-2000:]
    last = failure(result)
    assert "non-finite" in last and "epoch 1 step" in last and "learning rate 1e+30" in last, last
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()


def test_a_resumed_run_that_diverges_keeps_the_last_good_checkpoint_untouched(digits_archive, train_env, tmp_path):
    from tests.train.conftest import interrupt_train, run_train

    out = tmp_path / "out"
    env = {**train_env, "TRAIN_DATA_URI": str(digits_archive), "TRAIN_OUTPUT_URI": str(out), "TRAIN_EPOCHS": "2"}
    code, _, _ = interrupt_train(env, epoch=2, step=10)  # epoch 1 checkpointed at its end, then e0001-s000010 on SIGTERM
    assert code == 75
    before = _checkpoints(out)
    assert len(before) == 2
    stopped_at = int(max(before).split("-s")[1].split(".")[0])  # where SIGTERM stopped epoch 2: the resume point
    # The bound is far below the loss a digits CNN has after one epoch: the resumed run "diverges" within 3 steps.
    result = run_train({**env, "TRAIN_DIVERGENCE_FACTOR": "0.001", "TRAIN_DIVERGENCE_STEPS": "3"})
    assert result.returncode == 4, result.stderr[-2000:]
    last = failure(result)
    assert f"for 3 steps since epoch 2 step {stopped_at + 1}" in last and "learning rate" in last, last
    assert _checkpoints(out) == before  # nothing overwritten, nothing added
    assert not (out / "metrics.json").exists()


def _recalibrate_on_rank(rank: int, world_size: int, port: int, out: str) -> None:
    """One gloo rank: its own shard of images, recalibrated, statistics saved for the parent."""
    import torch.distributed as dist
    from torch import nn

    from jobs.train.loop import recalibrate_batchnorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # the same weights on every rank, as DDP has them
        model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
        gen = torch.Generator().manual_seed(100 + rank)  # a different shard per rank
        images = torch.randint(0, 256, (16, 3, 8, 8), generator=gen, dtype=torch.uint8) // (rank + 1)
        env = DistEnv(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"))
        recalibrate_batchnorm(model=model, images=images, order=torch.arange(16), batch_size=8, batches=2, env=env,
                              channels_last=False)
        torch.save({"mean": model[1].running_mean, "var": model[1].running_var, "state": model.state_dict(),
                    "images": images}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_batchnorm_recalibration_agrees_across_ddp_ranks(tmp_path):
    """Two real gloo processes with different shards end with the same statistics: the mean of theirs."""
    import torch.multiprocessing as mp
    from torch import nn

    from tests.conftest import free_port

    mp.spawn(_recalibrate_on_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(ranks[0]["mean"], ranks[1]["mean"]) and torch.equal(ranks[0]["var"], ranks[1]["var"])
    own = []
    for r in ranks:  # each shard's own statistics, recomputed here
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
        from jobs.train.loop import recalibrate_batchnorm

        recalibrate_batchnorm(model=model, images=r["images"], order=torch.arange(16), batch_size=8, batches=2,
                              env=CPU, channels_last=False)
        own.append((model[1].running_mean.clone(), model[1].running_var.clone()))
    assert not torch.allclose(own[0][0], own[1][0])  # the shards differ
    assert torch.allclose(ranks[0]["mean"], (own[0][0] + own[1][0]) / 2, atol=1e-6)
    assert torch.allclose(ranks[0]["var"], (own[0][1] + own[1][1]) / 2, atol=1e-5)
