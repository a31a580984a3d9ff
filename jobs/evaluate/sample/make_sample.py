"""Regenerate the demo sample (seeded): `python jobs/evaluate/sample/make_sample.py`.

It reproduces the situation the job exists for: ground truth in COCO JSON keyed by id and
file name, predictions in a CSV keyed by a camera path in another case and extension; a class
(`bicycle`) that is predicted but never annotated; and predictions on images nobody annotated.
"""

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}, {"id": 2, "name": "bicycle"}]


def main() -> None:
    rng = np.random.default_rng(7)
    images, annotations, rows = [], [], []
    ann_id = 0  # COCO annotation ids are arbitrary; 0 is valid
    for n in range(1, 41):
        file_name = f"frame_{n:04d}.jpg"
        images.append({"id": 1000 + n, "file_name": file_name, "width": 640, "height": 480})
        for _ in range(rng.integers(1, 5)):
            cat = CATEGORIES[rng.integers(0, 3)]
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            w, h = rng.uniform(20, 140), rng.uniform(20, 130)
            annotations.append({"id": ann_id, "image_id": 1000 + n, "category_id": cat["id"],
                                "bbox": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)],
                                "area": round(w * h, 1), "iscrowd": 0})
            ann_id += 1
            if rng.random() < 0.85:  # detected, with a jittered box
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                rows.append((n, cat["name"], [x, y, w, h] + jitter, rng.uniform(0.45, 0.99)))
        for _ in range(rng.integers(0, 3)):  # false positives, some of them "bicycle"
            cat = CATEGORIES[rng.integers(0, 4)]
            rows.append((n, cat["name"], [rng.uniform(0, 500), rng.uniform(0, 350), 60, 60], rng.uniform(0.05, 0.7)))
    for n in (9001, 9002, 9003):  # frames the annotators never saw
        rows.append((n, "person", [10, 10, 50, 80], 0.9))
    (HERE / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}, indent=1))
    with open(HERE / "predictions.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["image", "category", "score", "bbox_x", "bbox_y", "bbox_w", "bbox_h"])
        for n, name, (x, y, w, h), score in rows:
            out.writerow([f"cam-07/2026-11-02/FRAME_{n:04d}.JPG", name, f"{score:.4f}",
                          f"{x:.1f}", f"{y:.1f}", f"{max(w, 1):.1f}", f"{max(h, 1):.1f}"])


if __name__ == "__main__":
    main()
