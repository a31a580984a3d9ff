"""COCO results decoded piece-wise by forked workers (`_decode_pieces`) give exactly the Table the
exact path (`_decode_rows`) gives, for good files, for files whose cuts land inside strings and
nested values, and for bad files (the same InputDataError, naming the same row)."""

from __future__ import annotations

import json
import mmap
import os
import re
import signal
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from common.errors import InputDataError
from common.forked import WorkerFailed
from common.storage import Blob
from jobs.evaluate import load
from jobs.evaluate.load import read_coco_results
from tests.evaluate.helpers import make_coco_case, make_mask_case


@pytest.fixture
def spy(monkeypatch):
    """Tiny pieces, forked at any size over 4 workers; records the shares map_forked was given and
    how often the exact path ran."""
    monkeypatch.setattr(load, "_PIECE_BYTES", 2000)
    monkeypatch.setattr(load, "_MIN_FORKED_BYTES", 1)
    monkeypatch.setattr(load, "usable_cpus", lambda: 4)
    calls = SimpleNamespace(shares=[], fallbacks=0, pieces=lambda: sum(calls.shares[-1]))
    real_map, real_rows = load.map_forked, load._decode_rows

    def map_spy(fn, shares):
        calls.shares.append([len(share) for share in shares])
        return real_map(fn, shares)

    def rows_spy(blob):
        calls.fallbacks += 1
        return real_rows(blob)

    monkeypatch.setattr(load, "map_forked", map_spy)
    monkeypatch.setattr(load, "_decode_rows", rows_spy)
    return calls


def exact(blob: Blob, monkeypatch):
    """read_coco_results as it was before pieces: the exact path and the same post-processing."""
    def refuse(_blob):
        raise WorkerFailed("pieces refused by the test")

    with monkeypatch.context() as m:
        m.setattr(load, "_decode_pieces", refuse)
        return read_coco_results(blob)


def outcome(blob: Blob):
    try:
        return read_coco_results(blob)
    except InputDataError as exc:
        return exc


def exact_outcome(blob: Blob, monkeypatch):
    try:
        return exact(blob, monkeypatch)
    except InputDataError as exc:
        return exc


def typed(values: list) -> list:
    return [(type(v), v) for v in values]


def bits(a: np.ndarray | None):
    return None if a is None else (a.dtype, a.shape, a.tobytes())


def assert_same_table(got, want):
    assert got.rows == want.rows
    for name in ("image_codes", "category_codes", "score", "boxes", "rle_rows", "iscrowd"):
        assert bits(getattr(got, name)) == bits(getattr(want, name)), name  # bitwise: -0.0 is not 0.0
    assert typed(got.image_refs) == typed(want.image_refs)
    assert typed(got.category_refs) == typed(want.category_refs)
    assert (got.polygons is None) == (want.polygons is None)
    if want.polygons is not None:
        for name in ("xy", "part_start", "row_start"):
            assert bits(getattr(got.polygons, name)) == bits(getattr(want.polygons, name)), name
    assert (got.segmentations is None) == (want.segmentations is None)
    if want.segmentations is not None:
        assert [bytes(s) for s in got.segmentations] == [bytes(s) for s in want.segmentations]
    assert (got.uri, got.format, got.version(), got.image_refs_are_ids) == (want.uri, want.format, want.version(), want.image_refs_are_ids)
    assert got.images is None and got.categories is None and got.area is None


def assert_same_outcome(got, want):
    if isinstance(want, InputDataError):
        assert isinstance(got, InputDataError), f"expected {want}, got a table"
        assert str(got) == str(want)
    else:
        assert not isinstance(got, InputDataError), f"expected a table, got {got}"
        assert_same_table(got, want)


# -- generated results files -----------------------------------------------------------------------


def dets(seed=0, n_images=300):
    return make_coco_case(seed, n_images=n_images, round_scores=None)[1]


def joined(rows: list, separators: list[str]) -> str:
    """A JSON array with the given separators between results, in turn."""
    texts = [json.dumps(r) for r in rows]
    return "[" + "".join(t + (separators[i % len(separators)] if i + 1 < len(texts) else "") for i, t in enumerate(texts)) + "]"


def string_ids(rows):
    return [{**r, "image_id": f"img/{r['image_id']}", "category_id": f"cat {r['category_id']}"} for r in rows]


