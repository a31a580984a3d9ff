"""Pure functions from logits and labels to the numbers in metrics.json and the hand-off tables.

`predictions.parquet` and `annotations.parquet` use the evaluation job's default column names
(image, category, score / image, category) and carry no geometry, so `jobs.evaluate` scores them
image-level: one row per test image and class with the softmax score, and the true class per image.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F


def classification_summary(*, logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """accuracy, loss (mean unsmoothed cross-entropy), per-class accuracy and confusion matrix.

    logits (N, K) float, labels (N,) int. The loss sums in float64 so that it does not depend on
    the batch split. Confusion rows are true classes, columns predicted.
    """
    labels = labels.to(logits.device).long()
    k = len(classes)
    predicted = logits.argmax(1)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k).cpu()
    support = confusion.sum(1)
    per_class = (confusion.diag().double() / support.clamp(min=1).double()).tolist()
    return {
        "accuracy": float((predicted == labels).double().mean()) if len(labels) else 0.0,
        "loss": float(F.cross_entropy(logits.double(), labels, reduction="mean")) if len(labels) else 0.0,
        "per_class_accuracy": {name: round(acc, 6) for name, acc in zip(classes, per_class)},
        "confusion_matrix": {"labels": list(classes), "rows": "true", "columns": "predicted",
                             "matrix": confusion.tolist()},
    }


def image_names(n: int, *, split: str = "test") -> list[str]:
    return [f"{split}_{i:06d}.png" for i in range(n)]


def prediction_tables(*, logits: torch.Tensor, labels: torch.Tensor, classes: list[str]):
    """(predictions, annotations) as pyarrow tables: N*K score rows and N ground-truth rows."""
    import pyarrow as pa

    probs = torch.softmax(logits.double(), 1).float().cpu().numpy()
    n, k = probs.shape
    names = np.asarray(image_names(n), dtype=object)
    class_names = np.asarray(classes, dtype=object)
    predictions = pa.table({
        "image": pa.array(np.repeat(names, k)),
        "category": pa.array(np.tile(class_names, n)),
        "score": pa.array(probs.reshape(-1), type=pa.float32()),
    })
    annotations = pa.table({
        "image": pa.array(names),
        "category": pa.array(class_names[labels.cpu().numpy()]),
    })
    return predictions, annotations


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
