"""The format-neutral `Table`, and the readers of COCO JSON and of tables (CSV, Parquet, JSONL).

Nothing here matches or scores: each input becomes one `Table` of rows (objects or detections)
with image and category references kept as codes into their unique values, so later steps work on
integer arrays. Problems with the data raise `InputDataError` naming the file, row and column.
Which reader reads an input is decided once, by the registry in `jobs.evaluate.formats`.
"""

from __future__ import annotations

import functools
import gc
import io
import itertools
import operator
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter

import msgspec
import numpy as np

from common.errors import ConfigError, InputDataError
from common.forked import WorkerFailed, map_forked, usable_cpus
from common.storage import Blob
from jobs.evaluate.geometry import Polygons

# -- COCO schemas, decoded straight into typed objects (msgspec validates while it parses) -------


# A segmentation stays raw JSON while a file is decoded; `_polygons` decodes it in chunks of rows.
NO_SEGMENTATION = msgspec.Raw(b"null")


Box = tuple[float, float, float, float]  # x, y, width, height; a tuple is one allocation, a list two


# gc=False: these hold no cycles, so the cyclic collector need not track (and rescan) them.
class ImageInfo(msgspec.Struct, gc=False):
    """One image an input lists (also one without objects): its id, file name and size in pixels."""

    id: int | str
    file_name: str | None = None
    height: int | None = None  # needed to rasterise polygons and check RLE sizes (EVAL_IOU_TYPE=segm)
    width: int | None = None


class CocoAnnotation(msgspec.Struct, gc=False):
    image_id: int | str
    category_id: int | str
    bbox: Box | None = None
    iscrowd: int | bool = 0
    segmentation: msgspec.Raw = NO_SEGMENTATION
    area: float | None = None  # COCO's area ranges use it, as pycocotools does


class CategoryInfo(msgspec.Struct):
    id: int | str
    name: str


class CocoGroundTruth(msgspec.Struct):
    images: list[ImageInfo]
    annotations: list[CocoAnnotation]
    categories: list[CategoryInfo] = []


class CocoResult(msgspec.Struct, gc=False):
    image_id: int | str
    category_id: int | str
    score: float
    bbox: Box | None = None
    segmentation: msgspec.Raw = NO_SEGMENTATION


# -- the normalised form ---------------------------------------------------------------------------


@dataclass
class Table:
    """One input as columns; row i is one ground-truth object or one detection.

    image_codes[i] indexes `image_refs` (file names, paths or ids); category_codes[i] indexes
    `category_refs` (ids or names) and is -1 for a row that only lists an image. `boxes` is (n, 4)
    xywh float64 or None; `polygons` is a `Polygons` (every row's parts, columnar) or None.

    Optional, for any format: `images`, every image of the input (also those without rows), with
    `image_refs` then being their ids; `categories`, the category list category refs must be in;
    `image_refs_are_ids`, refs that join to another input's image ids (COCO results) rather than
    by file name. `normalised`: coordinates are fractions of the image's width and height (YOLO).
    """

    uri: str
    format: str
    version: str | Callable[[], str]  # or a function giving it (a file's sha256 still on its thread)
    image_codes: np.ndarray
    image_refs: list
    category_codes: np.ndarray
    category_refs: list
    score: np.ndarray | None = None
    boxes: np.ndarray | None = None
    polygons: Polygons | None = None
    iscrowd: np.ndarray | None = None
    # COCO, and tables with a `segmentation` column: each row's segmentation as raw JSON (masks.py
    # reads it under EVAL_IOU_TYPE=segm), and which rows hold RLE (a dict) rather than polygons;
    # ground truth also its `area` per row (NaN where not given).
    segmentations: list[msgspec.Raw] | None = None
    rle_rows: np.ndarray | None = None
    area: np.ndarray | None = None
    # How a message names row i's segmentation (`coco_rows`, `table_rows`); by row number when unset.
    name_segmentation: Callable[[int], str] | None = None
    # Tables with `height` and `width` columns: each row's image size (n, 2), for EVAL_IOU_TYPE=segm.
    row_sizes: np.ndarray | None = None
    images: list[ImageInfo] | None = None
    categories: list[CategoryInfo] | None = None
    image_refs_are_ids: bool = False
    normalised: bool = False

    @property
    def rows(self) -> int:
        return len(self.image_codes)

    def segmentation_at(self, row: int) -> str:
        return self.name_segmentation(row) if self.name_segmentation else f"{self.uri}: row {row + 1}"


def coco_rows(uri: str, where: str) -> Callable[[int], str]:
    """Names row i's segmentation as COCO's JSON path does: `annotations[i].segmentation`, `[i].segmentation`."""
    return lambda row: f"{uri}: {where}[{row}].segmentation"


