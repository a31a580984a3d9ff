"""Masks in tables: a `segmentation` column (COCO's polygons, compressed or uncompressed RLE) with
`height`, `width` and, in ground truth, `iscrowd` columns, in CSV, Parquet and JSONL.

The oracle is the same case as COCO JSON, which test_masks.py checks against pycocotools: every
class's numbers must come out the same from the table, and per-class AP equal pycocotools `segm`.
"""

import copy
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.exitcodes import ExitCode
from tests.evaluate.helpers import evaluate, make_mask_case, write_case
from tests.evaluate.test_errors import assert_clean_failure, run_job
from tests.evaluate.test_pycocotools_oracle import assert_like_oracle, pycocotools_oracle

GT_COLUMNS = ["image", "category", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "segmentation", "iscrowd", "height",
              "width"]
PRED_COLUMNS = ["image", "category", "score", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "segmentation"]


def mask_case(seed: int, *, det_boxes: bool = True):
    gt, dets = make_mask_case(seed, det_boxes=det_boxes)
    for im in gt["images"]:  # names in id order: tied scores then accumulate in the same order
        im["file_name"] = f"{im['id']:04d}.png"
    return gt, dets


def table_rows(gt: dict, dets: list) -> tuple[list[dict], list[dict]]:
    """The COCO case as table rows; an image without objects is a row with an empty category."""
    images = {im["id"]: im for im in gt["images"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    gt_rows = [{"image": images[a["image_id"]]["file_name"], "category": names[a["category_id"]],
                **dict(zip(GT_COLUMNS[2:6], a["bbox"])), "segmentation": a["segmentation"],
                "iscrowd": a["iscrowd"],
                "height": images[a["image_id"]]["height"], "width": images[a["image_id"]]["width"]}
               for a in gt["annotations"]]
    annotated = {a["image_id"] for a in gt["annotations"]}
    gt_rows += [{"image": im["file_name"], "category": None, "height": im["height"], "width": im["width"]}
                for im in gt["images"] if im["id"] not in annotated]
    pred_rows = [{"image": images[d["image_id"]]["file_name"], "category": names[d["category_id"]],
                  "score": d["score"], **(dict(zip(PRED_COLUMNS[3:7], d["bbox"])) if "bbox" in d else {}),
                  "segmentation": d["segmentation"]}
                 for d in dets]
    return gt_rows, pred_rows


def write_table(path, rows: list[dict], columns: list[str], fmt: str):
    """Segmentations as JSON text in CSV and Parquet, as the lines' own JSON values in JSONL."""
    columns = [c for c in columns if any(c in r for r in rows)]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({c: r[c] for c in columns if r.get(c) is not None}) + "\n" for r in rows))
        return path
    text = [{**r, "segmentation": json.dumps(r["segmentation"]) if r.get("segmentation") is not None else None}
            for r in rows]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in text]), path)
    else:
        import csv

        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(columns)
            out.writerows([["" if r.get(c) is None else r[c] for c in columns] for r in text])
    return path


def assert_same_classes(table, coco):
    def by_name(report):
        return {c.name: c.model_dump(exclude={"class_id"}) for c in report.classes}

    assert by_name(table) == by_name(coco)
    assert table.summary == coco.summary


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("seed", range(3))
def test_table_masks_as_the_same_case_in_coco(fmt, seed, tmp_path, monkeypatch):
    gt, dets = mask_case(seed, det_boxes=seed != 1)
    coco = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    assert coco.matching.geometry == "segm"
    gt_rows, pred_rows = table_rows(gt, dets)
    kinds = {type(r["segmentation"]).__name__ + type(r["segmentation"].get("counts", "")).__name__
             if isinstance(r["segmentation"], dict) else "polygon" for r in gt_rows + pred_rows if "segmentation" in r}
    assert kinds == {"polygon", "dictstr", "dictlist"}
    assert any(r.get("iscrowd") for r in gt_rows) and any(r["category"] is None for r in gt_rows)
    table = evaluate(monkeypatch, write_table(tmp_path / f"pred.{fmt}", pred_rows, PRED_COLUMNS, fmt),
                     write_table(tmp_path / f"gt.{fmt}", gt_rows, GT_COLUMNS, fmt))
    assert table.matching.geometry == "segm" and "auto" in table.matching.reason
    assert_like_oracle(coco, pycocotools_oracle(gt, dets, 0.5, tmp_path, iou_type="segm"))
    assert_same_classes(table, coco)


