"""CPU data path: the job's uint8-tensor + per-batch tensor augmentation vs the textbook path.

    python bench/train_datapath.py [--archive .bench/cifar-10-python.tar.gz] [--steps 200] [--threads 2] [--repeats 3]

Both paths train the seed's baseline CNN (Adam, batch 64) on the same CIFAR-10 images for the same
number of steps, in this process, with the same torch thread count; only the data path differs:

- textbook: `torch.utils.data.DataLoader` over a Dataset that, like torchvision's `CIFAR10`,
  makes a PIL image per sample and applies `transforms.Compose([...ToTensor(), Normalize(...)])`;
  run with num_workers 0 (DataLoader's default) and 2 (the PyTorch tutorial's), and the faster
  of the two is the denominator;
- job: the whole split decoded once into a uint8 tensor, indexed per batch, augmented with tensor
  ops (`jobs.train.augment.augment_batch`).

Two augmentation settings: none (the baseline preset) and crop+flip. The archive defaults to
the packed JPEG copy of CIFAR-10 (`python -m jobs.train.pack_images ../shared/data/cifar10-jpeg.zip
.bench/cifar-10-python.tar.gz`); it is packed on first use when missing. Prints images/s per path
and the ratio job / best textbook (target >= 1.4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.train.augment import CIFAR_MEAN, CIFAR_STD, augment_batch  # noqa: E402
from jobs.train.data import load_cifar  # noqa: E402
from jobs.train.models import SimpleCNN  # noqa: E402

BATCH = 64
ZIP = ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip"


class _Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None


class PILCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL image -> transform."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def train_steps(model, optimizer, batches, *, steps: int) -> float:
    """Images per second over `steps` steps after 10 warm-up steps."""
    model.train()
    it = iter(batches)
    for step in range(steps + 10):
        if step == 10:
            start = time.perf_counter()
        x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * BATCH / (time.perf_counter() - start)


def textbook_batches(images_hwc, labels, *, augment: bool, workers: int):
    from torchvision import transforms

    ops = [transforms.RandomCrop(32, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()] if augment else []
    transform = transforms.Compose([*ops, transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = torch.utils.data.DataLoader(PILCifar(images_hwc, labels, transform), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    while True:
        yield from loader


def job_batches(images, labels, *, augment: bool):
    epoch = 0
    while True:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        for step in range(len(labels) // BATCH):
            idx = order[step * BATCH:(step + 1) * BATCH]
            x, targets = augment_batch(images[idx], labels[idx], augment=["crop", "flip"] if augment else [],
                                       num_classes=10, crop_padding=4, cutout_size=8, mixup_alpha=0.2, seed=step)
            yield x, labels[idx]
        epoch += 1


def measure(make_batches, *, steps: int) -> float:
    torch.manual_seed(0)
    model = SimpleCNN(10)
    return train_steps(model, torch.optim.Adam(model.parameters(), lr=1e-3), make_batches(), steps=steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", default=str(ROOT / ".bench" / "cifar-10-python.tar.gz"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    archive = Path(args.archive)
    if not archive.exists():
        from jobs.train.pack_images import main as pack

        pack([str(ZIP), str(archive)])
    data = load_cifar(data_uri=str(archive), cache_dir=ROOT / ".bench" / "cache", download_url="",
                      expected_sha256=None, log=_Quiet())
    images, labels = data.train_images, data.train_labels
    images_hwc, labels_np = images.permute(0, 2, 3, 1).numpy().copy(), labels.numpy()
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}, {args.steps} steps per measurement, "
          f"{len(labels)} images")
    # The machine may be shared: each measurement is repeated, interleaved across the paths, and
    # the best of the repeats is compared (the least-disturbed run of each path).
    ratios = {}
    for augment in (False, True):
        name = "crop+flip" if augment else "none"
        paths = {
            "job": lambda: job_batches(images, labels, augment=augment),
            "textbook workers=0": lambda: textbook_batches(images_hwc, labels_np, augment=augment, workers=0),
            "textbook workers=2": lambda: textbook_batches(images_hwc, labels_np, augment=augment, workers=2),
        }
        rates = {path: [] for path in paths}
        for _ in range(args.repeats):
            for path, make in paths.items():
                rates[path].append(measure(make, steps=args.steps))
        best = {path: max(r) for path, r in rates.items()}
        textbook = max(v for k, v in best.items() if k.startswith("textbook"))
        ratios[name] = best["job"] / textbook
        print(f"augment={name}: " + " | ".join(
            f"{path} best {best[path]:.0f} img/s (all: {', '.join(f'{r:.0f}' for r in rates[path])})" for path in paths))
        print(f"augment={name}: ratio job / best textbook {ratios[name]:.2f}x; "
              f"job / textbook workers=0 (DataLoader default) {best['job'] / best['textbook workers=0']:.2f}x")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()) + " (target >= 1.4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
