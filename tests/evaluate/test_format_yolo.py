"""YOLO (Ultralytics) text files: the same report as the same data in COCO, from a folder, an S3
prefix or an archive; bad lines and names files exit 65 naming the file and line."""

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.exitcodes import ExitCode
from tests.evaluate.helpers import evaluate, make_coco_case, make_polygon_case, write_case
from tests.evaluate.test_errors import assert_clean_failure, run_job

CLASS_FIELDS = ("name", "status", "n_ground_truth", "n_predictions", "threshold", "tp", "fp", "fn")
CLOSE_FIELDS = ("average_precision", "precision", "recall", "f1")


def sized_coco_case(seed: int):
    """make_coco_case without crowds (YOLO has none), with sizes that differ per image and names
    that sort as the ids do (so score ties break in the same image order)."""
    gt, dets = make_coco_case(seed, crowd_rate=0.0)
    for n, image in enumerate(gt["images"]):
        image.update(file_name=f"img_{image['id']:04d}.jpg", width=200 + 10 * (n % 3), height=200 + 20 * (n % 2))
    return gt, dets


def _line(cls: int, values, score=None) -> str:
    return " ".join([str(cls), *map(repr, map(float, values)), *([] if score is None else [repr(score)])])


def write_yolo(root: Path, gt: dict, dets: list, *, images: bool = True, segments: bool = False) -> dict:
    """The COCO case as Ultralytics files: root/gt/labels/*.txt (+ root/gt/images/*.png with the
    images' sizes), root/pred/*.txt with confidences, root/data.yaml. Images without objects get an
    empty label file, or (with `images`) every other one only its image."""
    index = {c["id"]: i for i, c in enumerate(gt["categories"])}
    images_by_id = {im["id"]: im for im in gt["images"]}
    stem = {im["id"]: Path(im["file_name"]).stem for im in gt["images"]}

    def normalised(row, image_id):
        w, h = images_by_id[image_id]["width"], images_by_id[image_id]["height"]
        if segments:
            xy = np.asarray(row["segmentation"][0]).reshape(-1, 2) / [w, h]
            return xy.ravel()
        x, y, bw, bh = row["bbox"]
        return [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]

    labels, preds = {}, {}
    for a in gt["annotations"]:
        labels.setdefault(a["image_id"], []).append(_line(index[a["category_id"]], normalised(a, a["image_id"])))
    for d in dets:
        preds.setdefault(d["image_id"], []).append(_line(index[d["category_id"]], normalised(d, d["image_id"]), d["score"]))
    (root / "gt" / "labels").mkdir(parents=True)
    (root / "pred").mkdir()
    for n, image in enumerate(gt["images"]):
        if image["id"] in labels or not images or n % 2 == 0:
            (root / "gt" / "labels" / f"{stem[image['id']]}.txt").write_text("".join(f"{s}\n" for s in labels.get(image["id"], [])))
        if images:
            (root / "gt" / "images").mkdir(exist_ok=True)
            Image.new("L", (image["width"], image["height"])).save(root / "gt" / "images" / f"{stem[image['id']]}.png")
    for image_id, lines in preds.items():
        (root / "pred" / f"{stem[image_id]}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {c['name']}" for i, c in enumerate(gt["categories"]))
    (root / "data.yaml").write_text(f"path: .\nval: images\nnames:\n{names}\n")
    return {"annotations": root / "gt", "predictions": root / "pred", "names": root / "data.yaml"}


def assert_same_report(got, want):
    assert [c.name for c in got.classes] == [c.name for c in want.classes]
    for g, w in zip(got.classes, want.classes):
        for field in CLASS_FIELDS:
            assert getattr(g, field) == getattr(w, field), (g.name, field)
        for field in CLOSE_FIELDS:
            gv, wv = getattr(g, field), getattr(w, field)
            assert (gv is None) == (wv is None) and (gv is None or abs(gv - wv) < 1e-12), (g.name, field, gv, wv)
    for field in ("mean_average_precision", "macro_f1", "global_threshold"):
        assert getattr(got.summary, field) == pytest.approx(getattr(want.summary, field), abs=1e-12)
    for field in ("annotation_images", "matched_images", "annotated_images_without_predictions"):
        assert getattr(got.alignment, field) == getattr(want.alignment, field), field


@pytest.mark.parametrize("images", [True, False])
def test_yolo_folders_give_the_coco_report(images, tmp_path, monkeypatch):
    gt, dets = sized_coco_case(3)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    want = evaluate(monkeypatch, det_path, gt_path)
    paths = write_yolo(tmp_path, gt, dets, images=images)
    got = evaluate(monkeypatch, paths["predictions"], paths["annotations"], class_names_uri=str(paths["names"]))
    assert_same_report(got, want)
    assert got.inputs["annotations"].format == got.inputs["predictions"].format == "yolo"
    assert got.matching.coordinates == ("pixels" if images else "normalised")
    assert (got.matching.coordinates_note is None) == images
    # COCO's summary: equal with pixel sizes; normalised, the area-range numbers are null with the reason.
    area = {"APs", "APm", "APl", "ARs", "ARm", "ARl"}
    g, w = got.coco.stats.model_dump(), want.coco.stats.model_dump()
    for name in g:
        if images or name not in area:
            assert g[name] == pytest.approx(w[name], abs=1e-12), name
        else:
            assert g[name] is None, name
    assert (got.coco.area_ranges_note is None) == images
    assert images or any(w[name] is not None for name in area)  # the case has objects in some range


