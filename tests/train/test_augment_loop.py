"""Pure parts of the recipe: per-batch augmentation, schedules, data order, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.train.augment import augment_batch, cutout, normalize, random_crop, random_flip, step_seed
from jobs.train.distributed import DistEnv
from jobs.train.loop import epoch_order, lr_factor, steps_per_epoch
from jobs.train.metrics import classification_summary, prediction_tables
from jobs.train.models import build_model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=gen(5), dtype=torch.uint8)


def test_crop_is_a_translation_within_the_padding():
    x = normalize(batch())
    out = random_crop(x, padding=4, gen=gen())
    assert out.shape == x.shape
    assert torch.equal(random_crop(x, padding=0, gen=gen()), x)
    # The central 24x24 of the input appears, shifted by at most 4 pixels, in every output.
    for i in range(len(x)):
        found = any(torch.equal(out[i, :, 4 + dy:28 + dy, 4 + dx:28 + dx], x[i, :, 4:28, 4:28])
                    for dy in range(-4, 5) for dx in range(-4, 5))
        assert found


def test_flip_and_cutout():
    x = normalize(batch(64))
    flipped = random_flip(x, gen=gen())
    same = [torch.equal(flipped[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(flipped[i], x[i].flip(2)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    holes = cutout(torch.ones(64, 3, 32, 32), size=8, gen=gen())
    zeroed = (holes[:, 0] == 0).sum((1, 2))
    assert zeroed.max() == 64 and zeroed.min() >= 16  # a clipped square keeps at least its quarter
    assert torch.equal(holes[:, 0] == 0, holes[:, 2] == 0)


@pytest.mark.parametrize("augment", [[], ["crop", "flip", "cutout"], ["mixup"], ["autoaugment", "crop"], ["randaugment"]])
def test_augment_batch_is_a_function_of_its_seed(augment):
    images, labels = batch(), torch.arange(16) % 10
    kwargs = dict(augment=augment, num_classes=10, crop_padding=4, cutout_size=8, mixup_alpha=0.2)
    x1, t1 = augment_batch(images, labels, seed=7, **kwargs)
    x2, t2 = augment_batch(images, labels, seed=7, **kwargs)
    assert x1.dtype == torch.float32 and x1.shape == (16, 3, 32, 32) and t1.shape == (16, 10)
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    assert torch.allclose(t1.sum(1), torch.ones(16))
    if augment:
        assert not torch.equal(x1, augment_batch(images, labels, seed=8, **kwargs)[0])


def test_step_seeds_differ_by_position():
    seeds = {step_seed(seed=0, epoch=e, step=s, rank=r) for e in range(3) for s in range(500) for r in range(4)}
    assert len(seeds) == 3 * 500 * 4


def test_epoch_order_shards_are_disjoint_and_reproducible():
    envs = [DistEnv(rank=r, local_rank=r, world_size=3, device=torch.device("cpu")) for r in range(3)]
    shards = [epoch_order(n=100, seed=1, epoch=2, env=env) for env in envs]
    flat = torch.cat(shards)
    assert len(flat) == 99 and len(set(flat.tolist())) == 99
    assert torch.equal(shards[1], epoch_order(n=100, seed=1, epoch=2, env=envs[1]))
    assert not torch.equal(shards[1], epoch_order(n=100, seed=1, epoch=3, env=envs[1]))
    assert steps_per_epoch(n=100, batch_size=16, world_size=3) == 2


def test_schedules():
    total, warm = 100, 10
    one = [lr_factor(s, total_steps=total, warmup_steps=warm, schedule="onecycle") for s in range(total)]
    cos = [lr_factor(s, total_steps=total, warmup_steps=0, schedule="cosine") for s in range(total)]
    assert one[0] == pytest.approx(0.1) and one[9] == 1.0 and one[-1] < 0.02 and max(one) == 1.0
    assert cos[0] == 1.0 and all(a >= b for a, b in zip(cos, cos[1:])) and cos[-1] < 0.001
    assert lr_factor(50, total_steps=total, warmup_steps=0, schedule="none") == 1.0


@pytest.mark.parametrize("name,params", [("simple", 2_122_186), ("resnet9", None), ("resnet18", None)])
def test_models_map_32x32_images_to_logits(name, params):
    model = build_model(name=name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    if params:  # conv 3->32 (896) + conv 32->64 (18,496) + fc 4096->512 (2,097,664) + fc 512->10 (5,130)
        assert sum(p.numel() for p in model.parameters()) == params


def test_summary_and_handoff_tables():
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    labels = torch.tensor([0, 1, 0, 2])
    summary = classification_summary(logits=logits, labels=labels, classes=["a", "b", "c"])
    assert summary["accuracy"] == 0.75
    assert summary["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert summary["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    expected_loss = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert summary["loss"] == pytest.approx(expected_loss)
    predictions, annotations = prediction_tables(logits=logits, labels=labels, classes=["a", "b", "c"])
    assert predictions.column_names == ["image", "category", "score"] and predictions.num_rows == 12
    assert annotations.column_names == ["image", "category"] and annotations.column("category").to_pylist() == ["a", "b", "a", "c"]
    scores = np.asarray(predictions.column("score").to_pylist()).reshape(4, 3)
    assert np.allclose(scores.sum(1), 1.0, atol=1e-6)
    assert predictions.column("image").to_pylist()[:4] == ["test_000000.png"] * 3 + ["test_000001.png"]
