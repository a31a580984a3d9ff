"""COCO masks (EVAL_IOU_TYPE=segm): segmentations as pycocotools RLEs, and mask IoU as COCO computes it.

Every segmentation becomes one compressed RLE at its image's height x width, as pycocotools'
`annToRLE` makes it: polygons are rasterised by `frPyObjects` (several parts merged into their
union), uncompressed RLE (`counts` a list) is compressed, compressed RLE (`counts` a string) is
kept. pycocotools' `mask` module is the codec and computes IoU and areas; it checks nothing, and
an RLE whose counts do not cover the image makes its C code read or write out of bounds, so every
RLE is checked here first (size, characters, counts summing to height x width), in numpy over
all the strings at once.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np

from common.errors import InputDataError
from jobs.evaluate.geometry import Polygons


class Rle(msgspec.Struct, gc=False):
    size: tuple[int, int]
    counts: str | list[int]


_SEGMENTATIONS = msgspec.json.Decoder(list[list[list[float]] | Rle | None])
_SEGMENTATION = msgspec.json.Decoder(list[list[float]] | Rle | None)
_ROWS_PER_CHUNK = 2000
# The characters of COCO's compressed counts: 6-bit values offset by 48 ('0' .. 'o').
_FIRST, _LAST = 48, 48 + 63
# Characters per count: pycocotools shifts an int by 5 bits a character, so 6 are all it can read.
_MAX_CHARS_PER_COUNT = 6


def to_rles(raws: list | None, polygons: Polygons | None, rows: np.ndarray, image: np.ndarray, sizes: np.ndarray,
            locate: Callable[[int], str]) -> np.ndarray:
    """One compressed RLE dict ({'size': [h, w], 'counts': bytes}) per given row, as an object array.

    raws: every row's raw JSON segmentation (None where the input has only polygons); polygons: every
    row's polygon parts as loaded (rows without parts are RLE or missing); rows: the rows wanted;
    image: each wanted row's image index into sizes, (n_images, 2) height, width; locate(row): how a
    message names a row's segmentation (`Table.segmentation_at`). Raises InputDataError naming the
    first unusable row.
    """
    out = np.empty(rows.size, dtype=object)
    n_parts = np.diff(polygons.row_start)[rows] if polygons is not None else np.zeros(rows.size, np.int64)
    drawn = np.flatnonzero(n_parts > 0)
    if drawn.size:
        out[drawn] = _rasterised(polygons, rows[drawn], image[drawn], sizes)
    rest = np.flatnonzero(n_parts == 0)
    for start in range(0, rest.size, _ROWS_PER_CHUNK):
        chunk = rest[start:start + _ROWS_PER_CHUNK]
        out[chunk] = _read_rles(raws, rows[chunk], sizes[image[chunk]], locate)
    return out


def _rasterised(polygons: Polygons, rows: np.ndarray, image: np.ndarray, sizes: np.ndarray) -> list:
    """RLEs of polygon rows, as pycocotools' annToRLE makes them (frPyObjects, then the union of
    the parts), one frPyObjects call per image."""
    from pycocotools import mask as mask_utils

    flat = polygons.xy.reshape(-1)
    bounds = 2 * polygons.part_start
    out = [None] * rows.size
    order = np.argsort(image, kind="stable")
    cuts = np.flatnonzero(np.r_[True, image[order][1:] != image[order][:-1], True])
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        block = order[lo:hi].tolist()
        h, w = sizes[image[block[0]]].tolist()
        first, last = polygons.row_start[rows[block]].tolist(), polygons.row_start[rows[block] + 1].tolist()
        parts = [flat[bounds[k]:bounds[k + 1]] for a, b in zip(first, last) for k in range(a, b)]
        rles = mask_utils.frPyObjects(parts, h, w)
        at = 0
        for i, a, b in zip(block, first, last):
            out[i] = rles[at] if b - a == 1 else mask_utils.merge(rles[at:at + b - a])
            at += b - a
    return out


def _read_rles(raws: list | None, rows: np.ndarray, sizes: np.ndarray, name_row: Callable[[int], str]) -> list:
    """RLEs of rows whose segmentation is RLE, each checked; a row without one is an error."""
    from pycocotools import mask as mask_utils

    def locate(i):
        return name_row(int(rows[i]))

    if raws is None:  # only polygons, and this row has none
        raise InputDataError(f"{locate(0)}: missing; EVAL_IOU_TYPE=segm needs a segmentation on every row "
                             "(EVAL_IOU_TYPE=bbox evaluates the boxes)")
    segs = _decode([raws[r] for r in rows.tolist()], locate)
    h, w = sizes[:, 0].tolist(), sizes[:, 1].tolist()
    for i, seg in enumerate(segs):
        if not isinstance(seg, Rle):  # null, or a list without polygons
            raise InputDataError(f"{locate(i)}: missing; EVAL_IOU_TYPE=segm needs a segmentation on every row "
                                 "(EVAL_IOU_TYPE=bbox evaluates the boxes)")
        if list(seg.size) != [h[i], w[i]]:
            raise InputDataError(f"{locate(i)}: RLE size {list(seg.size)} is not the image's [height, width] [{h[i]}, {w[i]}]")
    compressed = [i for i, s in enumerate(segs) if isinstance(s.counts, str)]
    _check_compressed([segs[i] for i in compressed], [h[i] for i in compressed], [w[i] for i in compressed],
                      lambda k: locate(compressed[k]))
    out = []
    for i, seg in enumerate(segs):
        if isinstance(seg.counts, str):
            out.append({"size": [h[i], w[i]], "counts": seg.counts.encode()})
            continue
        counts = np.asarray(seg.counts, dtype=np.int64)
        if (counts < 0).any() or int(counts.sum()) != h[i] * w[i]:
            raise InputDataError(f"{locate(i)}: RLE counts must be >= 0 and sum to height x width "
                                 f"= {h[i] * w[i]}, got sum {int(counts.sum())}")
        out.append(mask_utils.frPyObjects({"size": [h[i], w[i]], "counts": seg.counts}, h[i], w[i]))
    return out


def _decode(raws: list, locate: Callable[[int], str]) -> list:
    try:
        return _SEGMENTATIONS.decode(b"[" + b",".join(raws) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        for i, raw in enumerate(raws):  # name the row
            try:
                _SEGMENTATION.decode(raw)
            except msgspec.ValidationError as exc:
                detail = str(exc).replace(" - at `$", " at `")
                raise InputDataError(f"{locate(i)}: {detail} (polygons: lists of x, y; "
                                     "RLE: {\"size\": [h, w], \"counts\": ...})") from None
            except msgspec.DecodeError as exc:  # such as invalid UTF-8 in a string
                raise InputDataError(f"{locate(i)}: not valid JSON: {exc}") from None
        raise


def _check_compressed(segs: list[Rle], heights: list[int], widths: list[int], locate) -> None:
    """Check COCO compressed counts strings: valid characters, whole counts, counts >= 0 that sum
    to h x w. Decodes them as pycocotools' rleFrString does (5 bits per character, a continuation
    bit, a sign bit on the last character, counts after the third as differences to the count two
    before), vectorised over all strings: per character only byte-sized passes, per count int64."""
    if not segs:
        return
    texts = [s.counts.encode() for s in segs]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    c = np.frombuffer(b"".join(texts), dtype=np.uint8) - np.uint8(_FIRST)  # below '0' wraps past 63
    bad = np.flatnonzero(c > _LAST - _FIRST)
    ends = np.cumsum(lengths)
    if bad.size:
        k = int(np.searchsorted(ends, bad[0], side="right"))
        raise InputDataError(f"{locate(k)}: RLE counts has a character outside '0'..'o': "
                             f"{chr(c[bad[0]] + _FIRST)!r} at {int(bad[0] - (ends[k] - lengths[k]))}")
    last_of_count = (c & 0x20) == 0
    unfinished = np.flatnonzero((lengths > 0) & ~last_of_count[np.maximum(ends - 1, 0)])
    if unfinished.size:
        raise InputDataError(f"{locate(int(unfinished[0]))}: RLE counts ends inside a count (truncated string)")
    # Each string ends a count, so a count starts after any last character (and at 0).
    last = np.flatnonzero(last_of_count)
    first = np.r_[0, last[:-1] + 1] if last.size else np.zeros(0, np.int64)
    n_chars = last - first + 1
    per_row = np.diff(np.r_[0, np.cumsum(last_of_count, dtype=np.int64)][np.r_[0, ends]])  # counts per string
    row = np.repeat(np.arange(len(texts)), per_row)
    too_long = np.flatnonzero(n_chars > _MAX_CHARS_PER_COUNT)
    if too_long.size:
        raise InputDataError(f"{locate(int(row[too_long[0]]))}: RLE counts has a count longer than "
                             f"{_MAX_CHARS_PER_COUNT} characters")
    value = (c[first] & 0x1F).astype(np.int64)
    longer = np.flatnonzero(n_chars > 1)  # most counts are one character: only the rest are revisited
    for j in range(1, _MAX_CHARS_PER_COUNT):
        longer = longer[n_chars[longer] > j]
        value[longer] |= (c[first[longer] + j] & 0x1F).astype(np.int64) << (5 * j)
    signed = np.flatnonzero((c[last] & 0x10) != 0)
    value[signed] -= np.int64(1) << (5 * n_chars[signed])  # the sign: x |= -1 << 5k
    # Index of each count in its string; from index 3 on a count is a difference to the one two before,
    # so counts 1, 3, 5, ... and 2, 4, 6, ... are cumulative sums within their string.
    row_first = np.cumsum(per_row) - per_row
    index = np.arange(first.size) - np.repeat(row_first, per_row)
    counts = value.copy()
    odd = (index & 1).astype(bool)
    for member in (odd, ~odd & (index > 0)):
        total = np.cumsum(np.where(member, value, 0))
        before = np.repeat(np.r_[0, total][row_first], per_row)  # the sum over earlier strings
        counts[member] = (total - before)[member]
    negative = np.flatnonzero(counts < 0)
    if negative.size:
        raise InputDataError(f"{locate(int(row[negative[0]]))}: RLE counts decodes to a negative count")
    sums = np.bincount(row, weights=counts, minlength=len(texts))  # float64: exact below 2^53
    expected = np.asarray(heights, dtype=np.float64) * np.asarray(widths, dtype=np.float64)
    wrong = np.flatnonzero(sums != expected)
    if wrong.size:
        k = int(wrong[0])
        raise InputDataError(f"{locate(k)}: RLE counts sum to {int(sums[k])}, not height x width = {int(expected[k])}")


def mask_areas(rles: np.ndarray) -> np.ndarray:
    """(n,) float64 pixel areas of the RLEs."""
    from pycocotools import mask as mask_utils

    # In chunks: pycocotools' area() builds a uint8 array from the count, which overflows past 255.
    listed = list(rles)
    return np.concatenate([np.zeros(0), *(mask_utils.area(listed[i:i + 255]).astype(np.float64)
                                          for i in range(0, len(listed), 255))])


def mask_iou_pairs(det: np.ndarray, gt: np.ndarray, pair_det: np.ndarray, pair_gt: np.ndarray, crowd: np.ndarray,
                   pair_block: np.ndarray) -> np.ndarray:
    """pycocotools' mask IoU of (det row, gt row) pairs (crowd: intersection / detection area).

    pair_block: the pairs come in contiguous blocks (an image, say); each block is one pycocotools
    matrix over the detections and ground truths it pairs, which keeps the Python calls few.
    """
    from pycocotools import mask as mask_utils

    iou = np.zeros(pair_det.size)
    if not pair_det.size:
        return iou
    bounds = np.flatnonzero(np.r_[True, pair_block[1:] != pair_block[:-1], True])
    det_list, gt_list = det.tolist(), gt.tolist()
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        d_rows, d_at = np.unique(pair_det[lo:hi], return_inverse=True)
        g_rows, g_first, g_at = np.unique(pair_gt[lo:hi], return_index=True, return_inverse=True)
        matrix = mask_utils.iou([det_list[i] for i in d_rows.tolist()], [gt_list[j] for j in g_rows.tolist()],
                                crowd[lo:hi][g_first].astype(np.uint8).tolist())
        iou[lo:hi] = np.asarray(matrix, dtype=np.float64).reshape(d_rows.size, g_rows.size)[d_at, g_at]
    return iou


def mask_iou_within(masks: np.ndarray, a: np.ndarray, b: np.ndarray, pair_group: np.ndarray) -> np.ndarray:
    """Mask IoU of (a[k], b[k]) pairs of rows of one set (NMS), the pairs sorted by their group:
    one pycocotools matrix per group over the rows it pairs."""
    from pycocotools import mask as mask_utils

    iou = np.zeros(a.size)
    if not a.size:
        return iou
    bounds = np.flatnonzero(np.r_[True, pair_group[1:] != pair_group[:-1], True])
    listed = masks.tolist()
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        rows = np.unique(np.r_[a[lo:hi], b[lo:hi]])
        chosen = [listed[r] for r in rows.tolist()]
        matrix = np.asarray(mask_utils.iou(chosen, chosen, [0] * len(chosen)), dtype=np.float64).reshape(len(chosen), -1)
        iou[lo:hi] = matrix[np.searchsorted(rows, a[lo:hi]), np.searchsorted(rows, b[lo:hi])]
    return iou
