"""The data path: archive -> verify -> safe extract -> restricted decode, and what it refuses."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import structlog

from common.errors import InputDataError, StorageError
from jobs.train import data as cifar
from jobs.train.pack_images import main as pack_images_main
from tests.train.conftest import DIGITS, digits_arrays, log_lines, run_train

LOG = structlog.get_logger()


def load(uri, tmp_path: Path, **kwargs):
    return cifar.load_cifar(data_uri=str(uri), cache_dir=tmp_path / "cache", download_url=kwargs.pop("url", cifar.CIFAR10_URL),
                            expected_sha256=kwargs.pop("sha256", None), log=LOG)


def tar_with(dest: Path, members: dict[str, bytes], *, extra=()) -> Path:
    """A .tar.gz holding `members` under cifar-10-batches-py/, plus raw TarInfo `extra` entries."""
    with tarfile.open(dest, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{cifar.FOLDER_NAME}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return dest


def valid_members(n: int = 20) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    batch = lambda: pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # noqa: E731
                                  "labels": [int(x) for x in rng.integers(0, 10, n)]}, protocol=4)
    members = {name: batch() for name in cifar.TRAIN_BATCHES}
    members[cifar.TEST_BATCH] = batch()
    members[cifar.META] = pickle.dumps({"label_names": DIGITS}, protocol=4)
    return members


class RunsCode:
    """Unpickling this calls os.system: what a hostile batch file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_digits_archive_round_trips(digits_archive, tmp_path):
    data = load(digits_archive, tmp_path)
    train_images, train_labels, test_images, test_labels = digits_arrays()
    assert data.classes == DIGITS
    assert data.train_images.shape == (len(train_labels), 3, 32, 32) and str(data.train_images.dtype) == "torch.uint8"
    assert np.array_equal(data.train_images.numpy(), train_images)
    assert np.array_equal(data.test_labels.numpy(), test_labels)
    assert data.sha256 == hashlib.sha256(digits_archive.read_bytes()).hexdigest()
    assert not list((tmp_path / "cache").glob("work-*")), "the extraction folder is removed"


def test_extracted_folder_loads_the_same(digits_archive, tmp_path):
    with tarfile.open(digits_archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    from_folder = load(tmp_path / "x" / cifar.FOLDER_NAME, tmp_path)
    from_archive = load(digits_archive, tmp_path)
    assert np.array_equal(from_folder.train_images.numpy(), from_archive.train_images.numpy())


def test_sha256_is_enforced_when_given(digits_archive, tmp_path):
    good = hashlib.sha256(digits_archive.read_bytes()).hexdigest()
    assert load(digits_archive, tmp_path, sha256=good).sha256 == good
    with pytest.raises(InputDataError, match="differs from TRAIN_DATA_SHA256"):
        load(digits_archive, tmp_path, sha256="0" * 64)


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    members = valid_members()
    members["data_batch_1"] = pickle.dumps({"data": RunsCode(marker), "labels": []})
    archive = tar_with(tmp_path / "evil.tar.gz", members)
    with pytest.raises(InputDataError, match=r"data_batch_1 .*refused global (posix|os)\.system"):
        load(archive, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval),  # builtins.eval by reference
    b"cbuiltins\nexec\n(S'import os'\ntR.",  # a hand-written GLOBAL + REDUCE
    pickle.dumps({"data": __import__("collections").OrderedDict()}),  # harmless but not in the layout
])
def test_any_global_outside_the_layout_is_refused(tmp_path, payload):
    members = valid_members()
    members["test_batch"] = payload
    with pytest.raises(InputDataError, match="test_batch is not a safe CIFAR batch pickle: refused global"):
        load(tar_with(tmp_path / "a.tar.gz", members), tmp_path)


