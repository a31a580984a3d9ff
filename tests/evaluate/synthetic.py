"""Synthetic evaluation inputs with known properties: a known overconfidence temperature, and
scores that can be shifted so every threshold moves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def image_level_overconfident(tmp: Path, *, temperature, n_images=2000, n_classes=4, seed=0,
                              logit_scale=1.5) -> tuple[Path, Path]:
    """Image-level (multi-label) Parquet inputs whose scores are sigmoid(T * z) while P(label) = sigmoid(z).

    So the true calibrating temperature is `temperature`: sigmoid(logit(score) / T) = sigmoid(z).
    A list gives each class its own temperature (class c{k} gets temperature[k]).
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, logit_scale, (n_images, n_classes))
    labels = rng.random((n_images, n_classes)) < sigmoid(z)
    scores = sigmoid(np.asarray(temperature, dtype=np.float64).reshape(1, -1) * z)
    names = np.array([f"img_{i:05d}.png" for i in range(n_images)], dtype=object)
    classes = np.array([f"c{k}" for k in range(n_classes)], dtype=object)
    pred = pa.table({"image": np.repeat(names, n_classes), "category": np.tile(classes, n_images),
                     "score": scores.reshape(-1)})
    img, cls = np.nonzero(labels)
    unlabeled = np.flatnonzero(~labels.any(1))  # images without labels are listed with a null category
    gt = pa.table({"image": pa.array(list(names[img]) + list(names[unlabeled])),
                   "category": pa.array(list(classes[cls]) + [None] * unlabeled.size, type=pa.string())})
    pred_path, gt_path = tmp / "predictions.parquet", tmp / "annotations.parquet"
    pq.write_table(pred, pred_path)
    pq.write_table(gt, gt_path)
    return pred_path, gt_path


def boxes_overconfident(tmp: Path, *, temperature: float, n_images=600, n_classes=3, seed=0) -> tuple[Path, Path]:
    """COCO boxes: each detection is exactly on an object (TP) with probability sigmoid(z), else far
    from every object (FP); its score is sigmoid(T * z)."""
    rng = np.random.default_rng(seed)
    categories = [{"id": k + 1, "name": f"k{k}"} for k in range(n_classes)]
    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg"})
        for j in range(4):
            k = int(rng.integers(n_classes))
            x, y = 100.0 * j, 0.0
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": k + 1, "bbox": [x, y, 50.0, 50.0],
                         "iscrowd": 0})
            z = rng.normal(0.0, 1.5)
            hit = rng.random() < sigmoid(z)
            box = [x, y, 50.0, 50.0] if hit else [x, 500.0, 50.0, 50.0]
            dets.append({"image_id": i + 1, "category_id": k + 1, "bbox": box, "score": float(sigmoid(temperature * z))})
    gt_path, det_path = tmp / "annotations.json", tmp / "predictions.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    det_path.write_text(json.dumps(dets))
    return det_path, gt_path


def separable_case(n_images=120, n_classes=3, seed=0, shift=None):
    """COCO data whose F1-optimal thresholds sit well inside (0.3, 0.9): TPs score in [0.55, 0.95],
    FPs in [0.05, 0.7]. `shift(scores)` transforms every score (to move every threshold)."""
    rng = np.random.default_rng(seed)
    categories = [{"id": k + 1, "name": f"k{k}"} for k in range(n_classes)]
    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg"})
        for j in range(3):
            k = int(rng.integers(n_classes))
            box = [60.0 * j, 0.0, 40.0, 40.0]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": k + 1, "bbox": box, "iscrowd": 0})
            if rng.random() < 0.85:
                dets.append({"image_id": i + 1, "category_id": k + 1, "bbox": box, "score": float(rng.uniform(0.55, 0.95))})
            if rng.random() < 0.6:
                dets.append({"image_id": i + 1, "category_id": k + 1, "bbox": [60.0 * j, 300.0, 40.0, 40.0],
                             "score": float(rng.uniform(0.05, 0.7))})
    if shift is not None:
        for d in dets:
            d["score"] = float(shift(d["score"]))
    return {"images": images, "annotations": anns, "categories": categories}, dets