def table_rows(uri: str, column: str) -> Callable[[int], str]:
    """Names row i's cell of a table column, counting rows from 1 as every table message does."""
    return lambda row: f"{uri}: row {row + 1}, column {column!r}"


GZIP_MAGIC = b"\x1f\x8b"


def decompressed(blob: Blob, *, max_bytes: int) -> Blob:
    """A gzip-compressed input (recognised by its content, whatever its name), decompressed up to
    `max_bytes` (EVAL_MAX_DECOMPRESSED_BYTES); other inputs as they are. The version stays that of
    the stored (compressed) object."""
    if blob.data[:2] != GZIP_MAGIC:
        return blob
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob.data)) as gz:
            data = gz.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise InputDataError(f"{blob.uri}: not a readable gzip file: {exc}") from None
    if len(data) > max_bytes:
        raise InputDataError(f"{blob.uri}: decompresses to more than EVAL_MAX_DECOMPRESSED_BYTES={max_bytes:,} bytes")
    return Blob(blob.uri, data, blob.version)


def _check_not_empty(blob: Blob) -> None:
    if re.search(rb"\S", blob.data) is None:  # stops at the first non-space; strip() would copy the file
        raise InputDataError(f"{blob.uri}: the file is empty")


def _decode_json(blob: Blob, schema):
    _check_not_empty(blob)
    try:
        return msgspec.json.decode(blob.data, type=schema)
    except msgspec.ValidationError as exc:
        raise InputDataError(f"{blob.uri}: {_describe_validation(exc)}") from None
    except msgspec.DecodeError as exc:
        hint = " (one JSON object per line? set EVAL_FORMAT=jsonl)" if "trailing" in str(exc).lower() else ""
        raise InputDataError(f"{blob.uri}: not valid JSON: {exc}{hint}") from None
    except RecursionError:
        raise InputDataError(f"{blob.uri}: {TOO_DEEP}") from None


# msgspec (and json) recurse per nesting level: 100,000 `[` overflow the stack (RecursionError).
TOO_DEEP = "JSON nested too deeply (COCO and table values nest a few levels, not thousands)"


def _describe_validation(exc: msgspec.ValidationError, first_row: int = 0) -> str:
    # msgspec says e.g. "Expected `float`, got `str` - at `$[12].score`": row 12 (0-based) of
    # what it decoded, which starts at row `first_row` of the file.
    text = str(exc)
    if first_row:
        text = re.sub(r"`\$\[(\d+)\]", lambda m: f"`$[{first_row + int(m.group(1))}]", text)
    return text.replace(" - at `$", " at `")


# -- COCO ------------------------------------------------------------------------------------------


def _int_codes(ints: np.ndarray) -> tuple[np.ndarray, list]:
    """`_codes` of int64 ids: codes and the sorted unique ids (as Python ints)."""
    low, high = (int(ints.min()), int(ints.max())) if ints.size else (0, 0)
    if 0 <= low and high < 4 * ints.size + 1024:  # ids in a compact range: count, don't sort
        present = np.bincount(ints) > 0
        return (np.cumsum(present) - 1)[ints], np.flatnonzero(present).tolist()
    uniques, codes = np.unique(ints, return_inverse=True)
    return codes.reshape(-1).astype(np.int64, copy=False), uniques.tolist()


