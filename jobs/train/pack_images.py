"""Pack an image-folder tree into the CIFAR-10 python layout (`cifar-10-python.tar.gz`).

    python -m jobs.train.pack_images SOURCE DEST.tar.gz

SOURCE is a .zip file or a folder holding `train/<class>/*` and `test/<class>/*` images, 32x32
(any format Pillow reads; converted to RGB). Classes are the sorted folder names, the same in both
splits: for CIFAR-10 that is airplane, automobile, ..., truck, CIFAR's own order. Example, the
JPEG copy of CIFAR-10 shipped with this workspace (about 30 s on one core):

    python -m jobs.train.pack_images ../shared/data/cifar10-jpeg.zip .bench/cifar-10-python.tar.gz

Needs Pillow (a torchvision dependency); the training job itself never decodes images with it.
"""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from jobs.train.data import pack_cifar

SPLITS = ("train", "test")


def list_images(source: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, name, encoded bytes) for every image file, in sorted order."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            parts = path.relative_to(source).parts
            if len(parts) == 3 and parts[0] in SPLITS:
                yield parts[0], parts[1], parts[2], path.read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        for name in sorted(archive.namelist()):
            parts = PurePosixPath(name).parts
            if len(parts) == 3 and parts[0] in SPLITS and not name.endswith("/"):
                yield parts[0], parts[1], parts[2], archive.read(name)


def decode_image(payload: bytes, *, name: str) -> np.ndarray:
    """Encoded image -> uint8 (3, 32, 32)."""
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as image:
        pixels = np.asarray(image.convert("RGB"))
    if pixels.shape != (32, 32, 3):
        raise ValueError(f"{name}: {pixels.shape[1]}x{pixels.shape[0]} image, expected 32x32")
    return pixels.transpose(2, 0, 1)


def read_tree(source: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    for split, cls, name, payload in list_images(source):
        images[split].append(decode_image(payload, name=f"{split}/{cls}/{name}"))
        names[split].append(cls)
    classes = sorted(set(names["train"]))
    if not classes or set(names["test"]) - set(classes):
        raise ValueError(f"{source}: expected train/<class>/ and test/<class>/ folders with the same classes")
    index = {c: i for i, c in enumerate(classes)}
    splits = {s: (np.stack(images[s]), np.array([index[c] for c in names[s]], dtype=np.int64)) for s in SPLITS}
    return splits, classes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    source, dest = Path(args[0]), Path(args[1])
    try:
        splits, classes = read_tree(source)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        print(f"pack_images: {exc}", file=sys.stderr)
        return 65
    pack_cifar(train_images=splits["train"][0], train_labels=splits["train"][1], test_images=splits["test"][0],
               test_labels=splits["test"][1], classes=classes, dest=dest)
    print(f"{dest}: {len(splits['train'][1])} train, {len(splits['test'][1])} test images, classes {classes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