def mixed_ids(rows):  # image 3 and "3" are different images; category 10 and "10" different categories
    return [{**r, "image_id": str(r["image_id"]) if i % 3 == 0 else r["image_id"],
             "category_id": str(r["category_id"]) if i % 7 == 0 else r["category_id"]} for i, r in enumerate(rows)]


def late_string_ids(rows):  # ints in every piece but the last few: arrays and lists of ids mixed
    return [{**r, "image_id": f"s{r['image_id']}"} if i > len(rows) - 5 else r for i, r in enumerate(rows)]


def huge_ids(rows):
    return [{**r, "image_id": 2**70 + r["image_id"] if i % 50 == 0 else r["image_id"],
             "category_id": -r["category_id"] if i % 11 == 0 else r["category_id"]} for i, r in enumerate(rows)]


def huge_ids_in_one_piece(rows):
    return [{**r, "image_id": 2**64 + 5} if i == len(rows) // 2 else r for i, r in enumerate(rows)]


def uint64_ids(rows):  # beyond int64, within uint64
    return [{**r, "image_id": 2**63 + r["image_id"]} if i % 13 == 0 else r for i, r in enumerate(rows)]


def extra_fields(rows):
    return [{"id": i, **r, "area": 12.5, "attributes": {"occluded": bool(i % 2), "tags": ["a", "b"]},
             "note": "x" * (i % 17), "iscrowd": 0, "track": None} for i, r in enumerate(rows)]


def exotic_scores(rows):
    specials = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1.7976931348623157e308, 1, 0, 0.1 + 0.2]
    return [{**r, "score": specials[i % len(specials)] if i % 4 == 0 else r["score"]} for i, r in enumerate(rows)]


def exponent_text(rows):  # 5E-1, 1e+0, 250e-3: written by hand, not by json.dumps
    spellings = iter(["5E-1", "1e+0", "250e-3", "0.0e0", "-0.0", "1E2", "-0", "4.9e-324", "1e-400"] * 30)
    return re.sub(r'"score": [^,}]+', lambda m: f'"score": {next(spellings, "0.25")}', joined(rows, [", "]))


def no_boxes_but_masks(_rows):
    return make_mask_case(1, det_boxes=False)[1]


GOOD = {
    "default separators": lambda: json.dumps(dets()),
    "compact": lambda: json.dumps(dets(), separators=(",", ":")),
    "indented": lambda: json.dumps(dets(), indent=2),
    "indent 0 and tabs": lambda: json.dumps(dets(1), indent="\t"),
    "odd whitespace": lambda: "\n\t " + joined(dets(2), ["},{"[1:-1], " ,\r\n  ", "\n,\n", " , "]) + " \n",
    "string ids": lambda: json.dumps(string_ids(dets())),
    "mixed int and str ids": lambda: json.dumps(mixed_ids(dets())),
    "str ids late": lambda: json.dumps(late_string_ids(dets())),
    "huge ints": lambda: json.dumps(huge_ids(dets())),
    "huge int in one piece": lambda: json.dumps(huge_ids_in_one_piece(dets())),
    "uint64 ids": lambda: json.dumps(uint64_ids(dets())),
    "extra unknown fields": lambda: json.dumps(extra_fields(dets())),
    "exotic scores": lambda: json.dumps(exotic_scores(dets())),
    "exponents": lambda: exponent_text(dets()),
    "masks: rle and polygons": lambda: json.dumps(make_mask_case(0)[1]),
    "masks without boxes": lambda: json.dumps(no_boxes_but_masks(None)),
    "unicode": lambda: json.dumps(string_ids(dets()), ensure_ascii=False).replace("img/", "bild/ü€😀"),
    "one result": lambda: json.dumps(dets()[:1]),
    "empty list": lambda: "[]",
    "empty list, spaced": lambda: " [ \n ] \n",
}