@contextmanager
def _gc_paused():
    """Pause the cyclic GC while a decode builds a Python object per JSON value.

    Those allocations trigger collections that rescan every object built so far: on 490,000
    COCO results the GC took more than half of the decode time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _codes(values: list) -> tuple[np.ndarray, list]:
    """Integer codes into the unique values, keeping ints and strings apart (id 1 != name '1')."""
    keyed = [(type(v) is str, v) for v in values]
    uniques = sorted(set(keyed))
    index = {u: i for i, u in enumerate(uniques)}
    return np.fromiter((index[k] for k in keyed), dtype=np.int64, count=len(keyed)), [u[1] for u in uniques]


def _ids(objects: list, field: str) -> np.ndarray | list:
    """One id field of decoded objects: int64 when every id is an int (COCO's usual), else the
    values as decoded. operator.index refuses strings, which numpy would parse ('12' is not 12)."""
    try:
        return np.fromiter(map(operator.index, map(attrgetter(field), objects)), dtype=np.int64, count=len(objects))
    except (TypeError, OverflowError):  # a string id, or an int beyond int64
        return list(map(attrgetter(field), objects))


def _id_codes(parts: list) -> tuple[np.ndarray, list]:
    """`_codes` of ids read in parts (each from `_ids`)."""
    if all(isinstance(part, np.ndarray) for part in parts):
        return _int_codes(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return _codes([v for part in parts for v in (part.tolist() if isinstance(part, np.ndarray) else part)])


def _box_column(objects: list, uri: str, where: str, *, optional: bool, first_row: int = 0) -> np.ndarray | None:
    """(n, 4) boxes of decoded objects (msgspec checked each is 4 numbers, or null). With
    `optional`, all rows without a box give None; otherwise a missing box is an error."""
    try:
        boxes = np.fromiter(itertools.chain.from_iterable(map(attrgetter("bbox"), objects)), dtype=np.float64,
                            count=4 * len(objects)).reshape(-1, 4)
    except TypeError:  # a null box
        bboxes = list(map(attrgetter("bbox"), objects))
        if optional and bboxes.count(None) == len(bboxes):
            return None
        detail = "has no bbox while other results do" if optional else "has no bbox"
        raise InputDataError(f"{uri}: {where}[{first_row + bboxes.index(None)}] {detail}") from None
    _check_boxes(boxes, uri, lambda i: f"{where}[{first_row + i}].bbox")
    return boxes


def _check_boxes(boxes: np.ndarray, uri: str, locate) -> None:
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if bad.size:
        raise InputDataError(f"{uri}: {locate(bad[0])}: box values must be finite numbers, got {boxes[bad[0]].tolist()}")
    bad = np.flatnonzero((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if bad.size:
        raise InputDataError(f"{uri}: {locate(bad[0])}: negative box width or height {boxes[bad[0]].tolist()}")


# Polygons (lists of x, y lists), RLE (a dict) or nothing, for every row of a chunk.
_SEGMENTATIONS = msgspec.json.Decoder(list[list[list[float]] | dict | None])
_SEGMENTATION = msgspec.json.Decoder(list[list[float]] | dict | None)
# Rows per chunk where a file is decoded in chunks: each chunk's Python objects reuse the memory
# of the one before, instead of a whole file's objects faulting in fresh pages.
_ROWS_PER_CHUNK = 2000


def _polygons(segmentations: list[msgspec.Raw], locate: Callable[[int], str]) -> tuple[Polygons | None, np.ndarray]:
    """Every row's polygon parts as one `Polygons` (None when no row has a polygon), and the rows
    whose segmentation is RLE.

    The segmentations were kept as raw JSON while the file was decoded; they are decoded here a
    chunk of rows at a time and flattened into arrays. RLE (dict) and missing segmentations have
    no parts; RLE is read by masks.py (EVAL_IOU_TYPE=segm) and refused where it cannot be used.
    """
    if segmentations.count(NO_SEGMENTATION) == len(segmentations):
        return None, np.zeros(0, np.int64)
    chunks = [_polygon_chunk(segmentations[start:start + _ROWS_PER_CHUNK], start, locate)
              for start in range(0, len(segmentations), _ROWS_PER_CHUNK)]
    polygons = Polygons.concatenate([p for p, _ in chunks])
    rle_rows = np.concatenate([r for _, r in chunks])
    return (polygons if polygons.part_start.size > 1 else None), rle_rows


def _polygon_chunk(raws: list[msgspec.Raw], first_row: int, locate: Callable[[int], str]) -> tuple[Polygons, np.ndarray]:
    try:
        segmentations = _SEGMENTATIONS.decode(b"[" + b",".join(raws) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        for i, raw in enumerate(raws):  # name the row
            try:
                _SEGMENTATION.decode(raw)
            except msgspec.ValidationError as exc:
                raise InputDataError(f"{locate(first_row + i)}: {_describe_validation(exc)}") from None
            except msgspec.DecodeError as exc:  # such as invalid UTF-8 in a string, which the first pass let through
                raise InputDataError(f"{locate(first_row + i)}: not valid JSON: {exc}") from None
            except RecursionError:
                raise InputDataError(f"{locate(first_row + i)}: {TOO_DEEP}") from None
        raise
    rle_rows = first_row + np.flatnonzero(np.fromiter((isinstance(seg, dict) for seg in segmentations), dtype=bool,
                                                       count=len(segmentations)))
    # All parts of all rows as one flat array, checked at once.
    rows = [seg if isinstance(seg, list) else [] for seg in segmentations]
    n_parts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    parts = list(itertools.chain.from_iterable(rows))
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    flat = np.fromiter(itertools.chain.from_iterable(parts), dtype=np.float64, count=int(sizes.sum()))
    ends = np.cumsum(sizes)
    nonfinite_before = np.r_[0, np.cumsum(~np.isfinite(flat))]
    nonfinite = nonfinite_before[ends] - nonfinite_before[ends - sizes]
    bad = np.flatnonzero((sizes < 6) | (sizes % 2 == 1) | (nonfinite > 0))
    if bad.size:
        row = first_row + int(np.searchsorted(np.cumsum(n_parts), bad[0], side="right"))
        raise InputDataError(f"{locate(row)}: a polygon needs >= 3 finite x, y pairs")
    return Polygons.from_flat(flat, sizes, n_parts), rle_rows


def _kept(segmentations: list[msgspec.Raw]) -> list[msgspec.Raw] | None:
    """The raw segmentations, or None when no row has one."""
    return None if segmentations.count(NO_SEGMENTATION) == len(segmentations) else segmentations


def read_coco_ground_truth(blob: Blob) -> Table:
    with _gc_paused():
        gt = _decode_json(blob, CocoGroundTruth)
        anns = gt.annotations
        image_codes, image_refs = _id_codes([_ids(anns, "image_id")])
        category_codes, category_refs = _id_codes([_ids(anns, "category_id")])
        boxes = _box_column(anns, blob.uri, "annotations", optional=False)
        segmentations = list(map(attrgetter("segmentation"), anns))
        polygons, rle_rows = _polygons(segmentations, coco_rows(blob.uri, "annotations"))
        iscrowd = np.fromiter(map(bool, map(attrgetter("iscrowd"), anns)), dtype=bool, count=len(anns))
        area = np.fromiter((np.nan if a is None else a for a in map(attrgetter("area"), anns)), dtype=np.float64,
                           count=len(anns))
        images, categories = gt.images, gt.categories
        # Free the decoded objects while the GC is paused: re-enabled, it would scan them all once.
        del gt, anns
    return Table(
        uri=blob.uri, format="coco", version=blob.version_later(),
        image_codes=image_codes, image_refs=image_refs,
        category_codes=category_codes, category_refs=category_refs,
        boxes=boxes, polygons=polygons, iscrowd=iscrowd, area=area,
        segmentations=_kept(segmentations), rle_rows=rle_rows, name_segmentation=coco_rows(blob.uri, "annotations"),
        images=images, categories=categories, image_refs_are_ids=True,
    )


_RESULTS = msgspec.json.Decoder(list[CocoResult])


@dataclass
class _Results:
    """Columns of a chunk of COCO results that starts at row `first` of the file."""

    first: int
    image_ids: np.ndarray | list
    category_ids: np.ndarray | list
    score: np.ndarray
    boxes: np.ndarray | None  # None: no result of the chunk has a box
    segmentations: list[msgspec.Raw] | None  # None: no result of the chunk has one

    @property
    def rows(self) -> int:
        return self.score.size


def read_coco_results(blob: Blob) -> Table:
    """COCO results, decoded in chunks of rows and straight into columns.

    The file is cut into pieces of about 256 KiB, each decoded by the CPUs' forked workers
    (`_decode_pieces`): 0.49 s to 0.28 s in the job on the 71 MB benchmark file with 2 CPUs. An input that
    piece-wise decoding refuses, for whatever reason, is read again row by row (`_decode_rows`),
    which names the first bad row exactly as a whole-file decode would.
    """
    with _gc_paused():
        try:
            chunks = _decode_pieces(blob)
            _check_boxes_in_all_or_none(chunks, blob.uri)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, InputDataError, WorkerFailed):
            chunks = _decode_rows(blob)
            _check_boxes_in_all_or_none(chunks, blob.uri)
        if any(chunk.segmentations is not None for chunk in chunks):
            segmentations = [seg for chunk in chunks
                             for seg in (chunk.segmentations or [NO_SEGMENTATION] * chunk.rows)]
            polygons, rle_rows = _polygons(segmentations, coco_rows(blob.uri, ""))
        else:
            segmentations, polygons, rle_rows = None, None, np.zeros(0, np.int64)
    image_codes, image_refs = _id_codes([chunk.image_ids for chunk in chunks])
    category_codes, category_refs = _id_codes([chunk.category_ids for chunk in chunks])
    score = np.concatenate([chunk.score for chunk in chunks]) if chunks else np.zeros(0)
    # Boxes on every row or on none (checked above). No rows at all ([]) is an empty prediction set,
    # as a header-only CSV is: zero boxes, not "no geometry".
    boxes = (np.zeros((0, 4)) if not chunks else None if chunks[0].boxes is None
             else np.concatenate([chunk.boxes for chunk in chunks]))
    return Table(
        uri=blob.uri, format="coco", version=blob.version_later(),
        image_codes=image_codes, image_refs=image_refs,
        category_codes=category_codes, category_refs=category_refs,
        score=score, boxes=boxes, polygons=polygons,
        iscrowd=np.zeros(score.size, dtype=bool), image_refs_are_ids=True,
        segmentations=_kept(segmentations) if segmentations is not None else None, rle_rows=rle_rows,
        name_segmentation=coco_rows(blob.uri, ""),
    )


def _check_boxes_in_all_or_none(chunks: list[_Results], uri: str) -> None:
    """Each chunk's boxes are all there or all missing (else decoding it failed); so must the file's be."""
    boxless = [chunk for chunk in chunks if chunk.boxes is None]
    if boxless and len(boxless) < len(chunks):
        raise InputDataError(f"{uri}: [{boxless[0].first}] has no bbox while other results do")


# A boundary between two results: a closing brace, a comma, an opening brace. Found by searching, it
# may also lie inside a string or a nested value; then the piece before it is not valid JSON (a
# string or bracket is left open), its decode fails and the file is read row by row instead.
_RESULT_BOUNDARY = re.compile(rb"\}\s*,\s*\{")
_PIECE_BYTES = 1 << 18
_MIN_FORKED_BYTES = 4 << 20  # per worker: with less, forking costs more than it saves


def _decode_pieces(blob: Blob) -> list[_Results]:
    """Every piece of the file decoded into columns, in order, the pieces shared among the CPUs."""
    data, cuts, pos = blob.data, [], _PIECE_BYTES
    while pos < len(data) and (found := _RESULT_BOUNDARY.search(data, pos)) is not None:
        cuts.append(data.find(b",", found.start()))  # (an mmap has no index())
        pos = cuts[-1] + _PIECE_BYTES
    bounds = [0, *cuts, len(data)]
    # Piece i is the results between cut i - 1 and cut i, made an array: `[` before all but the
    # first (which has the file's own), `]` after all but the last.
    pieces = [(bounds[i] + (i > 0), bounds[i + 1], i > 0, i < len(cuts)) for i in range(len(cuts) + 1)]
    workers = min(usable_cpus(), 8, max(1, len(data) // _MIN_FORKED_BYTES), len(pieces))
    shares = [pieces[w * len(pieces) // workers:(w + 1) * len(pieces) // workers] for w in range(workers)]
    chunks = [chunk for share in map_forked(functools.partial(_decode_share, data, blob.uri), shares)
              for chunk in share]
    first = 0
    for chunk in chunks:
        chunk.first, first = first, first + chunk.rows
    return chunks


def _decode_share(data, uri: str, pieces: list[tuple[int, int, bool, bool]]) -> list[_Results]:
    chunks = []
    with memoryview(data) as view:  # released on the way out, also on an error (an mmap cannot close while viewed)
        for lo, hi, opens, closes in pieces:
            piece = bytearray(b"[" * opens)
            piece += view[lo:hi]  # one copy of the bytes, not two
            piece += b"]" * closes
            chunks.append(_columns(_RESULTS.decode(piece), 0, uri))
    return chunks


def _decode_rows(blob: Blob) -> list[_Results]:
    """The exact path: each result's raw JSON first (which checks the file's syntax), then chunks
    of rows decoded into typed objects; a bad row is named by its index in the file."""
    raws = _decode_json(blob, list[msgspec.Raw])
    return [_results(raws[first:first + _ROWS_PER_CHUNK], first, blob.uri)
            for first in range(0, len(raws), _ROWS_PER_CHUNK)]


def _results(raws: list[msgspec.Raw], first: int, uri: str) -> _Results:
    try:
        results = _RESULTS.decode(b"[" + b",".join(raws) + b"]")
    except msgspec.ValidationError as exc:
        raise InputDataError(f"{uri}: {_describe_validation(exc, first)}") from None
    except msgspec.DecodeError as exc:  # what the raw pass does not check, such as UTF-8 inside strings
        raise InputDataError(f"{uri}: rows {first}..{first + len(raws) - 1}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputDataError(f"{uri}: rows {first}..{first + len(raws) - 1}: {TOO_DEEP}") from None
    return _columns(results, first, uri)


def _columns(results: list[CocoResult], first: int, uri: str) -> _Results:
    score = np.fromiter(map(attrgetter("score"), results), dtype=np.float64, count=len(results))
    _check_scores(score, uri, lambda i: f"[{first + i}].score")
    segmentations = list(map(attrgetter("segmentation"), results))
    return _Results(first, _ids(results, "image_id"), _ids(results, "category_id"), score,
                    _box_column(results, uri, "", optional=True, first_row=first),
                    None if segmentations.count(NO_SEGMENTATION) == len(segmentations) else segmentations)


def _check_scores(score: np.ndarray, uri: str, locate) -> None:
    bad = np.flatnonzero(~np.isfinite(score))
    if bad.size:
        raise InputDataError(f"{uri}: {locate(bad[0])}: score must be a finite number, got {score[bad[0]]}")


# -- tables ----------------------------------------------------------------------------------------


MAX_JSONL_DEPTH = 64  # a table row nests 3 levels (row, polygon parts, polygon)
_DEPTH_CHUNK = 1 << 22
_BRACKET_STEP = np.zeros(256, np.int8)  # byte -> +1 for [ and {, -1 for ] and }
_BRACKET_STEP[[ord("["), ord("{")]], _BRACKET_STEP[[ord("]"), ord("}")]] = 1, -1


def _check_jsonl_depth(blob: Blob) -> None:
    """Refuse JSONL lines nested deeper than MAX_JSONL_DEPTH before pyarrow parses them: its
    reader recurses per level and a 100,000-deep line overflows its stack (the process dies by
    SIGSEGV). Brackets are counted per line, in chunks (strings hold no raw newline); brackets
    inside strings can only make the count larger."""
    data, depth, lines = blob.data, 0, 0
    for start in range(0, len(data), _DEPTH_CHUNK):
        a = np.frombuffer(data[start:start + _DEPTH_CHUNK], np.uint8)
        level = np.cumsum(_BRACKET_STEP[a], dtype=np.int32) + depth  # |level| <= chunk + limit
        newlines = np.flatnonzero(a == 10)
        starts = np.r_[0, newlines + 1]
        base = np.r_[0, level[newlines]]  # the depth restarts at 0 after each newline
        keep = starts < a.size
        deepest = np.maximum.reduceat(level, starts[keep]) - base[keep]
        if deepest.size and deepest.max() > MAX_JSONL_DEPTH:
            line = lines + int(np.flatnonzero(deepest > MAX_JSONL_DEPTH)[0]) + 1
            raise InputDataError(f"{blob.uri}: row {line}: {TOO_DEEP}")
        depth, lines = max(int(level[-1] - base[-1]), 0), lines + newlines.size  # stray closers never lower it


def _read_arrow(blob: Blob, fmt: str, data: bytes | None = None):
    """The table in `blob` (or in `data`, the same table reworked: `_jsonl_apart`)."""
    import pyarrow as pa

    _check_not_empty(blob)
    if fmt == "jsonl":
        _check_jsonl_depth(blob)
    # An Arrow buffer reader, not a Python file: Arrow's threads never hold a Python object, which
    # they would release after the interpreter is gone when a bad input ends the run (abort, 134).
    source = pa.BufferReader(blob.data if data is None else data)
    try:
        if fmt == "csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(source)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(source).read()  # synchronous: no scan left running in the background
        if fmt == "jsonl":
            import pyarrow.json as pajson

            return pajson.read_json(source)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        raise InputDataError(f"{blob.uri}: cannot read as {fmt}: {_rows_from_one(str(exc)) if fmt == 'jsonl' else exc}") from None
    raise ConfigError(f"EVAL_FORMAT: {fmt!r} is not a table format")


def _rows_from_one(message: str) -> str:
    """pyarrow's JSON reader counts rows from 0 ("in row 1" is the second line); CSV and Parquet
    errors here count from 1, and so do JSONL ones."""
    return re.sub(r"\bin row (\d+)", lambda m: f"in row {int(m.group(1)) + 1}", message)


def _column(table, name: str, uri: str, *, our: str):
    if name not in table.column_names:
        mapped = f" (mapped from {our!r} by EVAL_COLUMNS)" if name != our else ""
        raise InputDataError(
            f"{uri}: missing column {name!r}{mapped}; found {table.column_names}. "
            f'Map yours with EVAL_COLUMNS, e.g. {{"{our}": "your_column"}}'
        )
    return table.column(name).combine_chunks()


def _check_flat(col, name: str, uri: str) -> None:
    """Refuse list, struct, map (and other nested) columns where one value per row is expected."""
    if col.type.num_fields:  # nested types have child fields; numbers, strings and dictionaries none
        raise InputDataError(f"{uri}: column {name!r}: expected one value per row, got {col.type}")


def _numeric(table, name: str, uri: str, *, our: str, nullable: bool = False) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = _column(table, name, uri, our=our)
    _check_flat(col, name, uri)
    if not nullable and col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: missing value")
    try:
        values = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        texts = col.cast(pa.string()).to_pylist()
        for row, text in enumerate(texts):
            try:
                float(text) if text is not None else None
            except ValueError:
                raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: not a number: {text!r}") from None
        raise InputDataError(f"{uri}: column {name!r}: not numeric ({col.type})") from None
    return values.to_numpy(zero_copy_only=False)


def _dictionary(table, name: str, uri: str, *, our: str, nullable: bool = False) -> tuple[np.ndarray, list]:
    """Codes and unique values of a column, decoded once per distinct value, not per row."""
    import pyarrow as pa

    col = _column(table, name, uri, our=our)
    _check_flat(col, name, uri)
    if col.null_count and not nullable:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: missing value")
    if pa.types.is_floating(col.type):
        raise InputDataError(f"{uri}: column {name!r}: expected names or integer ids, got {col.type}")
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    codes = col.indices.to_numpy(zero_copy_only=False)
    codes = np.where(col.is_null().to_numpy(zero_copy_only=False), -1, codes).astype(np.int64)
    values = col.dictionary.to_pylist()
    # A CSV's empty cell in a text column is "", not null: a blank value is a missing one.
    blank = np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    if blank.any():
        is_blank = (codes >= 0) & blank[np.maximum(codes, 0)]
        if not nullable and is_blank.any():
            raise InputDataError(f"{uri}: row {int(np.flatnonzero(is_blank)[0]) + 1}, column {name!r}: missing value")
        remap = np.where(blank, -1, np.cumsum(~blank) - 1)
        codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        values = [v for v, b in zip(values, blank) if not b]
    return codes, values


_LINES = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _jsonl_apart(data: bytes, column: str) -> tuple[bytes, list[msgspec.Raw]] | None:
    """JSONL lines without `column`, and its raw value on each line (`null` where a line has none).

    Arrow types a JSONL column by its first values, so it refuses a `segmentation` column that holds
    polygons (arrays) on some lines and RLE (objects) on others, as COCO ground truth with crowd
    regions does. The other values are passed to Arrow byte for byte, one object per line, as
    before. None where msgspec cannot split the lines (Arrow then reads, or refuses, the file as is).
    """
    try:
        lines = _LINES.decode_lines(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    cells = [line.pop(column, NO_SEGMENTATION) for line in lines]
    encode = functools.lru_cache(maxsize=None)(msgspec.json.encode)
    rest = b"\n".join(b"{" + b",".join(encode(k) + b":" + bytes(v) for k, v in line.items()) + b"}" for line in lines)
    return rest, cells


def _table_segmentations(cells: list, locate: Callable[[int], str]) -> list[msgspec.Raw]:
    """A `segmentation` column's cells as raw JSON, one value each, as COCO's `segmentation`: polygon
    parts or RLE. A cell is JSON text (CSV, or any string column), the format's own lists and structs
    (Parquet), or a line's raw value (JSONL). Empty is a row without one; one flat list of x, y is one part."""
    out = []
    for row, value in enumerate(cells):
        if isinstance(value, msgspec.Raw):  # valid JSON: msgspec split it off its line
            value = msgspec.json.decode(value)
        if isinstance(value, str):
            try:
                value = msgspec.json.decode(value) if value.strip() else None
            except msgspec.DecodeError as exc:
                raise InputDataError(f"{locate(row)}: not valid JSON: {exc}") from None
            except RecursionError:
                raise InputDataError(f"{locate(row)}: {TOO_DEEP}") from None
        if value is None:
            out.append(NO_SEGMENTATION)
            continue
        if isinstance(value, list) and value and not isinstance(value[0], list):
            value = [value]
        out.append(msgspec.Raw(msgspec.json.encode(value)))
    return out