def test_the_crowd_column_counts(tmp_path, monkeypatch):
    """Without `iscrowd`, crowd regions are ordinary objects to find."""
    gt, dets = mask_case(4)
    coco = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    gt_rows, pred_rows = table_rows(gt, dets)
    pred = write_table(tmp_path / "pred.csv", pred_rows, PRED_COLUMNS, "csv")
    no_crowd = write_table(tmp_path / "gt-no-crowd.csv", gt_rows, [c for c in GT_COLUMNS if c != "iscrowd"], "csv")
    report = evaluate(monkeypatch, pred, no_crowd)
    crowds = sum(1 for a in gt["annotations"] if a["iscrowd"])
    assert crowds and (sum(c.n_ground_truth for c in report.classes)
                       == sum(c.n_ground_truth for c in coco.classes) + crowds)


def test_parquet_struct_rle_and_mapped_column(tmp_path, monkeypatch):
    """Compressed RLE as Parquet's own struct<size, counts> column, named `mask` (EVAL_COLUMNS)."""
    gt, dets = mask_case(2, det_boxes=False)  # every detection compressed RLE, without a box
    coco = evaluate(monkeypatch, *reversed(write_case(tmp_path, gt, dets)))
    gt_rows, pred_rows = table_rows(gt, dets)
    native = pa.Table.from_pylist([{"mask" if c == "segmentation" else c: r[c] for c in PRED_COLUMNS if c in r}
                                   for r in pred_rows])
    assert pa.types.is_struct(native.schema.field("mask").type)
    pq.write_table(native, tmp_path / "pred.parquet")
    gt_csv = write_table(tmp_path / "gt.csv", gt_rows, GT_COLUMNS, "csv")
    gt_csv.write_text(gt_csv.read_text().replace("segmentation", "mask", 1))
    table = evaluate(monkeypatch, tmp_path / "pred.parquet", gt_csv, columns={"segmentation": "mask"})
    assert table.matching.geometry == "segm"
    assert_same_classes(table, coco)


def test_one_flat_polygon_is_one_part(tmp_path, monkeypatch):
    """`[x1, y1, ...]` in a segmentation cell is one polygon, as in the `polygon` column."""
    square, moved = [0, 0, 10, 0, 10, 10, 0, 10], [1, 0, 11, 0, 11, 10, 1, 10]
    head = "image,category,bbox_x,bbox_y,bbox_w,bbox_h,segmentation,height,width\n"
    (tmp_path / "gt.csv").write_text(head + f'a.jpg,car,0,0,10,10,"{square}",20,20\n'
                                     f'b.jpg,car,0,0,10,10,"{square}",20,20\n')
    (tmp_path / "pred.csv").write_text("image,category,score,segmentation\n"
                                       f'a.jpg,car,0.9,"{moved}"\nb.jpg,car,0.9,"[{moved}]"\n')
    report = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv", iou_threshold="0.75")
    assert report.matching.geometry == "segm"
    assert (report.classes[0].tp, report.classes[0].fp) == (2, 0)  # IoU 90/110 = 0.82 in both forms
    report = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv", iou_threshold="0.85")
    assert report.classes[0].tp == 0


SQUARE_RLE = {"size": [20, 20], "counts": [0] + [10, 10] * 9 + [10, 210]}  # 0..10 x 0..10, column-major
GT_HEAD = "image,category,bbox_x,bbox_y,bbox_w,bbox_h,segmentation,height,width\n"
PRED_HEAD = "image,category,score,segmentation\n"


def _cell(value) -> str:
    return '"' + json.dumps(value).replace('"', '""') + '"'