@pytest.mark.parametrize("case", list(GOOD))
def test_pieces_equal_the_exact_path(case, spy, monkeypatch):
    data = GOOD[case]().encode()
    blob = Blob(f"/d/{case}.json", data, "v")
    got = read_coco_results(blob)
    if data.count(b"}") > 10:
        assert spy.shares and len(spy.shares[-1]) >= 2, spy.shares  # really cut and forked
        assert spy.pieces() >= min(8, len(data) // 2000)
    assert spy.fallbacks == 0  # a good file never needs the exact path
    assert_same_table(got, exact(blob, monkeypatch))
    assert spy.fallbacks == 1  # (the reference itself)


def test_one_piece_per_result(spy, monkeypatch):
    """With a piece size of one byte every boundary is a cut: each result is its own piece."""
    monkeypatch.setattr(load, "_PIECE_BYTES", 1)
    rows = dets(3, n_images=60)
    blob = Blob("/d/p.json", json.dumps(rows).encode(), "v")
    got = read_coco_results(blob)
    assert spy.pieces() == len(rows) and spy.fallbacks == 0
    assert_same_table(got, exact(blob, monkeypatch))


def test_values_are_those_of_the_file(spy):
    """Not only equal to the exact path: equal to the file, row by row, in order."""
    rows = mixed_ids(dets(4))
    table = read_coco_results(Blob("/d/r.json", json.dumps(rows).encode(), "v"))
    assert spy.fallbacks == 0
    assert typed([table.image_refs[c] for c in table.image_codes]) == typed([r["image_id"] for r in rows])
    assert typed([table.category_refs[c] for c in table.category_codes]) == typed([r["category_id"] for r in rows])
    np.testing.assert_array_equal(table.score, [r["score"] for r in rows])
    np.testing.assert_array_equal(table.boxes, [r["bbox"] for r in rows])


def test_a_mapped_file(spy, monkeypatch, tmp_path):
    """storage.read(mapped=True) gives an mmap: sliced and searched like bytes."""
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(make_mask_case(2)[1]))
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        blob = Blob(str(path), mapped, "v")
        got = read_coco_results(blob)
        assert len(spy.shares[-1]) >= 2 and spy.fallbacks == 0
        assert_same_table(got, exact(Blob(str(path), path.read_bytes(), "v"), monkeypatch))


