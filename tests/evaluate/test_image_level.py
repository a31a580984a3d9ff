"""Image-level (multi-label) mode: an image's score for a class is the maximum of its rows for that
class (the other rows are counted in `alignment.collapsed_prediction_rows`), checked against
scikit-learn; a ground-truth row with an empty category (and empty box cells) is an image without
objects."""

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, precision_score, recall_score

from tests.evaluate.helpers import evaluate

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def write_image_level(tmp_path, seed: int, *, n_images=60, n_classes=3, tied: bool):
    """GT and prediction CSVs without geometry: repeated (image, class) prediction rows, repeated
    labels, images without objects (empty category), predictions on images the GT does not have."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n_images, n_classes)) < 0.4
    gt_lines, pred_lines = ["image,category"], ["image,category,score"]
    best = np.full((n_images, n_classes), -np.inf)
    used = set()
    for i in range(n_images):
        classes = np.flatnonzero(labels[i])
        if classes.size == 0:
            gt_lines.append(f"img{i}.jpg,")
        for c in classes:
            gt_lines += [f"img{i}.jpg,c{c}"] * int(rng.integers(1, 3))
        for c in range(n_classes):
            for _ in range(int(rng.integers(0, 4))):
                score = round(float(rng.random()), 2) if tied else float(rng.random())
                while not tied and score in used:
                    score = float(rng.random())
                used.add(score)
                pred_lines.append(f"img{i}.jpg,c{c},{score!r}")
                best[i, c] = max(best[i, c], score)
    pred_lines += ["elsewhere.jpg,c0,0.99", "elsewhere.jpg,c0,0.98"]  # not in the GT: unjoined, not collapsed
    order = rng.permutation(len(pred_lines) - 1) + 1
    (tmp_path / "gt.csv").write_text("\n".join(gt_lines) + "\n")
    (tmp_path / "pred.csv").write_text("\n".join([pred_lines[0], *(pred_lines[k] for k in order)]) + "\n")
    return labels, best, len(pred_lines) - 1


@pytest.mark.parametrize("seed, tied", [(0, False), (1, False), (2, True), (3, True)])
def test_image_level_agrees_with_scikit_learn(seed, tied, tmp_path, monkeypatch):
    labels, best, n_rows = write_image_level(tmp_path, seed, tied=tied)
    report = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv")
    assert report.matching.geometry == "image"
    predicted = np.isfinite(best)
    assert report.alignment.collapsed_prediction_rows == n_rows - 2 - int(predicted.sum())
    assert report.alignment.unmatched_prediction_images.rows == 2
    assert report.alignment.annotation_images == labels.shape[0]  # images without objects included
    by_name = {c.name: c for c in report.classes}
    assert set(by_name) == {f"c{c}" for c in range(labels.shape[1])}  # no class named ""
    for c in range(labels.shape[1]):
        result = by_name[f"c{c}"]
        y_true, y_score = labels[:, c], best[:, c]
        assert (result.n_ground_truth, result.n_predictions) == (int(y_true.sum()), int(predicted[:, c].sum()))
        y_pred = y_score >= result.threshold
        assert result.precision == pytest.approx(precision_score(y_true, y_pred), abs=1e-12)
        assert result.recall == pytest.approx(recall_score(y_true, y_pred), abs=1e-12)
        assert (result.tp, result.fp, result.fn) == (int((y_pred & y_true).sum()), int((y_pred & ~y_true).sum()),
                                                     int((~y_pred & y_true).sum()))
        # Every threshold of the sweep is scikit-learn's; the chosen one has its best F1.
        keep = predicted[:, c]
        precision, recall, thresholds = precision_recall_curve(y_true[keep], y_score[keep])
        recall = recall * y_true[keep].sum() / y_true.sum()  # images never predicted are misses too
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0)[:-1]
        assert result.f1 == pytest.approx(f1.max(), abs=1e-12)
        assert result.threshold == thresholds[np.flatnonzero(np.isclose(f1, f1.max(), rtol=0, atol=1e-12))].max()
        if not tied:  # COCO's 101-point AP from scikit-learn's curve (no ties: one point per row)
            p, r_ = precision[:-1], recall[:-1]  # without scikit-learn's closing point (P=1, R=0)
            ap = np.mean([p[r_ >= r].max() if (r_ >= r).any() else 0.0 for r in RECALL_POINTS])
            assert result.average_precision == pytest.approx(ap, abs=1e-12)


def test_repeated_rows_are_not_false_positives(tmp_path, monkeypatch):
    (tmp_path / "gt.csv").write_text("image,category\na.jpg,cat\nb.jpg,\n")
    (tmp_path / "pred.csv").write_text("image,category,score\na.jpg,cat,0.6\na.jpg,cat,0.9\na.jpg,cat,0.2\nb.jpg,cat,0.1\n")
    report = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv")
    (cat,) = report.classes
    assert (cat.n_predictions, cat.tp, cat.fp, cat.threshold, cat.average_precision) == (2, 1, 0, 0.9, pytest.approx(1.0))
    assert report.alignment.collapsed_prediction_rows == 2


def test_empty_category_and_box_cells_list_an_image_without_objects(tmp_path, monkeypatch):
    (tmp_path / "gt.csv").write_text("image,category,bbox_x,bbox_y,bbox_w,bbox_h\na.jpg,car,1,1,5,5\nb.jpg,,,,,\n")
    (tmp_path / "pred.csv").write_text("image,category,score,bbox_x,bbox_y,bbox_w,bbox_h\n"
                                       "a.jpg,car,0.9,1,1,5,5\nb.jpg,car,0.8,1,1,5,5\n")
    report = evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv")
    (car,) = report.classes
    assert (report.alignment.annotation_images, car.n_ground_truth, car.n_predictions) == (2, 1, 2)
    assert report.alignment.unmatched_prediction_images.rows == 0  # b.jpg is an image of the GT


def test_an_empty_prediction_category_is_an_error(tmp_path, monkeypatch):
    from common.errors import InputDataError

    (tmp_path / "gt.csv").write_text("image,category\na.jpg,cat\n")
    (tmp_path / "pred.csv").write_text("image,category,score\na.jpg,cat,0.6\na.jpg,,0.9\n")
    with pytest.raises(InputDataError, match=r"pred.csv: row 2, column 'category': missing value"):
        evaluate(monkeypatch, tmp_path / "pred.csv", tmp_path / "gt.csv")