def test_yolo_predictions_against_coco_ground_truth(tmp_path, monkeypatch):
    """Normalised predictions take the pixels of the COCO images' width and height."""
    gt, dets = sized_coco_case(5)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    want = evaluate(monkeypatch, det_path, gt_path)
    paths = write_yolo(tmp_path, gt, dets)
    got = evaluate(monkeypatch, paths["predictions"], gt_path, class_names_uri=str(paths["names"]))
    assert_same_report(got, want)
    assert got.matching.coordinates == "pixels"


def test_yolo_segments_give_the_coco_polygon_report(tmp_path, monkeypatch):
    gt, dets = make_polygon_case(2, n_images=12)
    for image in gt["images"]:
        image["file_name"] = f"{image['id']:04d}.jpg"
    gt_path, det_path = write_case(tmp_path, gt, dets)
    want = evaluate(monkeypatch, det_path, gt_path)
    paths = write_yolo(tmp_path, gt, dets, segments=True)
    got = evaluate(monkeypatch, paths["predictions"], paths["annotations"], class_names_uri=str(paths["names"]))
    # Exact polygons, or COCO masks where the images have sizes (both sides alike).
    assert want.matching.geometry == got.matching.geometry and got.matching.geometry in ("polygon", "segm")
    assert_same_report(got, want)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_yolo_archives(tmp_path, monkeypatch):
    gt, dets = sized_coco_case(7)
    paths = write_yolo(tmp_path / "files", gt, dets)
    want = evaluate(monkeypatch, paths["predictions"], paths["annotations"], class_names_uri=str(paths["names"]))
    with zipfile.ZipFile(tmp_path / "gt.zip", "w") as archive:
        for name, data in _tree(paths["annotations"]).items():
            archive.writestr(name, data)
    with tarfile.open(tmp_path / "pred.tar.gz", "w:gz") as archive:
        for name, data in _tree(paths["predictions"]).items():
            info = tarfile.TarInfo(f"labels/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    got = evaluate(monkeypatch, tmp_path / "pred.tar.gz", tmp_path / "gt.zip", class_names_uri=str(paths["names"]))
    assert_same_report(got, want)
    assert got.matching.coordinates == "pixels"  # the images inside the zip gave the sizes
    assert got.inputs["annotations"].format == "yolo" and got.inputs["annotations"].sha256


def test_yolo_s3_prefix(s3, tmp_path, monkeypatch):
    gt, dets = sized_coco_case(11)
    paths = write_yolo(tmp_path, gt, dets)
    want = evaluate(monkeypatch, paths["predictions"], paths["annotations"], class_names_uri=str(paths["names"]))
    for side in ("annotations", "predictions"):
        for name, data in _tree(paths[side]).items():
            s3.put(f"ds/{side}/{name}", data)
    names = s3.put("ds/data.yaml", paths["names"].read_bytes())
    got = evaluate(monkeypatch, s3.uri("ds/predictions/"), s3.uri("ds/annotations"), class_names_uri=names)
    assert_same_report(got, want)
    assert got.matching.coordinates == "pixels"
    assert got.inputs["predictions"].uri == s3.uri("ds/predictions/")


def test_images_folder_beside_labels_lists_images_without_label_files(tmp_path, monkeypatch):
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    for stem in ("a", "b"):
        Image.new("L", (100, 50)).save(tmp_path / "images" / "val" / f"{stem}.jpg")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a.txt").write_text("0 0.5 0.5 0.5 0.5 0.9\n")
    (tmp_path / "pred" / "b.txt").write_text("0 0.5 0.5 0.5 0.5 0.8\n")
    report = evaluate(monkeypatch, tmp_path / "pred", tmp_path / "labels" / "val")
    assert report.alignment.annotation_images == 2 and report.alignment.matched_images == 2
    (c,) = report.classes
    # Without names, classes are their ids; b (no label file, listed by images/) has a false positive.
    assert (c.name, c.n_ground_truth, c.n_predictions, c.tp, c.threshold) == ("0", 1, 2, 1, 0.9)
    assert report.matching.coordinates == "pixels"


@pytest.mark.parametrize("text", ["names: [cat, dog]\n", "names:\n  0: cat\n  1: dog\n", None])
def test_class_names_yaml_list_dict_and_text(text, tmp_path, monkeypatch):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "pred" / "a.txt").write_text("1 0.5 0.5 0.2 0.2 0.7\n0 0.1 0.1 0.1 0.1 0.6\n")
    names = tmp_path / ("names.txt" if text is None else "data.yaml")
    names.write_text("cat\ndog\n" if text is None else text)
    report = evaluate(monkeypatch, tmp_path / "pred", tmp_path / "gt", class_names_uri=str(names))
    assert [(c.name, c.class_id, c.tp, c.fp) for c in report.classes] == [("cat", 0, 0, 1), ("dog", 1, 1, 0)]


