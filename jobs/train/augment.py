"""Per-batch augmentation with tensor ops on the device: no PIL, no per-sample Python.

Every random draw comes from a `torch.Generator` seeded by (seed, epoch, step, rank), so a batch's
augmentation depends only on where it is in the run: a run resumed mid-epoch draws exactly what the
uninterrupted run drew, without restoring any global RNG.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per channel, in [0, 1]
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def step_seed(*, seed: int, epoch: int, step: int, rank: int) -> int:
    # A fixed mixing of the position into 63 bits; distinct positions give distinct streams.
    return ((seed * 1_000_003 + epoch * 10_007 + step) * 131 + rank) & ((1 << 63) - 1)


def random_crop(images: torch.Tensor, *, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Reflect-pad by `padding` and cut a random HxW window per image. Float (B, C, H, W) -> same.

    One slice per possible shift (2 * padding + 1 of them, rows then columns) instead of a per-pixel
    gather: advanced indexing with four broadcast index tensors is ~10x slower on CPU.
    """
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=gen.device).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=gen.device).to(images.device)
    rows = torch.empty_like(padded[:, :, :h, :])
    for shift in range(2 * padding + 1):
        chosen = dy == shift
        rows[chosen] = padded[chosen, :, shift:shift + h, :]
    out = torch.empty_like(images)
    for shift in range(2 * padding + 1):
        chosen = dx == shift
        out[chosen] = rows[chosen, :, :, shift:shift + w]
    return out


def random_flip(images: torch.Tensor, *, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=gen, device=gen.device).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, *, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) centred anywhere in each image."""
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b,), generator=gen, device=gen.device).to(images.device)
    cx = torch.randint(0, w, (b,), generator=gen, device=gen.device).to(images.device)
    y = torch.arange(h, device=images.device)[None, :]
    x = torch.arange(w, device=images.device)[None, :]
    in_y = ((y >= (cy - size // 2)[:, None]) & (y < (cy - size // 2 + size)[:, None]))[:, :, None]
    in_x = ((x >= (cx - size // 2)[:, None]) & (x < (cx - size // 2 + size)[:, None]))[:, None, :]
    return images.masked_fill((in_y & in_x)[:, None], 0)


def auto_augment(images: torch.Tensor, *, policy: str, seed: int, chunk: int = 32) -> torch.Tensor:
    """torchvision's AutoAugment / RandAugment on uint8 batches.

    torchvision draws one operation per call, so the batch is cut into chunks of `chunk` images to
    vary the operation within a batch. Its draws use the global RNG: they run under `fork_rng`
    seeded from the step, which keeps them reproducible and leaves the global stream untouched.
    """
    from torchvision.transforms import v2

    transform = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10) if policy == "autoaugment" else v2.RandAugment()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.cat([transform(part) for part in images.split(chunk)])


def normalize(images: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, standardised per channel with the CIFAR-10 statistics."""
    mean = torch.tensor(CIFAR_MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR_STD, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (images.to(dtype) - mean) / std


def mixup(images: torch.Tensor, targets: torch.Tensor, *, alpha: float, seed: int,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image with a partner in the batch; targets are (B, K) probabilities."""
    lam = random.Random(seed).betavariate(alpha, alpha)  # one draw per batch, as in the paper
    perm = torch.randperm(images.shape[0], generator=gen, device=gen.device).to(images.device)
    return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]


def augment_batch(images: torch.Tensor, labels: torch.Tensor, *, augment: list[str], num_classes: int,
                  crop_padding: int, cutout_size: int, mixup_alpha: float, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (B, 3, H, W) and labels (B,) -> normalised float images and (B, K) soft targets."""
    gen = torch.Generator(device=images.device).manual_seed(seed)
    if "autoaugment" in augment or "randaugment" in augment:
        images = auto_augment(images, policy="autoaugment" if "autoaugment" in augment else "randaugment", seed=seed)
    x = normalize(images)
    if "crop" in augment:
        x = random_crop(x, padding=crop_padding, gen=gen)
    if "flip" in augment:
        x = random_flip(x, gen=gen)
    if "cutout" in augment:
        x = cutout(x, size=cutout_size, gen=gen)  # zero after normalising: the mean colour
    targets = F.one_hot(labels, num_classes).to(x.dtype)
    if "mixup" in augment:
        x, targets = mixup(x, targets, alpha=mixup_alpha, seed=seed, gen=gen)
    return x, targets