BAD_TABLES = {
    # name: (ground-truth rows, prediction rows, extra settings, what the message names)
    "not JSON": ([f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20", "b.jpg,car,0,0,1,1,\"[[1, 2,\",20,20"],
                 [f"a.jpg,car,0.9,{_cell(SQUARE_RLE)}"], {}, ("gt.csv", "row 2, column 'segmentation'", "not valid JSON")),
    "odd polygon": ([f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20"],
                    [f"a.jpg,car,0.9,{_cell(SQUARE_RLE)}", 'a.jpg,car,0.5,"[[1, 2, 3, 4, 5, 6, 7]]"'], {},
                    ("pred.csv", "row 2, column 'segmentation'", "polygon")),
    "RLE size": ([f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20"],
                 [f"a.jpg,car,0.9,{_cell({**SQUARE_RLE, 'size': [20, 21]})}"], {},
                 ("pred.csv", "row 1, column 'segmentation'", "RLE size")),
    "counts sum": ([f"a.jpg,car,0,0,10,10,{_cell({**SQUARE_RLE, 'counts': [0, 10, 380]})},20,20", "b.jpg,,,,,,,20,20"],
                   [f"a.jpg,car,0.9,{_cell(SQUARE_RLE)}"], {}, ("gt.csv", "row 1, column 'segmentation'", "sum")),
    "a number": ([f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20"], ["a.jpg,car,0.9,7"], {},
                 ("pred.csv", "row 1, column 'segmentation'")),
    "RLE without sizes": ([f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20"], [f"a.jpg,car,0.9,{_cell(SQUARE_RLE)}"],
                          {"columns": '{"height": "h"}'},
                          ("gt.csv", "row 1, column 'segmentation'", "RLE cannot be evaluated as a polygon")),
    "missing under segm": ([f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20", "b.jpg,car,0,0,5,5,,20,20"],
                           [f"a.jpg,car,0.9,{_cell(SQUARE_RLE)}"], {"iou_type": "segm"},
                           ("gt.csv", "row 2, column 'segmentation'", "missing")),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_table_masks_exit_65_naming_file_row_and_column(case, job_env, tmp_path):
    gt_rows, pred_rows, settings, names = BAD_TABLES[case]
    (tmp_path / "gt.csv").write_text(GT_HEAD + "\n".join(gt_rows) + "\n")
    (tmp_path / "pred.csv").write_text(PRED_HEAD + "\n".join(pred_rows) + "\n")
    proc = run_job(job_env, tmp_path, annotations_uri=str(tmp_path / "gt.csv"),
                   predictions_uri=str(tmp_path / "pred.csv"), **settings)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, *names, out=tmp_path / "out")


def test_bad_table_columns_exit_65(job_env, tmp_path):
    square = _cell([[0, 0, 10, 0, 10, 10, 0, 10]])
    cases = {
        "both": ("image,category,bbox_x,bbox_y,bbox_w,bbox_h,segmentation,polygon,height,width\n"
                 f"a.jpg,car,0,0,10,10,{square},{square},20,20\n", ("gt.csv", "'segmentation' and 'polygon'")),
        "RLE as a polygon": ("image,category,bbox_x,bbox_y,bbox_w,bbox_h,polygon,height,width\n"
                             f"a.jpg,car,0,0,10,10,{_cell(SQUARE_RLE)},20,20\n",
                             ("gt.csv", "row 1, column 'polygon'", "`segmentation` column")),
        "crowd 2": ("image,category,bbox_x,bbox_y,bbox_w,bbox_h,segmentation,iscrowd,height,width\n"
                    f"a.jpg,car,0,0,10,10,{square},2,20,20\n", ("gt.csv", "row 1, column 'iscrowd'")),
    }
    (tmp_path / "pred.csv").write_text(PRED_HEAD + f"a.jpg,car,0.9,{square}\n")
    for text, names in cases.values():
        (tmp_path / "gt.csv").write_text(text)
        proc = run_job(job_env, tmp_path, annotations_uri=str(tmp_path / "gt.csv"),
                       predictions_uri=str(tmp_path / "pred.csv"))
        assert_clean_failure(proc, ExitCode.INPUT_DATA, *names, out=tmp_path / "out")


def test_jsonl_lines_keep_their_other_values(tmp_path, monkeypatch):
    """Splitting the segmentation off a JSONL line passes every other value to Arrow as it was:
    blank lines, key order, unicode names, nested values and exponents."""
    rows = [{"category": "café", "image": "a.jpg", "bbox_x": 0, "bbox_y": 0.0, "bbox_w": 1e1, "bbox_h": 10,
             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "height": 20, "width": 20, "note": {"k": [1, 2]}},
            {"image": "b.jpg", "category": "car", "bbox_x": 1, "bbox_y": 2, "bbox_w": 3, "bbox_h": 4,
             "segmentation": copy.deepcopy(SQUARE_RLE), "height": 20, "width": 20, "id": 7}]
    text = json.dumps(rows[0], ensure_ascii=False) + "\n\n" + json.dumps(rows[1]) + "\r\n"
    (tmp_path / "gt.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "pred.jsonl").write_text(json.dumps({"image": "a.jpg", "category": "café", "score": 0.5,
                                                     "segmentation": SQUARE_RLE}, ensure_ascii=False) + "\n")
    report = evaluate(monkeypatch, tmp_path / "pred.jsonl", tmp_path / "gt.jsonl")
    assert report.matching.geometry == "segm"
    by_name = {c.name: c for c in report.classes}
    assert by_name["café"].tp == 1 and by_name["car"].fn == 1


def test_the_readme_mask_table_example(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    gt_text, pred_text = re.findall(r"```csv\n(.*?)```", readme, re.S)
    (tmp_path / "gt.csv").write_text(gt_text)
    (tmp_path / "pred.csv").write_text(pred_text)
    report = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv")
    assert report.matching.geometry == "segm"
    (car,) = report.classes
    assert (car.n_ground_truth, car.tp, car.fp) == (1, 1, 0)  # the crowd region is not an object to find
    assert report.alignment.annotated_images_without_predictions == 1