BAD = {
    # side, file, content, names file (name, text) or None, needles
    "4 values": ("annotations", "a.txt", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", None, ["a.txt", "line 2", "4 values"]),
    "class outside the names": ("predictions", "a.txt", "0 0.5 0.5 0.2 0.2 0.9\n\n2 0.5 0.5 0.2 0.2 0.9\n",
                                ("names.txt", "cat\ndog\n"), ["a.txt", "line 3", "class 2", "2 names"]),
    "class outside the names, uniform file": ("annotations", "a.txt", "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n5 0.1 0.1 0.1 0.1\n",
                                              ("names.txt", "cat\ndog\n"), ["a.txt", "line 3", "class 5"]),
    "negative width": ("annotations", "a.txt", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 -0.2 0.2\n", None, ["a.txt", "line 2", "negative"]),
    "class not an integer": ("predictions", "a.txt", "0.5 0.5 0.5 0.2 0.2 0.9\n", None, ["a.txt", "line 1", "not an integer"]),
    "no confidence": ("predictions", "a.txt", "0 0.5 0.5 0.2 0.2\n", None, ["a.txt", "line 1", "save_conf"]),
    "not a number": ("annotations", "a.txt", "0 0.5 x 0.2 0.2\n", None, ["a.txt", "line 1", "not a number"]),
    "yaml without names": ("annotations", "a.txt", "0 0.5 0.5 0.2 0.2\n", ("data.yaml", "path: .\nnc: 2\n"),
                           ["data.yaml", "line 1", "names"]),
    "invalid yaml": ("annotations", "a.txt", "0 0.5 0.5 0.2 0.2\n", ("data.yaml", "names: [cat\nx: {\n"),
                     ["data.yaml", "line", "not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_yolo_inputs(case, job_env, tmp_path):
    side, name, text, names, needles = BAD[case]
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    (tmp_path / "gt" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "pred" / "a.txt").write_text("0 0.5 0.5 0.2 0.2 0.9\n")
    (tmp_path / ("gt" if side == "annotations" else "pred") / name).write_text(text)
    env = {"predictions_uri": str(tmp_path / "pred"), "annotations_uri": str(tmp_path / "gt")}
    if names:
        (tmp_path / names[0]).write_text(names[1])
        env["class_names_uri"] = str(tmp_path / names[0])
    proc = run_job(job_env, tmp_path, **env)
    assert_clean_failure(proc, ExitCode.INPUT_DATA, *needles, out=tmp_path / "out")


def test_format_yolo_refuses_a_single_text_file(job_env, tmp_path):
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    proc = run_job(job_env, tmp_path, annotations_uri=str(tmp_path / "a.txt"), annotations_format="yolo")
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "a.txt", "is a file", out=tmp_path / "out")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["exit_code"] == ExitCode.INPUT_DATA


def test_image_sizes_from_headers_past_the_first_read(tmp_path, monkeypatch):
    """A JPEG whose size marker comes after a 200 kB ICC profile: read whole, not misread."""
    from jobs.evaluate.formats.yolo import HEADER_BYTES

    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "a.jpg", icc_profile=b"\0" * 200_000)
    assert (tmp_path / "images" / "a.jpg").stat().st_size > 3 * HEADER_BYTES
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a.txt").write_text("0 0.5 0.5 0.5 0.5 0.9\n")
    report = evaluate(monkeypatch, tmp_path / "pred", tmp_path)
    assert report.matching.coordinates == "pixels" and report.classes[0].tp == 1
    from jobs.evaluate.formats import ReadOptions, open_source
    from jobs.evaluate.formats.yolo import read

    table = read(open_source(str(tmp_path)), ReadOptions(predictions=False))
    assert (table.images[0].width, table.images[0].height) == (64, 48)
    assert table.boxes.tolist() == [[16.0, 12.0, 32.0, 24.0]]


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_expanding_past_the_cap_is_an_input_error(kind, tmp_path, monkeypatch):
    from common.errors import InputDataError
    from jobs.evaluate.formats import yolo

    monkeypatch.setattr(yolo, "MAX_ARCHIVE_BYTES", 10_000)
    text = b"0 0.5 0.5 0.2 0.2\n" * 1000  # 18 kB that compress to little
    path = tmp_path / f"labels.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("labels/a.txt", text)
    else:
        with tarfile.open(path, "w:gz") as archive:
            info = tarfile.TarInfo("labels/a.txt")
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    assert path.stat().st_size < 10_000
    with pytest.raises(InputDataError, match=r"labels\.(zip|tar\.gz): the archive expands to more than 10,000 bytes"):
        evaluate(monkeypatch, tmp_path / "unused", path)


def test_a_corrupt_archive_is_an_input_error(job_env, tmp_path):
    (tmp_path / "labels.zip").write_bytes(b"PK\x03\x04 not really a zip")
    proc = run_job(job_env, tmp_path, annotations_uri=str(tmp_path / "labels.zip"))
    assert_clean_failure(proc, ExitCode.INPUT_DATA, "labels.zip", "cannot read as an archive", out=tmp_path / "out")