def _table_polygons(table, name: str, uri: str) -> Polygons | None:
    if name not in table.column_names:
        return None
    out = []
    for row, value in enumerate(table.column(name).to_pylist()):
        if value is None or value == "":
            out.append([])
            continue
        if isinstance(value, str):
            try:
                value = msgspec.json.decode(value)
            except msgspec.DecodeError:
                raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: not a JSON list of x, y") from None
            except RecursionError:
                raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: {TOO_DEEP}") from None
        if not isinstance(value, list):
            rle = "; RLE goes in a `segmentation` column (polygons or RLE)" if isinstance(value, dict) else ""
            raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: not a list of x, y{rle}")
        parts = value if value and isinstance(value[0], list) else [value]
        try:
            arrays = [np.asarray(p, dtype=np.float64) for p in parts]
        except (TypeError, ValueError):
            raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: not a list of numbers") from None
        if any(a.ndim != 1 or a.size < 6 or a.size % 2 or not np.isfinite(a).all() for a in arrays):
            raise InputDataError(f"{uri}: row {row + 1}, column {name!r}: a polygon needs >= 3 finite x, y pairs")
        out.append(arrays)
    return Polygons.from_rows(out)


def read_table(blob: Blob, fmt: str, columns, *, predictions: bool) -> Table:
    """A CSV/Parquet/JSONL table; `columns(name)` maps our column names to the file's."""
    uri = blob.uri
    segmentation = columns("segmentation")
    apart = None
    if fmt == "jsonl" and blob.data.find(msgspec.json.encode(segmentation)) >= 0:  # bytes or an mmap
        apart = _jsonl_apart(blob.data, segmentation)
    table = _read_arrow(blob, fmt, apart[0] if apart else None)
    image_codes, image_refs = _dictionary(table, columns("image"), uri, our="image")
    # Ground-truth rows without a category list an image that has no objects.
    category_codes, category_refs = _dictionary(table, columns("category"), uri, our="category", nullable=not predictions)
    score = None
    if predictions:
        score = _numeric(table, columns("score"), uri, our="score")
        _check_scores(score, uri, lambda i: f"row {i + 1}, column {columns('score')!r}")
    box_names = [columns(c) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
    present = [n in table.column_names for n in box_names]
    boxes = None
    if any(present):
        if not all(present):
            missing = [n for n, p in zip(box_names, present) if not p]
            raise InputDataError(f"{uri}: missing box column(s) {missing}; a box needs all of {box_names}")
        boxes = np.column_stack([_numeric(table, n, uri, our=n, nullable=not predictions) for n in box_names])
        has = category_codes >= 0
        _check_boxes(np.where(has[:, None], boxes, 0.0), uri, lambda i: f"row {i + 1}, columns {box_names}")
    polygon = columns("polygon")
    segmentations, rle_rows, named = None, None, table_rows(uri, polygon)
    if apart or segmentation in table.column_names:
        if polygon in table.column_names:
            raise InputDataError(f"{uri}: columns {segmentation!r} and {polygon!r}: give one (a segmentation "
                                 "is polygons or RLE; a polygon column is polygons)")
        named = table_rows(uri, segmentation)
        cells = apart[1] if apart else table.column(segmentation).to_pylist()
        segmentations = _table_segmentations(cells, named)
        polygons, rle_rows = _polygons(segmentations, named)
        segmentations = _kept(segmentations)
    else:
        polygons = _table_polygons(table, polygon, uri)
    iscrowd = np.zeros(len(image_codes), dtype=bool)
    if not predictions:
        iscrowd = _table_crowd(table, columns, uri, category_codes >= 0)
    return Table(
        uri=uri, format=fmt, version=blob.version_later(),
        image_codes=image_codes, image_refs=image_refs,
        category_codes=category_codes, category_refs=category_refs,
        score=score, boxes=boxes, polygons=polygons,
        segmentations=segmentations, rle_rows=rle_rows, name_segmentation=named,
        iscrowd=iscrowd, row_sizes=_table_sizes(table, columns, uri),
    )


def _table_crowd(table, columns, uri: str, has: np.ndarray) -> np.ndarray:
    """Ground truth's optional `iscrowd` column (0 or 1, also true/false; empty is 0): COCO's crowd
    regions, on the rows that have a category."""
    iscrowd = np.zeros(has.size, dtype=bool)
    name = columns("iscrowd")
    if name in table.column_names:
        flags = np.nan_to_num(_numeric(table, name, uri, our="iscrowd", nullable=True), nan=0.0)
        bad = np.flatnonzero(has & (flags != 0) & (flags != 1))
        if bad.size:
            raise InputDataError(f"{uri}: row {bad[0] + 1}, column {name!r}: iscrowd is 0 or 1, got {flags[bad[0]]}")
        iscrowd = has & (flags == 1)
    return iscrowd


def _table_sizes(table, columns, uri: str) -> np.ndarray | None:
    """(n, 2) height, width of each row's image from `height` and `width` columns; None without them."""
    names = [columns("height"), columns("width")]
    if not all(n in table.column_names for n in names):
        return None
    sizes = np.column_stack([_numeric(table, n, uri, our=n) for n in names])
    bad = np.flatnonzero(~((sizes >= 1) & (sizes == np.floor(sizes)) & (sizes < 2**31)).all(axis=1))
    if bad.size:
        raise InputDataError(f"{uri}: row {bad[0] + 1}, columns {names}: image height and width must be whole "
                             f"numbers >= 1, got {sizes[bad[0]].tolist()}")
    return sizes.astype(np.int64)

