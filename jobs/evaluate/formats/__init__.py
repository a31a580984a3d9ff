"""The input formats: one registry of readers, each returning the format-neutral `load.Table`.

A format is a `Format`: its name (the EVAL_FORMAT value), the file extensions and leading bytes
that identify it, an optional content check for inputs neither identifies, and its reader. The
job opens an input once (`open_source`: one file, or a folder / S3 prefix of files), picks its
format once (`detect_format`) and reads it (`Format.read`); nothing after that asks which format
an input was. To add a format, write one module here that defines `FORMAT` and list it in
`REGISTRY` (see the README's development section).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import storage
from common.errors import InputDataError
from common.storage import Blob
from jobs.evaluate.load import Table


@dataclass
class Source:
    """What an input URI names: one file (`blob`) or a folder / S3 prefix (`names`, relative to `uri`)."""

    uri: str
    blob: Blob | None = None
    names: list[str] | None = None

    @property
    def basename(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1].lower()

    @property
    def size(self) -> int | None:
        return len(self.blob.data) if self.blob is not None else None


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need besides the input: the side, EVAL_COLUMNS, EVAL_CLASS_NAMES_URI."""

    predictions: bool
    columns: Callable[[str], str] = lambda name: name
    class_names_uri: str | None = None


@dataclass(frozen=True)
class Format:
    name: str
    read: Callable[[Source, ReadOptions], Table]
    extensions: tuple[str, ...] = ()  # matched at the end of the lower-cased name, also with ".gz" after
    magic: tuple[bytes, ...] = ()  # leading bytes that identify a file whatever its name
    # A content check: of a file, where magic and name say nothing; of a folder, the only check.
    sniff: Callable[[Source], bool] | None = None
    folders: bool = False  # reads a folder / S3 prefix (and an archive of one), not one file


def open_source(uri: str) -> Source:
    """One file, or the files under a folder / S3 prefix. An S3 URI is read as an object first and
    listed as a prefix only where no such object exists (or it ends in '/')."""
    if storage.is_s3(uri):
        missing = None
        if not uri.endswith("/"):
            try:
                return Source(uri, blob=storage.read(uri, mapped=True))
            except InputDataError as exc:
                missing = exc
        names = storage.list_names(uri)
        if names:
            return Source(uri, names=names)
        raise missing or InputDataError(f"{uri}: no objects under this prefix")
    if Path(uri).is_dir():
        return Source(uri, names=storage.list_names(uri))
    return Source(uri, blob=storage.read(uri, mapped=True))


def detect_format(source: Source, requested: str) -> Format:
    """The format EVAL_FORMAT names, or (auto) the one the input's magic bytes, name or content say."""
    if requested != "auto":
        fmt = REGISTRY[requested]
        kind = "folder" if source.names is not None else "file"
        if fmt.folders != (source.names is not None) and not (fmt.folders and kind == "file" and _is_archive(source)):
            raise InputDataError(f"{source.uri}: is a {kind}; EVAL_FORMAT={requested} reads "
                                 f"{'a folder, S3 prefix or archive' if fmt.folders else 'one file'}")
        return fmt
    if source.names is not None:
        for fmt in REGISTRY.values():
            if fmt.folders and fmt.sniff is not None and fmt.sniff(source):
                return fmt
        readers = [f.name for f in REGISTRY.values() if f.folders]
        raise InputDataError(f"{source.uri}: a folder of {len(source.names)} files that no folder format "
                             f"({', '.join(readers)}) recognises; set EVAL_FORMAT")
    head = bytes(source.blob.data[:8])
    for fmt in REGISTRY.values():
        if any(head.startswith(m) for m in fmt.magic):
            return fmt
    name = source.basename
    for fmt in REGISTRY.values():
        if any(name.endswith(ext) or name.endswith(ext + ".gz") for ext in fmt.extensions):
            return fmt
    for fmt in REGISTRY.values():
        if not fmt.folders and fmt.sniff is not None and fmt.sniff(source):
            return fmt
    raise InputDataError(f"{source.uri}: cannot tell the format from the name or content; set EVAL_FORMAT")


ARCHIVE_EXTENSIONS = (".zip", ".tar.gz", ".tgz", ".tar")


def _is_archive(source: Source) -> bool:
    return source.blob is not None and source.basename.endswith(ARCHIVE_EXTENSIONS)


def files_version(files: list[tuple[str, bytes]]) -> str:
    """The version of an input made of several files: sha256 over each name and its bytes."""
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(f"{len(name)}:{name}:{len(data)}:".encode())
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def _registry() -> dict[str, Format]:
    # Imported here, at the end: each format's module uses the definitions above.
    from jobs.evaluate.formats import coco, tables, yolo

    # The order decides detection where magic bytes, extensions or sniffing match more than one.
    formats = [coco.FORMAT, *tables.FORMATS, yolo.FORMAT]
    return {f.name: f for f in formats}


REGISTRY: dict[str, Format] = _registry()