def members_at(protocol: int, n: int = 20, *, spelling=None) -> dict[str, bytes]:
    """The layout's batches pickled with `protocol`; `spelling` renames numpy's private modules."""
    rng = np.random.default_rng(protocol)
    def dump(obj):  # noqa: E306
        payload = pickle.dumps(obj, protocol=protocol)
        return respell(payload, *spelling) if spelling else payload
    members = {name: dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "batch_label": b"batch",
                           "labels": [int(x) for x in rng.integers(0, 10, n)]})
               for name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH)}
    members[cifar.META] = dump({"label_names": DIGITS})
    return members


def respell(payload: bytes, old: str, new: str) -> bytes:
    """Replace a module name in a pickle as an older numpy would have written it, fixing the
    length prefixes (the name's own and its frame's)."""
    import pickletools

    ops = list(pickletools.genops(payload))
    out, last = bytearray(), 0
    frames = [(pos, arg) for op, arg, pos in ops if op.name == "FRAME"]
    for op, arg, pos in ops:
        if op.name == "SHORT_BINUNICODE" and arg == old:
            out += payload[last:pos] + b"\x8c" + bytes([len(new)]) + new.encode()
            last = pos + 2 + len(old)
            for fpos, length in frames:  # the frame holding it shrinks or grows
                if fpos + 9 <= pos < fpos + 9 + length:
                    out[fpos + 1:fpos + 9] = (length + len(new) - len(old)).to_bytes(8, "little")
        elif op.name == "GLOBAL" and arg.startswith(old + " "):
            out += payload[last:pos] + b"c" + new.encode() + b"\n"
            last = pos + 1 + len(old) + 1
    return bytes(out + payload[last:])


@pytest.mark.parametrize("protocol, spelling", [
    (0, None), (1, None), (2, None), (3, None), (4, None), (5, None),
    (2, ("numpy._core.multiarray", "numpy.core.multiarray")),  # numpy 1's names, as older data sets hold
    (4, ("numpy._core.multiarray", "numpy.core.multiarray")),
    (5, ("numpy._core.numeric", "numpy.core.numeric")),
])
def test_every_pickle_protocol_of_the_layout_loads(tmp_path, protocol, spelling):
    """Protocol 2 writes bytes via _codecs.encode and 5 arrays via numpy's _frombuffer: both were refused."""
    members = members_at(protocol, spelling=spelling)
    if spelling:
        assert spelling[1].encode() in members[cifar.TEST_BATCH]
    data = load(tar_with(tmp_path / "p.tar.gz", members), tmp_path)
    expected = pickle.loads(members_at(protocol)[cifar.TEST_BATCH])  # same draws, current spelling
    assert np.array_equal(data.test_images.numpy().reshape(-1, 3072), expected["data"])
    assert data.test_labels.tolist() == expected["labels"] and data.classes == DIGITS


@pytest.mark.parametrize("payload, refused", [
    (b"c_codecs\nencode\n(Vx\nVzlib\ntR.", "refused _codecs.encode with 'zlib'"),  # another codec
    (b"c_codecs\ndecode\n(Vx\nVlatin1\ntR.", "refused global _codecs.decode"),
    (b"cnumpy._core.numeric\nloads\n(tR.", "refused global numpy._core.numeric.loads"),
    (b"cnumpy.core.numeric\nfromfile\n(tR.", "refused global numpy.core.numeric.fromfile"),
    (b"cnumpy\nload\n(S'/etc/passwd'\ntR.", "refused global numpy.load"),
])
def test_the_allowlist_is_exact(tmp_path, payload, refused):
    members = members_at(2)
    members[cifar.TEST_BATCH] = payload
    with pytest.raises(InputDataError, match=refused.replace(".", r"\.")):
        load(tar_with(tmp_path / "a.tar.gz", members), tmp_path)