def test_a_worker_that_dies_sends_the_file_to_the_exact_path(spy, monkeypatch):
    """A decoding child killed (for memory, say) costs time, not numbers: the file is read row by row."""
    parent, real_share = os.getpid(), load._decode_share

    def dies_in_a_child(*args):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_share(*args)

    pids, real_fork = [], os.fork

    def recording_fork():
        pid = real_fork()
        pids.append(pid) if pid else None
        return pid

    monkeypatch.setattr(load, "_decode_share", dies_in_a_child)
    monkeypatch.setattr(os, "fork", recording_fork)
    blob = Blob("/d/p.json", json.dumps(dets(3, n_images=80)).encode(), "v")
    got = read_coco_results(blob)
    assert len(spy.shares[-1]) >= 2 and spy.fallbacks == 1 and len(pids) >= 1
    assert_same_table(got, exact(blob, monkeypatch))
    for pid in pids:  # every worker reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_real_sizes(monkeypatch):
    """The constants as shipped, on a file over _MIN_FORKED_BYTES: forked over the CPUs there are."""
    shares = []
    real_map = load.map_forked
    monkeypatch.setattr(load, "map_forked", lambda fn, s: shares.append(len(s)) or real_map(fn, s))
    monkeypatch.setattr(load, "usable_cpus", lambda: 2)
    rows = dets(5, n_images=300) * 50
    data = json.dumps(rows).encode()
    assert len(data) > load._MIN_FORKED_BYTES
    blob = Blob("/d/big.json", data, "v")
    got = read_coco_results(blob)
    assert shares == [min(2, len(data) // load._MIN_FORKED_BYTES)]  # _MIN_FORKED_BYTES or more per worker
    assert_same_table(got, exact(blob, monkeypatch))
    monkeypatch.setattr(load, "_MIN_FORKED_BYTES", len(data))
    assert_same_table(read_coco_results(blob), exact(blob, monkeypatch))
    assert shares[-1] == 1  # a worker's worth only: decoded here


# -- cuts in the wrong place -----------------------------------------------------------------------


def boundary_text_in_strings(rows):
    return [{**r, "caption": 'a}, {b', "why": '},{"image_id": 1, "category_id": 2, "score": 0.9, "bbox": [0, 0, 1, 1]},{'}
            if i % 5 == 0 else r for i, r in enumerate(rows)]


def escaped_quotes(rows):
    return [{**r, "caption": 'q\\"}, {\\"' + '"}, {"' * 3} if i % 4 == 1 else r for i, r in enumerate(rows)]


def a_whole_fake_row_in_a_string(rows):
    fake = '}, {"image_id": 999, "category_id": 999, "score": 0.5, "bbox": [0, 0, 1, 1], "z": "'
    return [{"z": fake, **r, "y": fake} if i % 3 == 0 else r for i, r in enumerate(rows)]


def nested_objects(rows):
    return [{**r, "extra": [{"a": 1}, {"b": 2}, {"c": [{"d": 3}, {"e": {"f": 4}}]}]} if i % 2 == 0 else r
            for i, r in enumerate(rows)]


def nested_first(rows):  # the nested list before the fields, so a cut in it splits a result early
    return [{"extra": [{"a": 1}, {"b": 2}], **r} for r in rows]


def nested_arrays_of_arrays(rows):
    return [{**r, "extra": [[{"a": 1}, {"b": 2}], [{"c": 3}]]} for r in rows]


def polygons_and_rle_with_braces(rows):
    masks = make_mask_case(3)[1]
    return [{**m, "label": "}, {"} for m in masks]


ADVERSARIAL = {
    "boundary text in strings": lambda: json.dumps(boundary_text_in_strings(dets())),
    "boundary text, compact": lambda: json.dumps(boundary_text_in_strings(dets()), separators=(",", ":")),
    "escaped quotes": lambda: json.dumps(escaped_quotes(dets())),
    "a whole fake row in a string": lambda: json.dumps(a_whole_fake_row_in_a_string(dets())),
    "nested lists of objects": lambda: json.dumps(nested_objects(dets())),
    "nested lists of objects, indented": lambda: json.dumps(nested_objects(dets()), indent=2),
    "nested list first": lambda: json.dumps(nested_first(dets())),
    "arrays of arrays of objects": lambda: json.dumps(nested_arrays_of_arrays(dets())),
    "masks with braces in labels": lambda: json.dumps(polygons_and_rle_with_braces(None)),
}


@pytest.mark.parametrize("piece_bytes", [1, 37, 2000])
@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_cuts_inside_strings_and_nested_values(case, piece_bytes, spy, monkeypatch):
    monkeypatch.setattr(load, "_PIECE_BYTES", piece_bytes)
    data = ADVERSARIAL[case]().encode()
    blob = Blob(f"/d/{case}.json", data, "v")
    got = read_coco_results(blob)
    assert len(spy.shares[-1]) >= 2
    if piece_bytes == 1:  # every boundary is cut, also those inside a string or nested value
        assert spy.fallbacks == 1
    fallbacks = spy.fallbacks
    assert_same_table(got, exact(blob, monkeypatch))
    assert spy.fallbacks == fallbacks + 1


def test_a_cut_inside_a_string_is_refused_by_the_piece_before():
    """The claim the piece-wise decode rests on: a boundary inside a string or nested value leaves
    the piece before it unclosed, so the piece fails to decode (msgspec.DecodeError)."""
    text = json.dumps([{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [1, 1, 2, 2], "s": "x}, {y"},
                       {"image_id": 2, "category_id": 1, "score": 0.5, "bbox": [1, 1, 2, 2], "e": [{"a": 1}, {"b": 2}]}])
    data = text.encode()
    for match in load._RESULT_BOUNDARY.finditer(data):
        comma = data.find(b",", match.start())
        before = data[:comma] + b"]"
        if comma == data.index(b'}, {"image_id": 2') + 1:  # the one real boundary
            assert len(load._RESULTS.decode(before)) == 1
        else:
            with pytest.raises(msgspec.DecodeError):
                load._RESULTS.decode(before)


# -- bad files -------------------------------------------------------------------------------------


LATE_ROW = 4321


def late_rows(mangle=None, n=6000):
    rows = [{"image_id": 1 + i % 50, "category_id": 1 + i % 3, "bbox": [1, 1, 5, 5], "score": 0.5, "segmentation": None}
            for i in range(n)]
    if mangle:
        rows[LATE_ROW] = mangle(rows[LATE_ROW])
    return rows


def text_at_late_row(old: str, new: str):
    def make():
        text = json.dumps(late_rows())
        at = 0
        for _ in range(LATE_ROW):
            at = text.index('{"image_id"', at) + 1
        start = text.index(old, text.index('{"image_id"', at))  # in row 4321 (or from its start)
        return text[:start] + new + text[start + len(old):]
    return make


BAD_ROWS = {
    "score not a number": (lambda: json.dumps(late_rows(lambda d: {**d, "score": "high"})), "[4321].score"),
    "score missing": (lambda: json.dumps(late_rows(lambda d: {k: v for k, v in d.items() if k != "score"})),
                      "missing required field `score`"),
    "box missing": (lambda: json.dumps(late_rows(lambda d: {k: v for k, v in d.items() if k != "bbox"})),
                    "[4321] has no bbox while other results do"),
    "box null": (lambda: json.dumps(late_rows(lambda d: {**d, "bbox": None})), "[4321] has no bbox while other results do"),
    "negative width": (lambda: json.dumps(late_rows(lambda d: {**d, "bbox": [1, 1, -5, 5]})),
                       "[4321].bbox: negative box width or height"),
    "three box values": (lambda: json.dumps(late_rows(lambda d: {**d, "bbox": [1, 1, 5]})), "[4321].bbox"),
    "box value a string": (lambda: json.dumps(late_rows(lambda d: {**d, "bbox": [1, "1", 5, 5]})), "[4321].bbox[1]"),
    "infinite score": (text_at_late_row('"score": 0.5', '"score": 1e999'), "Number out of range at `[4321].score`"),
    "infinite box": (text_at_late_row('"bbox": [1, 1, 5, 5]', '"bbox": [1, 1, 1e400, 5]'),
                     "Number out of range at `[4321].bbox[2]`"),
    "NaN literal": (text_at_late_row('"score": 0.5', '"score": NaN'), "not valid JSON"),
    "image id a list": (lambda: json.dumps(late_rows(lambda d: {**d, "image_id": [1]})), "[4321].image_id"),
    "image id null": (lambda: json.dumps(late_rows(lambda d: {**d, "image_id": None})), "[4321].image_id"),
    "category id a float": (lambda: json.dumps(late_rows(lambda d: {**d, "category_id": 1.5})), "[4321].category_id"),
    "polygon too short": (lambda: json.dumps(late_rows(lambda d: {**d, "segmentation": [[1, 2, 3, 4]]})),
                          "[4321].segmentation: a polygon needs >= 3 finite x, y pairs"),
    "segmentation a string": (lambda: json.dumps(late_rows(lambda d: {**d, "segmentation": "rle?"})), "[4321].segmentation"),
    "a row not an object": (text_at_late_row('{"image_id"', '7, {"image_id"'), "Expected `object`, got `int` at `[4321]`"),
    "trailing comma": (lambda: json.dumps(late_rows())[:-1] + ", ]", "not valid JSON"),
    "missing comma": (text_at_late_row('}, {"image_id"', '} {"image_id"'), "not valid JSON"),
    "two commas": (text_at_late_row('}, {"image_id"', '}, , {"image_id"'), "not valid JSON"),
    "deeply nested extra": (lambda: json.dumps(late_rows(lambda d: {**d, "x": "@"})).replace('"@"', "[" * 100_000 + "]" * 100_000),
                            "nested too deeply"),
}


@pytest.mark.parametrize("piece_bytes", [1, 2000, 1 << 18])
@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_rows_deep_in_a_cut_file(case, piece_bytes, spy, monkeypatch):
    monkeypatch.setattr(load, "_PIECE_BYTES", piece_bytes)
    make, needle = BAD_ROWS[case]
    blob = Blob("/d/predictions.json", make().encode(), "v")
    with pytest.raises(InputDataError) as got:
        read_coco_results(blob)
    assert len(spy.shares[-1]) >= 2
    with pytest.raises(InputDataError) as want:
        exact(blob, monkeypatch)
    assert str(got.value) == str(want.value)
    assert str(got.value).startswith("/d/predictions.json: ") and needle in str(got.value), str(got.value)


# A GT file with many annotations: boundaries all through it, but not an array of results.
def gt_text():
    gt = make_coco_case(0, n_images=200)[0]
    return json.dumps(gt)


NOT_RESULTS = {
    "an object at top level": lambda: '{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [1, 1, 2, 2]}',
    "a ground truth file": gt_text,
    "annotations only": lambda: json.dumps({"annotations": dets()}),
    "empty": lambda: "",
    "only whitespace": lambda: " \n\t ",
    "truncated": lambda: json.dumps(dets())[: len(json.dumps(dets())) // 2],
    "truncated after a comma": lambda: json.dumps(dets())[: json.dumps(dets()).index("}, {", 30000) + 2],
    "truncated at a piece's end": lambda: json.dumps(dets())[: json.dumps(dets()).index("}, {", 30000) + 1],
    "no closing bracket": lambda: json.dumps(dets())[:-1],
    "trailing garbage": lambda: json.dumps(dets()) + " x",
    "two arrays": lambda: json.dumps(dets()) + json.dumps(dets()),
    "two arrays, comma": lambda: json.dumps(dets()) + ", " + json.dumps(dets()),
    "one bracket too many": lambda: json.dumps(dets()) + "]",
    "an array of arrays": lambda: json.dumps([dets()]),
    "two halves as arrays": lambda: json.dumps([dets()[:500], dets()[500:]]),
    "jsonl": lambda: "\n".join(json.dumps(d) for d in dets()) + "\n",
    "jsonl with commas": lambda: ",\n".join(json.dumps(d) for d in dets()) + "\n",
    "a byte order mark": lambda: "\ufeff" + json.dumps(dets()),
}


@pytest.mark.parametrize("case", list(NOT_RESULTS))
def test_not_a_results_array(case, spy, monkeypatch):
    text = NOT_RESULTS[case]()
    data = text.encode("utf-8", "surrogateescape")
    blob = Blob("/d/predictions.json", data, "v")
    got = outcome(blob)
    want = exact_outcome(blob, monkeypatch)
    assert isinstance(want, InputDataError) or case.startswith("empty list")
    assert_same_outcome(got, want)


@pytest.mark.parametrize("text", ["[]", " [ ] ", "[\n]\n"])
def test_an_empty_results_list(text, spy, monkeypatch):
    table = read_coco_results(Blob("/d/p.json", text.encode(), "v"))
    assert table.rows == 0 and table.boxes.shape == (0, 4) and table.score.shape == (0,)
    assert table.segmentations is None and table.polygons is None
    assert_same_table(table, exact(Blob("/d/p.json", text.encode(), "v"), monkeypatch))


# -- where the two paths part ----------------------------------------------------------------------


def boxless_block_then_bad_polygon():
    """Rows 0..2999 have no bbox, the rest do; row 4321's polygon is too short. Every piece has
    either boxes on all its rows or on none, so piece-wise decoding succeeds."""
    rows = late_rows(lambda d: {**d, "segmentation": [[1, 2, 3, 4]]})
    for row in rows[:3000]:
        del row["bbox"]
    return json.dumps(rows)


def test_first_error_when_pieces_are_boxless_or_boxed_throughout(spy, monkeypatch):
    """Every piece decodes (boxes on all its rows or none), but the file mixes them: that is the
    error reported, as the exact path reports it, before row 4321's bad polygon."""
    monkeypatch.setattr(load, "_PIECE_BYTES", 1)
    blob = Blob("/d/p.json", boxless_block_then_bad_polygon().encode(), "v")
    want = exact_outcome(blob, monkeypatch)
    row = re.fullmatch(r"/d/p\.json: \[(\d+)\] has no bbox while other results do", str(want))
    assert row and int(row.group(1)) < 3000  # a row without one (the exact path names its chunk's first)
    assert str(outcome(blob)) == str(want)


def test_boxless_rows_named_where_the_exact_path_names_them(spy, monkeypatch):
    """A block of results without boxes, all boxed rows elsewhere: both paths name the same row."""
    monkeypatch.setattr(load, "_PIECE_BYTES", 1)
    rows = late_rows()
    for row in rows[LATE_ROW:LATE_ROW + 100]:
        del row["bbox"]
    blob = Blob("/d/p.json", json.dumps(rows).encode(), "v")
    got = outcome(blob)
    assert spy.fallbacks == 1  # every piece is one row, none mixed: the file's mix sends it to the exact path
    assert str(got) == str(exact_outcome(blob, monkeypatch)) == "/d/p.json: [4321] has no bbox while other results do"


def test_invalid_utf8_in_a_string_is_an_input_error(spy):
    data = json.dumps(string_ids(dets())).encode().replace(b"img/", b"\xff", 1)
    with pytest.raises(InputDataError, match="UTF-8"):
        read_coco_results(Blob("/d/p.json", data, "v"))
