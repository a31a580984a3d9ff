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

Two figures per path: images per wall-clock second, and images per CPU-second (this process's
threads plus the DataLoader workers), the throughput of a saturated machine. On a 2-core machine
shared with other work the wall-clock figure swings 2x between repeats; the CPU figure does not,
and it is what bounds a training pod that has its CPUs to itself.

Two augmentation settings: none (the baseline preset) and crop+flip.

Measured 2026-11-29 on the 2-core CPU build machine (quiet), torch 2.14.1, `--steps 100 --repeats 3`,
best of 3, images/s wall (per CPU-second):
    none       job 1892 (956)  job channels_last 2190 (1102)  textbook w=0 1600 (808)  w=2 1391 (707)
               ratio vs best textbook: 1.18x, channels_last 1.37x (CPU 1.18x, 1.36x)
    crop+flip  job 1799 (908)  job channels_last 2198 (1109)  textbook w=0 1290 (725)  w=2 1052 (536)
               ratio vs best textbook: 1.39x, channels_last 1.70x (CPU 1.25x, 1.53x)
Without augmentation the textbook path costs only ToTensor+Normalize per image and the step is
bound by the CNN itself, so no data path can reach 1.4x over DataLoader(num_workers=0) there. The archive defaults to
the packed JPEG copy of CIFAR-10 (`python -m jobs.train.pack_images ../shared/data/cifar10-jpeg.zip
.bench/cifar-10-python.tar.gz`); it is packed on first use when missing. Prints images/s per path
and the ratio job / best textbook (target >= 1.4).
"""

from __future__ import annotations

import argparse
import os
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


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU time of this process (all threads) plus the given child processes."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def train_steps(model, optimizer, batches, *, steps: int, worker_pids) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second) over `steps` steps after 10 warm-up steps."""
    model.train()
    it = iter(batches)
    for step in range(steps + 10):
        if step == 10:
            start, start_cpu = time.perf_counter(), cpu_seconds(worker_pids())
        x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    images = steps * BATCH
    return images / (time.perf_counter() - start), images / (cpu_seconds(worker_pids()) - start_cpu)


def textbook_batches(images_hwc, labels, *, augment: bool, workers: int):
    """(batches, worker pids) of the textbook DataLoader path."""
    from torchvision import transforms

    ops = [transforms.RandomCrop(32, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()] if augment else []
    transform = transforms.Compose([*ops, transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = torch.utils.data.DataLoader(PILCifar(images_hwc, labels, transform), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    holder = {}

    def batches():
        while True:
            holder["it"] = iter(loader)
            yield from holder["it"]

    def pids() -> list[int]:
        it = holder.get("it")
        return [w.pid for w in getattr(it, "_workers", [])] if it is not None else []

    return batches(), pids


def job_batches(images, labels, *, augment: bool, channels_last: bool = False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def batches():
        epoch = 0
        while True:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
            for step in range(len(labels) // BATCH):
                idx = order[step * BATCH:(step + 1) * BATCH]
                x, _ = augment_batch(images[idx], labels[idx], augment=["crop", "flip"] if augment else [],
                                     num_classes=10, crop_padding=4, cutout_size=8, mixup_alpha=0.2, seed=step)
                yield x.contiguous(memory_format=fmt), labels[idx]
            epoch += 1

    return batches(), list


def measure(make_batches, *, steps: int, channels_last: bool = False) -> tuple[float, float]:
    torch.manual_seed(0)
    model = SimpleCNN(10).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    batches, worker_pids = make_batches()
    return train_steps(model, torch.optim.Adam(model.parameters(), lr=1e-3), batches, steps=steps, worker_pids=worker_pids)


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
            # The job's path with TRAIN_CHANNELS_LAST=true: its batches come out channels_last at
            # no cost, which oneDNN's CPU convolutions run faster; the textbook path yields NCHW.
            "job channels_last": lambda: job_batches(images, labels, augment=augment, channels_last=True),
        }
        wall = {path: [] for path in paths}
        cpu = {path: [] for path in paths}
        for _ in range(args.repeats):
            for path, make in paths.items():
                w, c = measure(make, steps=args.steps, channels_last=path == "job channels_last")
                wall[path].append(w)
                cpu[path].append(c)
        for path in paths:
            print(f"augment={name:9s} {path:18s} wall: best {max(wall[path]):6.0f} img/s "
                  f"(runs {', '.join(f'{r:.0f}' for r in wall[path])}) | per CPU-second: best {max(cpu[path]):6.0f} img/s "
                  f"(runs {', '.join(f'{r:.0f}' for r in cpu[path])})")
        for label, rates in (("wall", wall), ("CPU", cpu)):
            best = {path: max(r) for path, r in rates.items()}
            textbook = max(best["textbook workers=0"], best["textbook workers=2"])
            ratio = best["job"] / textbook
            ratios[f"{name} ({label})"] = ratio
            ratios[f"{name} channels_last ({label})"] = best["job channels_last"] / textbook
            print(f"augment={name:9s} {label:4s} ratio job / best textbook {ratio:.2f}x, "
                  f"job / workers=0 {best['job'] / best['textbook workers=0']:.2f}x, "
                  f"job / workers=2 {best['job'] / best['textbook workers=2']:.2f}x")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()) + " (target >= 1.4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
