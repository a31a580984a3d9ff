"""YOLO (Ultralytics) text files: one label file per image, in a folder, an S3 prefix or an archive.

A line is `class cx cy w h` (a box, normalised to the image's width and height) or
`class x1 y1 x2 y2 ...` (a segment: a polygon, normalised); predictions add the confidence at the
end (`save_txt` with `save_conf`). An empty label file is an image without objects. Where an
`images/` folder is there (inside the input, or beside the `labels/` folder it names), its images
are the image list (also those without a label file) and their headers give the sizes that turn
the coordinates into pixels; without sizes the coordinates stay normalised (the IoU of boxes and
polygons does not change under per-axis scaling, but pixel areas are unknown).

Class names come from EVAL_CLASS_NAMES_URI: an Ultralytics data YAML (`names:` a list or a
{id: name} mapping) or a text file with one name per line; without it classes are their ids.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from common import storage
from common.errors import InputDataError
from jobs.evaluate.formats import ARCHIVE_EXTENSIONS, Format, ReadOptions, Source, files_version
from jobs.evaluate.geometry import Polygons
from jobs.evaluate.load import CategoryInfo, ImageInfo, Table, _check_boxes, _check_scores

# Bytes read of each image for its size: JPEG, PNG and the like say it in their first few KB.
HEADER_BYTES = 64 * 1024
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


# -- files: a folder, an S3 prefix or an archive -> (relative name, bytes) ---------------------------


# What an archive may expand to (label files and images together): a guard against archive bombs.
MAX_ARCHIVE_BYTES = 4 * 2**30


def _archive_members(source: Source) -> list[tuple[str, bytes]]:
    data = bytes(source.blob.data)
    too_big = f"{source.uri}: the archive expands to more than {MAX_ARCHIVE_BYTES:,} bytes"
    try:
        if source.basename.endswith(".zip") or data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                infos = [info for info in archive.infolist() if not info.is_dir() and _wanted(info.filename)]
                if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:  # zipfile reads no more than declared
                    raise InputDataError(too_big)
                return [(info.filename, archive.read(info)) for info in infos]
        if data[:2] == b"\x1f\x8b":  # decompressed in one go: tarfile's seeks in a gzip stream cost more than the parse
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                data = stream.read(MAX_ARCHIVE_BYTES + 1)
            if len(data) > MAX_ARCHIVE_BYTES:
                raise InputDataError(too_big)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            # Only regular files are read: links and devices in an archive are never followed.
            members = [m for m in archive.getmembers() if m.isfile() and _wanted(m.name)]
            if sum(m.size for m in members) > MAX_ARCHIVE_BYTES:  # a sparse member can declare more than it stores
                raise InputDataError(too_big)
            return [(m.name, archive.extractfile(m).read()) for m in members]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InputDataError(f"{source.uri}: cannot read as an archive of YOLO label files: {exc}") from None


def _wanted(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and name.lower().endswith((".txt", *IMAGE_EXTENSIONS))


def _folder_files(source: Source, names: list[str]) -> list[tuple[str, bytes]]:
    blobs = storage.read_many([storage.join(source.uri, n) for n in names])
    return [(n, bytes(b.data)) for n, b in zip(names, blobs)]


def _sibling_images(uri: str) -> tuple[str, list[str]] | None:
    """The `images/` folder beside the `labels/` folder the URI names (Ultralytics' layout)."""
    parts = uri.rstrip("/").split("/")
    if "labels" not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index("labels")
    folder = "/".join(parts[:at] + ["images"] + parts[at + 1:])
    if not storage.is_s3(folder) and not Path(folder).is_dir():
        return None
    names = [n for n in storage.list_names(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    return (folder, names) if names else None


def _key(name: str) -> str:
    """The image a file belongs to: its path without a leading labels/ or images/ folder, nor extension."""
    parts = name.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in ("labels", "images"):
            parts = parts[i + 1:]
            break
    stem, dot, _ = parts[-1].rpartition(".")
    return "/".join([*parts[:-1], stem if dot and stem else parts[-1]])


def _split(names: list[str]) -> tuple[list[str], list[str]]:
    """Label files and image files. Where a `labels/` folder exists, only its .txt files are labels."""
    texts = [n for n in names if n.lower().endswith(".txt")]
    under_labels = [n for n in texts if "labels" in PurePosixPath(n).parts[:-1]]
    images = [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and "images" in PurePosixPath(n).parts[:-1]]
    return (under_labels or texts), images


def _image_size(where: str, name: str, data: bytes, *, reread=None) -> tuple[int, int]:
    """(width, height) from an image's header. `data` may be only the file's first HEADER_BYTES;
    `reread()` then gives the whole file, for headers that run past them (a large ICC or EXIF block)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # parses the header only
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        if reread is None or len(data) < HEADER_BYTES:
            raise InputDataError(f"{where}: {name}: cannot read the image's size: {exc}") from None
    return _image_size(where, name, reread())


def _gather(source: Source) -> tuple[list[tuple[str, bytes]], dict[str, tuple[int, int]], str]:
    """Label files (name, bytes) in name order, image sizes by key, and the input's version."""
    if source.names is not None:
        labels, images = _split(source.names)
        label_files = _folder_files(source, labels)
        image_folder = source
        if not images and (sibling := _sibling_images(source.uri)):
            image_folder, images = Source(sibling[0], names=sibling[1]), sibling[1]
        uris = [storage.join(image_folder.uri, n) for n in images]
        heads = storage.read_many(uris, max_bytes=HEADER_BYTES)
        sizes = {_key(n): _image_size(image_folder.uri, n, bytes(b.data), reread=lambda u=u: bytes(storage.read(u).data))
                 for n, u, b in zip(images, uris, heads)}
        version = files_version(label_files)
    else:
        members = _archive_members(source)
        labels, images = map(set, _split([n for n, _ in members]))
        label_files = [(n, d) for n, d in members if n in labels]
        sizes = {_key(n): _image_size(source.uri, n, d) for n, d in members if n in images}
        version = source.blob.version_later()
    if not label_files:
        raise InputDataError(f"{source.uri}: no YOLO label files (.txt) found")
    return sorted(label_files), sizes, version


# -- class names -----------------------------------------------------------------------------------


def read_class_names(uri: str) -> list[str]:
    """Names by class id from an Ultralytics data YAML or a text file of one name per line."""
    text = _text(uri, bytes(storage.read(uri).data))
    if uri.lower().endswith((".yaml", ".yml")):
        return _yaml_names(uri, text)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise InputDataError(f"{uri}: line {number}: empty class name (one name per line, ids from 0)")
    if not lines:
        raise InputDataError(f"{uri}: no class names")
    return [line.strip() for line in lines]


def _yaml_names(uri: str, text: str) -> list[str]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputDataError(f"{uri}: {where}not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if names is None:
        raise InputDataError(f"{uri}: line 1: no `names:` in this data YAML (a list of names, or id: name)")
    if isinstance(names, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names) or \
                sorted(names) != list(range(len(names))):
            raise InputDataError(f"{uri}: `names:` keys must be the class ids 0..{len(names) - 1}, got {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise InputDataError(f"{uri}: `names:` must be a non-empty list of names or an id: name mapping")
    return [str(n) for n in names]


def _text(uri: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputDataError(f"{uri}: not UTF-8 text (byte {exc.start})") from None


# -- label lines -----------------------------------------------------------------------------------


def _parse(where: str, data: bytes, *, predictions: bool, n_names: int | None):
    """One label file: classes (n,), normalised xywh boxes (n, 4), polygon parts per row (or None
    when every row is a box) and scores (n,) or None."""
    split = [line.split() for line in _text(where, data).splitlines()]
    width = 6 if predictions else 5
    lines = [tokens for tokens in split if tokens]
    if lines and all(len(tokens) == width for tokens in lines):  # the usual file: boxes only, parsed at once
        try:
            values = np.array([t for tokens in lines for t in tokens], dtype=np.float64).reshape(-1, width)
        except ValueError:
            values = None
        if values is not None and _plain_boxes(values, n_names):
            cx, cy, w, h = values[:, 1:5].T
            return (values[:, 0].astype(np.int64), np.column_stack([cx - w / 2, cy - h / 2, w, h]), None,
                    values[:, 5].copy() if predictions else None)
    rows = [row for number, tokens in enumerate(split, 1) if tokens
            for row in [_parse_line(where, number, tokens, predictions=predictions, n_names=n_names)]]
    classes = np.array([r[0] for r in rows], dtype=np.int64)
    boxes = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4)
    parts = [[] if r[2] is None else [r[2]] for r in rows]
    score = np.array([r[3] for r in rows], dtype=np.float64) if predictions else None
    return classes, boxes, parts if any(parts) else None, score


def _plain_boxes(values: np.ndarray, n_names: int | None) -> bool:
    """Every row valid: an integer class in range, finite values, no negative size (else the
    line-by-line path names the first bad line)."""
    cls = values[:, 0]
    return bool(np.isfinite(values).all() and (cls == np.floor(cls)).all() and (cls >= 0).all()
                and (n_names is None or (cls < n_names).all()) and (values[:, 3:5] >= 0).all())


def _parse_line(where: str, number: int, tokens: list[str], *, predictions: bool, n_names: int | None):
    """(class, box xywh normalised, polygon flat or None, score) of one line, or the error naming it."""
    n = len(tokens) - (1 if predictions else 0)  # class + coordinates
    if n != 5 and not (n >= 7 and n % 2 == 1):
        want = ("class cx cy w h conf, or class x1 y1 ... xn yn conf (n >= 3)" if predictions
                else "class cx cy w h, or class x1 y1 ... xn yn (n >= 3)")
        hint = "; predictions need the confidence last (save_conf)" if predictions and len(tokens) in (5, 7) else ""
        raise InputDataError(f"{where}, line {number}: {len(tokens)} values; expected {want}{hint}")
    try:
        cls = int(tokens[0])
    except ValueError:
        try:
            cls = float(tokens[0])
            cls = int(cls) if cls == int(cls) else None
        except (ValueError, OverflowError):
            cls = None
        if cls is None:
            raise InputDataError(f"{where}, line {number}: class {tokens[0]!r} is not an integer id") from None
    if cls < 0 or (n_names is not None and cls >= n_names):
        known = f"the {n_names} names of EVAL_CLASS_NAMES_URI (ids 0..{n_names - 1})" if n_names else "ids >= 0"
        raise InputDataError(f"{where}, line {number}: class {cls} is not in {known}")
    try:
        values = np.array(tokens[1:], dtype=np.float64)
    except ValueError:
        raise InputDataError(f"{where}, line {number}: not a number in {' '.join(tokens)!r}") from None
    if not np.isfinite(values).all():
        raise InputDataError(f"{where}, line {number}: values must be finite numbers")
    score = float(values[-1]) if predictions else None
    coords = values[:n - 1]
    if n == 5:
        cx, cy, w, h = coords
        if w < 0 or h < 0:
            raise InputDataError(f"{where}, line {number}: negative box width or height")
        return cls, (cx - w / 2, cy - h / 2, w, h), None, score
    x, y = coords[0::2], coords[1::2]
    return cls, (x.min(), y.min(), x.max() - x.min(), y.max() - y.min()), coords, score  # the segment's bounds


def read(source: Source, options: ReadOptions) -> Table:
    names = read_class_names(options.class_names_uri) if options.class_names_uri else None
    label_files, sizes, version = _gather(source)
    keys = {}
    for name, _ in label_files:
        key = _key(name)
        if key in keys:
            raise InputDataError(f"{source.uri}: label files {keys[key]!r} and {name!r} are for the same image {key!r}")
        keys[key] = name
    image_ids = sorted(set(keys) | (set(sizes) if not options.predictions else set()))
    position = {k: i for i, k in enumerate(image_ids)}
    files = [(position[key], _parse(f"{source.uri}: {name}", data, predictions=options.predictions,
                                    n_names=len(names) if names else None))
             for (name, data), key in zip(label_files, keys)]
    image = np.concatenate([np.full(rows[0].size, i, dtype=np.int64) for i, rows in files]) if files else np.zeros(0, np.int64)
    classes = np.concatenate([rows[0] for _, rows in files])
    box_array = np.concatenate([rows[1] for _, rows in files])
    polygons = None
    if any(rows[2] is not None for _, rows in files):
        polygons = Polygons.from_rows([p for _, rows in files for p in (rows[2] or [[]] * rows[0].size)])
    scores = np.concatenate([rows[3] for _, rows in files]) if options.predictions else None
    # Pixels where every image's size is known; else the coordinates stay normalised.
    sized = bool(image_ids) and all(k in sizes for k in image_ids)
    if sized:
        wh = np.array([sizes[k] for k in image_ids], dtype=np.float64)
        box_array = box_array * np.tile(wh[image], 2) if image.size else box_array
        if polygons is not None:
            polygons = scale_polygons(polygons, wh[image])
    _check_boxes(box_array, source.uri, lambda i: f"row {i + 1}")
    score = None
    if options.predictions:
        score = scores
        _check_scores(score, source.uri, lambda i: f"row {i + 1}")
    cls_codes, cls_refs = _class_codes(classes, names, predictions=options.predictions)
    images = [ImageInfo(id=k, file_name=k, width=sizes.get(k, (None, None))[0], height=sizes.get(k, (None, None))[1])
              for k in image_ids]
    return Table(
        uri=source.uri, format="yolo", version=version,
        image_codes=image, image_refs=image_ids,
        category_codes=cls_codes, category_refs=cls_refs,
        score=score, boxes=box_array, polygons=polygons, iscrowd=np.zeros(image.size, dtype=bool),
        images=None if options.predictions else images,
        categories=[CategoryInfo(id=i, name=n) for i, n in enumerate(names)] if names and not options.predictions else None,
        normalised=not sized,
    )


def _class_codes(classes: np.ndarray, names: list[str] | None, *, predictions: bool) -> tuple[np.ndarray, list]:
    """Ground truth refers to class ids (its categories carry the names); predictions to names
    where they are known, so that they also resolve against another format's categories."""
    uniques, codes = np.unique(classes, return_inverse=True)
    refs = uniques.tolist()
    if predictions and names:
        refs = [names[i] for i in refs]
    return codes.reshape(-1).astype(np.int64), refs


def scale_polygons(polygons: Polygons, wh: np.ndarray) -> Polygons:
    """Polygons with each row's x scaled by wh[row, 0] and y by wh[row, 1]."""
    vertex_row = np.repeat(np.repeat(np.arange(len(polygons)), np.diff(polygons.row_start)), np.diff(polygons.part_start))
    return Polygons(polygons.xy * wh[vertex_row], polygons.part_start, polygons.row_start)


def _is_yolo_folder(source: Source) -> bool:
    return any(n.lower().endswith(".txt") for n in source.names)


FORMAT = Format(name="yolo", read=read, extensions=ARCHIVE_EXTENSIONS, magic=(b"PK\x03\x04",),
                sniff=_is_yolo_folder, folders=True)
