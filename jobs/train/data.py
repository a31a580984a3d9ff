"""CIFAR-10 python layout in, uint8 tensors out: fetch -> verify -> safe extract -> decode.

The layout is `cifar-10-batches-py/` holding `data_batch_1..5`, `test_batch` and `batches.meta`,
each a pickle of a dict: `data` is a (N, 3072) uint8 array (planes R, G, B, each 32x32 row-major),
`labels` a list of N ints, `batches.meta` has `label_names`. Any data set packed this way loads
the same; `pack_cifar` writes it (used by `jobs.train.pack_images` and the tests).

Safety, because an archive is untrusted input:
- the archive's sha256 must equal `TRAIN_DATA_SHA256` when that is set; without it the published
  CIFAR-10 md5 identifies the original archive, anything else is logged as unverified;
- members are extracted with tarfile's "data" filter (no absolute paths, no `..`, no links out,
  no device files), one at a time while their sizes stay within TRAIN_MAX_EXTRACTED_BYTES in all:
  a refused member is an `InputDataError` naming it;
- batch files are unpickled by `CifarUnpickler`, which admits only what the layout uses (dict, list,
  str, bytes, int and numpy array reconstruction, in pickle protocols 0-5). A pickle asking for
  anything else (os.system, builtins.eval, ...) is an `InputDataError` and nothing in it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common import storage
from common.errors import ConfigError, InputDataError, StorageError

CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # torchvision's and the publisher's checksum
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarData:
    """Decoded splits. Images are uint8 (N, 3, 32, 32); labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    sha256: str  # of the archive, or of the batch files of a folder


# --- fetch -------------------------------------------------------------------------------------


def fetch_download(*, url: str, cache_dir: Path) -> Path:
    """Download with torchvision's downloader (md5-checked when it is the published archive)."""
    from torchvision.datasets.utils import download_url

    md5 = CIFAR10_MD5 if url == CIFAR10_URL else None
    try:
        # torchvision prints progress; keep stdout for our JSON log lines.
        with contextlib.redirect_stdout(sys.stderr):
            download_url(url, str(cache_dir), filename=ARCHIVE_NAME, md5=md5)
    except Exception as exc:  # URLError, HTTPError, RuntimeError("corrupted")
        (cache_dir / ARCHIVE_NAME).unlink(missing_ok=True)
        raise StorageError(f"{url}: download failed: {exc}") from None
    return cache_dir / ARCHIVE_NAME


def fetch_local(*, data_uri: str, workdir: Path) -> Path:
    """An s3:// archive is copied into `workdir`; a local path is used in place."""
    if storage.is_s3(data_uri):
        dest = workdir / ARCHIVE_NAME
        storage.download_file(data_uri, dest)
        return dest
    path = Path(data_uri).expanduser()
    if not path.exists():
        raise InputDataError(f"{data_uri}: no such file or folder")
    return path


# --- verify ------------------------------------------------------------------------------------


def file_digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def verify_archive(path: Path, *, uri: str, expected_sha256: str | None, log) -> str:
    """Return the archive's sha256; refuse it when it differs from `expected_sha256`."""
    sha256, md5 = file_digests(path)
    if expected_sha256:
        if sha256 != expected_sha256.lower():
            raise InputDataError(f"{uri}: sha256 {sha256} differs from TRAIN_DATA_SHA256 {expected_sha256.lower()}")
        log.info("archive verified", uri=uri, sha256=sha256, against="TRAIN_DATA_SHA256")
    elif md5 == CIFAR10_MD5:
        log.info("archive verified", uri=uri, sha256=sha256, against="published CIFAR-10 md5")
    else:
        log.warning("archive not verified: not the published CIFAR-10 archive and TRAIN_DATA_SHA256 unset",
                    uri=uri, sha256=sha256)
    return sha256


def folder_digest(folder: Path) -> str:
    """sha256 over the batch files' own sha256s, in layout order: a folder's identity."""
    outer = hashlib.sha256()
    for name in (*TRAIN_BATCHES, TEST_BATCH, META):
        outer.update(name.encode() + b"\0" + file_digests(folder / name)[0].encode())
    return outer.hexdigest()


