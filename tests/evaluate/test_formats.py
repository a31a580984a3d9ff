"""The format registry: detection by magic bytes, extension and content; a new format is one
registry entry and nothing else; the policy is parsed once, outside the sweep."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from common.errors import InputDataError
from jobs.evaluate import formats
from jobs.evaluate.formats import REGISTRY, Format, Source, detect_format
from jobs.evaluate.load import CategoryInfo, ImageInfo, Table
from jobs.evaluate.settings import EvalSettings
from jobs.evaluate.sweep import Policy
from tests.evaluate.helpers import eval_settings, evaluate, make_coco_case, write_case


class FakeBlob:
    def __init__(self, uri: str, data: bytes):
        self.uri, self.data, self.version = uri, data, "sha256:0"


@pytest.mark.parametrize("name, data, expected", [
    ("gt.json", b'{"images": []}', "coco"),
    ("gt.JSON.gz", b"\x1f\x8b", "coco"),
    ("preds", b'  [{"image_id": 1}]', "coco"),  # no extension: the content says JSON
    ("preds.csv", b"image,category\n", "csv"),
    ("preds.csv", b"PAR1\x15\x04", "parquet"),  # magic bytes win over the name
    ("preds.pq", b"xx", "parquet"),
    ("preds.ndjson", b'{"image": "a"}\n', "jsonl"),
    ("labels.zip", b"PK\x03\x04", "yolo"),
    ("labels.tar.gz", b"\x1f\x8b", "yolo"),
    ("labels.bin", b"PK\x03\x04", "yolo"),
])
def test_detect_a_file(name, data, expected):
    assert detect_format(Source(f"/d/{name}", blob=FakeBlob(f"/d/{name}", data)), "auto").name == expected


def test_detect_a_folder():
    assert detect_format(Source("/d/labels", names=["a.txt", "b.txt"]), "auto").name == "yolo"
    with pytest.raises(InputDataError, match="no folder format"):
        detect_format(Source("/d/x", names=["a.csv"]), "auto")
    with pytest.raises(InputDataError, match="cannot tell the format"):
        detect_format(Source("/d/x.bin", blob=FakeBlob("/d/x.bin", b"\x00\x01")), "auto")


def test_eval_format_values_are_the_registry():
    choices = EvalSettings.model_fields["format"].annotation.__args__
    assert choices == ("auto", *REGISTRY) and {"coco", "csv", "parquet", "jsonl", "yolo"} <= set(REGISTRY)


def test_a_new_format_is_one_registry_entry(tmp_path, monkeypatch):
    """A reader registered for '.toy' files, returning an image list and categories, is evaluated
    like COCO: the join on image ids, strict categories and images without rows all work."""
    gt, dets = make_coco_case(4)
    gt_path, det_path = write_case(tmp_path, gt, dets)
    want = evaluate(monkeypatch, det_path, gt_path)

    def read_toy(source, options):
        doc = json.loads(bytes(source.blob.data))
        rows = doc if options.predictions else doc["annotations"]
        ids = sorted({r["image_id"] for r in rows})
        cats = sorted({r["category_id"] for r in rows})
        return Table(
            uri=source.uri, format="toy", version=source.blob.version,
            image_codes=np.array([ids.index(r["image_id"]) for r in rows], dtype=np.int64), image_refs=ids,
            category_codes=np.array([cats.index(r["category_id"]) for r in rows], dtype=np.int64), category_refs=cats,
            score=np.array([r["score"] for r in rows]) if options.predictions else None,
            boxes=np.array([r["bbox"] for r in rows], dtype=np.float64).reshape(-1, 4),
            iscrowd=np.array([bool(r.get("iscrowd")) for r in rows]),
            images=None if options.predictions else [ImageInfo(id=im["id"], file_name=im["file_name"]) for im in doc["images"]],
            categories=None if options.predictions else [CategoryInfo(id=c["id"], name=c["name"]) for c in doc["categories"]],
            image_refs_are_ids=True,
        )

    monkeypatch.setitem(REGISTRY, "toy", Format(name="toy", read=read_toy, extensions=(".toy",)))
    (tmp_path / "gt.toy").write_bytes(gt_path.read_bytes())
    (tmp_path / "preds.toy").write_bytes(det_path.read_bytes())
    got = evaluate(monkeypatch, tmp_path / "preds.toy", tmp_path / "gt.toy")
    assert got.inputs["annotations"].format == "toy"
    assert got.alignment.join == "coco_image_id"
    assert [c.model_dump() for c in got.classes] == [c.model_dump() for c in want.classes]
    assert got.alignment == want.alignment


def test_archive_detection_uses_the_registry(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("labels/a.txt", "0 0.5 0.5 0.1 0.1\n")
    path = tmp_path / "anything"
    path.write_bytes(buffer.getvalue())
    source = formats.open_source(str(path))
    assert detect_format(source, "auto").name == "yolo"


@pytest.mark.parametrize("text, kind, value, spelled", [
    ("f1", "fbeta", 1.0, "f1"),
    ("fbeta:0.5", "fbeta", 0.5, "fbeta:0.5"),
    (" precision >= 0.9 ", "precision", 0.9, "precision>=0.9"),
    ("recall>=1", "recall", 1.0, "recall>=1"),
])
def test_policy_is_parsed_once_into_a_typed_value(text, kind, value, spelled, monkeypatch, tmp_path):
    policy = Policy.parse(text)
    assert (policy.kind, policy.value, str(policy)) == (kind, value, spelled)
    settings = eval_settings(monkeypatch, predictions_uri="p.csv", annotations_uri="a.json", output_uri="o", policy=text)
    assert settings.policy == policy
    assert settings.model_dump(mode="json")["policy"] == spelled  # the report's config keeps the text


@pytest.mark.parametrize("text", ["f2", "fbeta:0", "precision>=0", "recall>=1.5", "precision>=1.2.3", ""])
def test_bad_policies(text):
    with pytest.raises(ValueError):
        Policy.parse(text)


def test_the_sweep_does_not_import_the_settings():
    code = "import sys, jobs.evaluate.sweep; sys.exit('jobs.evaluate.settings' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