def test_path_traversal_member_is_refused(tmp_path):
    info = tarfile.TarInfo("../../escaped.txt")
    info.size = 4
    archive = tar_with(tmp_path / "a.tar.gz", valid_members(), extra=[(info, b"evil")])
    (tmp_path / "cache").mkdir()
    with pytest.raises(InputDataError, match=r"refused archive member '\.\./\.\./escaped\.txt'"):
        load(archive, tmp_path)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_symlink_out_of_the_archive_is_refused(tmp_path):
    link = tarfile.TarInfo(f"{cifar.FOLDER_NAME}/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    members = valid_members()
    del members["data_batch_1"]
    with pytest.raises(InputDataError, match="refused archive member 'cifar-10-batches-py/data_batch_1'"):
        load(tar_with(tmp_path / "a.tar.gz", members, extra=[(link, None)]), tmp_path)


def test_corrupt_archive_and_wrong_shapes_and_missing_file(digits_archive, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(digits_archive.read_bytes()[:5000])
    with pytest.raises(InputDataError, match="truncated.tar.gz: not a readable tar archive"):
        load(truncated, tmp_path)
    members = valid_members()
    members["data_batch_3"] = pickle.dumps({"data": np.zeros((5, 100), np.uint8), "labels": [0] * 5}, protocol=4)
    with pytest.raises(InputDataError, match=r"data_batch_3: 'data' must be a uint8 array \(N, 3072\), got uint8 \(5, 100\)"):
        load(tar_with(tmp_path / "shape.tar.gz", members), tmp_path)
    members = valid_members()
    del members["data_batch_5"]
    with pytest.raises(InputDataError, match="data_batch_5 missing"):
        load(tar_with(tmp_path / "short.tar.gz", members), tmp_path)
    with pytest.raises(InputDataError, match="nope.tar.gz: no such file"):
        load(tmp_path / "nope.tar.gz", tmp_path)


def test_bad_archive_exits_65_without_traceback_or_output(tmp_path, train_env):
    marker = tmp_path / "pwned"
    members = valid_members()
    members["data_batch_2"] = pickle.dumps({"data": RunsCode(marker), "labels": []})
    archive = tar_with(tmp_path / "evil.tar.gz", members)
    out = tmp_path / "out"
    result = run_train({**train_env, "TRAIN_DATA_URI": str(archive), "TRAIN_OUTPUT_URI": str(out)}, timeout=120)
    assert result.returncode == 65, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    error = [line for line in log_lines(result.stdout) if line["level"] == "error"]
    assert error and "data_batch_2" in error[0]["error"] and error[0]["rank"] == 0
    assert not out.exists() and not marker.exists()


def test_download_uses_torchvision_downloader_then_the_cache(digits_archive, tmp_path):
    """`download` fetches TRAIN_DOWNLOAD_URL (here a loopback HTTP server) once, then reads the cache.

    torchvision's CIFAR10 class is not used: it would unpickle the batches unrestricted, and its md5
    is the published archive's, which a test cannot reproduce. The job uses torchvision's
    `download_url` (md5-checked for the published URL) and then its own verify/extract/decode path.
    """
    handler = partial(SimpleHTTPRequestHandler, directory=str(digits_archive.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{digits_archive.name}"
    sha256 = hashlib.sha256(digits_archive.read_bytes()).hexdigest()
    try:
        first = load("download", tmp_path, url=url, sha256=sha256)
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "cache" / cifar.ARCHIVE_NAME).read_bytes() == digits_archive.read_bytes()
    second = load("download", tmp_path, url=url, sha256=sha256)  # the server is gone: served from the cache
    assert np.array_equal(first.test_images.numpy(), second.test_images.numpy())
    with pytest.raises(StorageError, match="download failed"):
        load("download", tmp_path / "empty", url=url)


def test_pack_images_converts_an_image_folder_tree(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / "tree" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    dest = tmp_path / "packed" / cifar.ARCHIVE_NAME
    assert pack_images_main([str(tmp_path / "tree"), str(dest)]) == 0
    data = load(dest, tmp_path)
    assert data.classes == ["cat", "dog"] and len(data.train_labels) == 6 and len(data.test_labels) == 4
    expected = np.asarray(Image.open(tmp_path / "tree" / "test" / "dog" / "1.png")).transpose(2, 0, 1)
    assert np.array_equal(data.test_images[3].numpy(), expected)


def test_bad_archive_under_torchrun_exits_65_too(tmp_path, train_env):
    """jobs.train.torchrun passes the workers' shared exit code on (plain torchrun would exit 1)."""
    truncated = tmp_path / "cifar-10-python.tar.gz"
    truncated.write_bytes(b"\x1f\x8b" + b"\0" * 100)
    out = tmp_path / "out"
    result = run_train({**train_env, "TRAIN_DATA_URI": str(truncated), "TRAIN_OUTPUT_URI": str(out)}, torchrun=2,
                       timeout=120)
    assert result.returncode == 65, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in log_lines(result.stdout) if line["level"] == "error"]
    assert {line["rank"] for line in errors} == {0, 1} and "not a readable tar archive" in errors[0]["error"]
    assert not out.exists()


def test_fallback_extraction_without_tarfile_filters_refuses_links_and_traversal(tmp_path):
    """Pythons before 3.11.4 (Debian bookworm's 3.11.2) have no tarfile filters: the fallback."""
    def archive(member: tarfile.TarInfo, data: bytes = b"") -> Path:
        path = tmp_path / f"a{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(path, "w") as tar:
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        return path

    link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    for bad in (archive(tarfile.TarInfo("../escape.txt"), b"x"), archive(link)):
        dest = tmp_path / f"out-{bad.stem}"
        dest.mkdir()
        with tarfile.open(bad) as tar, pytest.raises(InputDataError, match="refused archive member"):
            cifar.extract_regular_files(tar, uri=str(bad), dest=dest)
        assert list(dest.iterdir()) == [] and not (tmp_path / "escape.txt").exists()
    good = archive(tarfile.TarInfo("cifar-10-batches-py/readme.txt"), b"hello")
    with tarfile.open(good) as tar:
        cifar.extract_regular_files(tar, uri=str(good), dest=tmp_path / "ok")
    assert (tmp_path / "ok" / "cifar-10-batches-py" / "readme.txt").read_bytes() == b"hello"


def test_extracted_size_is_capped(tmp_path):
    """A small archive holding a huge member: refused before that member is written (TRAIN_MAX_EXTRACTED_BYTES)."""
    big = tarfile.TarInfo(f"{cifar.FOLDER_NAME}/zeros.bin")
    big.size = 64 * 2**20  # 64 MiB of zeros: ~64 KiB compressed
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in valid_members().items():
            info = tarfile.TarInfo(f"{cifar.FOLDER_NAME}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        tar.addfile(big, io.BytesIO(bytes(big.size)))
    assert archive.stat().st_size < 2**20
    cache = tmp_path / "cache"
    with pytest.raises(InputDataError, match=r"'cifar-10-batches-py/zeros\.bin' takes the extracted size past "
                                             r"TRAIN_MAX_EXTRACTED_BYTES=33,554,432"):
        cifar.load_cifar(data_uri=str(archive), cache_dir=cache, download_url="", expected_sha256=None, log=LOG,
                         max_extracted_bytes=32 * 2**20)
    assert not list(cache.rglob("zeros.bin"))
    # Under the cap (the default is 4 GiB) the same archive extracts.
    assert load(tar_with(tmp_path / "ok.tar.gz", valid_members()), tmp_path).classes == DIGITS


def test_extracted_size_cap_is_a_setting(train_env, digits_archive, tmp_path):
    env = {**train_env, "TRAIN_DATA_URI": str(digits_archive), "TRAIN_OUTPUT_URI": str(tmp_path / "out"),
           "TRAIN_MAX_EXTRACTED_BYTES": "1000"}
    proc = run_train(env, timeout=120)
    assert proc.returncode == 65, proc.stdout + proc.stderr
    assert "TRAIN_MAX_EXTRACTED_BYTES=1,000" in log_lines(proc.stdout)[-1]["error"]