# --- extract -----------------------------------------------------------------------------------


# tarfile's extraction filters arrived in Python 3.11.4 (and 3.12); Debian bookworm ships 3.11.2.
_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


DEFAULT_MAX_EXTRACTED_BYTES = 4 * 2**30  # TRAIN_MAX_EXTRACTED_BYTES


def extract_archive(path: Path, *, uri: str, dest: Path, max_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES) -> Path:
    """Extract with the "data" filter, member by member, while the members' sizes stay within
    `max_bytes` in total (a 1.4 MB archive can hold a 1 GiB member); return the batch folder."""
    try:
        with tarfile.open(path, "r:*") as tar:
            total = 0
            for member in tar:  # headers come one at a time: nothing past the cap is extracted
                total += member.size
                if total > max_bytes:
                    raise InputDataError(f"{uri}: archive member {member.name!r} takes the extracted size past "
                                         f"TRAIN_MAX_EXTRACTED_BYTES={max_bytes:,} bytes")
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, dest, filter="data")
                else:
                    extract_regular_file(tar, member, uri=uri, dest=dest)
    except _FILTER_ERRORS as exc:
        raise InputDataError(f"{uri}: refused archive member {exc.tarinfo.name!r}: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InputDataError(f"{uri}: not a readable tar archive: {exc}") from None
    return find_batches_folder(dest, uri=uri)


def extract_regular_files(tar: tarfile.TarFile, *, uri: str, dest: Path) -> None:
    for member in tar:
        extract_regular_file(tar, member, uri=uri, dest=dest)


def extract_regular_file(tar: tarfile.TarFile, member: tarfile.TarInfo, *, uri: str, dest: Path) -> None:
    """Where tarfile has no filters: admit only folders and regular files that land inside `dest`.

    Stricter than the "data" filter (no links at all), which the CIFAR layout never needs.
    """
    root = dest.resolve()
    target = (root / member.name).resolve()
    inside = target == root or root in target.parents
    if not (member.isfile() or member.isdir()) or not inside:
        raise InputDataError(f"{uri}: refused archive member {member.name!r}: only regular files inside the "
                             "archive's own folder are allowed")
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with tar.extractfile(member) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def find_batches_folder(root: Path, *, uri: str) -> Path:
    if (root / TEST_BATCH).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(TEST_BATCH) if p.is_file())
    if not found:
        raise InputDataError(f"{uri}: no {TEST_BATCH} found: not the CIFAR-10 python layout")
    return found[0]


# --- decode ------------------------------------------------------------------------------------


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.numeric import _frombuffer
    return _frombuffer


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as protocol 2 uses it: Python 3 writes bytes as `encode(str, 'latin1')` so
    Python 2 can read them. Only that codec is admitted (others, like zlib, are not needed)."""
    if encoding not in ("latin1", "latin-1") or errors != "strict" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with {encoding!r}: only 'latin1' rebuilds bytes")
    return text.encode("latin1")


class CifarUnpickler(pickle.Unpickler):
    """Admits exactly the globals a CIFAR batch pickle of protocol 0-5 needs, like
    torch.load(weights_only=True)'s allowlist: numpy array reconstruction (protocols 0-4, under
    numpy 1's and 2's module names), numpy's buffer reconstruction (protocol 5) and the latin-1
    bytes of protocol 2. Each rebuilds data; none calls anything else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer(),
        ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def unpickle_batch(path: Path, *, uri: str) -> dict:
    try:
        # latin1: the published batches were pickled by Python 2 (str keys, str filenames).
        with open(path, "rb") as fh:
            obj = CifarUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise InputDataError(f"{uri}: {path.name} missing: not the CIFAR-10 python layout") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError from a bad array state
        raise InputDataError(f"{uri}: {path.name} is not a safe CIFAR batch pickle: {exc}") from None
    if not isinstance(obj, dict):
        raise InputDataError(f"{uri}: {path.name} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, *, uri: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file."""
    batch = unpickle_batch(path, uri=uri)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InputDataError(f"{uri}: {path.name}: 'data' must be a uint8 array (N, 3072), got {got}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise InputDataError(f"{uri}: {path.name}: 'labels' must be a list of {len(data)} ints")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        raise InputDataError(f"{uri}: {path.name}: labels must be ints in [0, {num_classes})")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def read_classes(folder: Path, *, uri: str) -> list[str]:
    names = unpickle_batch(folder / META, uri=uri).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise InputDataError(f"{uri}: {META}: 'label_names' must be a non-empty list of names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def decode_folder(folder: Path, *, uri: str, sha256: str) -> CifarData:
    classes = read_classes(folder, uri=uri)
    train = [read_batch(folder / name, uri=uri, num_classes=len(classes)) for name in TRAIN_BATCHES]
    test_images, test_labels = read_batch(folder / TEST_BATCH, uri=uri, num_classes=len(classes))
    return CifarData(
        train_images=torch.from_numpy(np.concatenate([images for images, _ in train])),
        train_labels=torch.from_numpy(np.concatenate([labels for _, labels in train])),
        test_images=torch.from_numpy(np.ascontiguousarray(test_images)),
        test_labels=torch.from_numpy(test_labels),
        classes=classes,
        sha256=sha256,
    )


# --- the whole path ----------------------------------------------------------------------------


def load_cifar(*, data_uri: str, cache_dir: Path, download_url: str, expected_sha256: str | None, log,
               max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES) -> CifarData:
    """Fetch, verify, extract and decode; every failure is an error naming the input."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = tempfile.TemporaryDirectory(dir=cache_dir, prefix="work-")
    except OSError as exc:  # a file where a folder should be, no permission, read-only volume
        raise ConfigError(f"TRAIN_CACHE_DIR: cannot use {str(cache_dir)!r} as a folder: {exc.strerror or exc}") from None
    with work as tmp:
        workdir = Path(tmp)
        if data_uri == "download":
            path, uri = fetch_download(url=download_url, cache_dir=cache_dir), download_url
        else:
            path, uri = fetch_local(data_uri=data_uri, workdir=workdir), data_uri
        if path.is_dir():
            folder = find_batches_folder(path, uri=uri)
            if expected_sha256:
                log.warning("TRAIN_DATA_SHA256 applies to archives; a folder is identified by its batch files", uri=uri)
            data = decode_folder(folder, uri=uri, sha256=folder_digest(folder))
        else:
            sha256 = verify_archive(path, uri=uri, expected_sha256=expected_sha256, log=log)
            folder = extract_archive(path, uri=uri, dest=workdir / "extracted", max_bytes=max_extracted_bytes)
            data = decode_folder(folder, uri=uri, sha256=sha256)
    log.info("data loaded", uri=uri, train=len(data.train_labels), test=len(data.test_labels),
             classes=len(data.classes), sha256=data.sha256)
    return data


# --- pack (the inverse: arrays -> archive) -----------------------------------------------------


def _batch_pickle(images: np.ndarray, labels: np.ndarray, *, label: str) -> bytes:
    # Protocol 4 writes bytes natively (protocol 2 under Python 3 would reduce via _codecs.encode,
    # which the restricted unpickler rightly refuses) and numpy arrays via _reconstruct.
    batch = {
        "batch_label": label,
        "labels": [int(x) for x in labels],
        "data": np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8),
        "filenames": [f"{label.split()[0]}_{i:06d}.png" for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=4)


def pack_cifar(*, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
               test_labels: np.ndarray, classes: list[str], dest: Path) -> Path:
    """Write `dest` (a .tar.gz) in the CIFAR-10 python layout. Images are uint8 (N, 3, 32, 32)."""
    members = {META: pickle.dumps({"label_names": list(classes), "num_vis": 3072}, protocol=4)}
    for i, part in enumerate(np.array_split(np.arange(len(train_images)), len(TRAIN_BATCHES))):
        members[TRAIN_BATCHES[i]] = _batch_pickle(train_images[part], train_labels[part], label=f"training batch {i + 1} of 5")
    members[TEST_BATCH] = _batch_pickle(test_images, test_labels, label="testing batch 1 of 1")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    tmp.replace(dest)
    return dest
