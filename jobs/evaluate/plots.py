"""PNG plots of a report: per class the PR curve with the chosen point, F1 against the threshold,
and the reliability diagram; plus the pooled reliability diagram.

`class_curves` is pure numpy on the matches; `render_plots` draws with matplotlib's Agg backend
(imported here only, so the job starts fast when plots are off) and returns {name: PNG bytes},
leaving the writing to the caller. With a holdout, curves are drawn for the selection images
(where the threshold was chosen) and, dashed, for the held-out images.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from jobs.evaluate.calibration import N_BINS, reliability_bins
from jobs.evaluate.match import descending_rank, stable_order
from jobs.evaluate.sweep import Sweep, sweep_thresholds

PLOTS_FOLDER = "plots"


@dataclass
class ClassCurves:
    selection: Sweep | None  # None: no ground truth or no detections there
    evaluation: Sweep | None  # held-out images; None without a holdout
    scores: np.ndarray  # raw scores of the class's non-ignored detections (all images)
    calibrated: np.ndarray | None
    labels: np.ndarray  # true positive at the IoU threshold


def _class_sweeps(cls: np.ndarray, score: np.ndarray, tp: np.ndarray, n_gt: np.ndarray) -> list[Sweep | None]:
    """sweep_thresholds for every class at once; rows sorted by class, then descending score."""
    n_classes = n_gt.size
    bounds = np.searchsorted(cls, np.arange(n_classes + 1))
    # Cumulative counts restart at each class; a point is the last row of a run of equal scores.
    tp_cum = np.cumsum(tp, dtype=np.int64)
    before = np.r_[0, tp_cum][bounds[:-1]]
    starts = np.repeat(bounds[:-1], np.diff(bounds))
    tp_class = tp_cum - np.repeat(before, np.diff(bounds))
    fp_class = np.arange(1, cls.size + 1) - starts - tp_class
    last = np.flatnonzero(np.r_[(score[1:] != score[:-1]) | (cls[1:] != cls[:-1]), True]) if cls.size else np.zeros(0, np.int64)
    at = np.searchsorted(cls[last], np.arange(n_classes + 1))
    thresholds, tps, fps = score[last], tp_class[last], fp_class[last]
    return [Sweep(thresholds[at[c]:at[c + 1]], tps[at[c]:at[c + 1]], fps[at[c]:at[c + 1]], int(n_gt[c]))
            if n_gt[c] and at[c + 1] > at[c] else None for c in range(n_classes)]


def class_curves(aligned, matches, evaluation_mask: np.ndarray | None, calibrated: np.ndarray | None) -> list[ClassCurves]:
    """Per class: the sweep on the selection images (all images without a holdout), on the held-out
    images, and the raw/calibrated scores with their labels. One sort for all classes."""
    det, gt = aligned.det, aligned.gt
    n_classes = len(aligned.classes)
    # By class, then descending score (the run's cached rank): the sweep's counts at the last
    # detection of each run of equal scores do not depend on the order within the run.
    order = stable_order((det.cls, n_classes), descending_rank(det.score))
    order = order[~matches.ignored[order]]
    cls, score, tp, image = det.cls[order], det.score[order], matches.tp[order], det.image[order]
    sweeps = []
    for m in [None] if evaluation_mask is None else [~evaluation_mask, evaluation_mask]:
        n_gt = np.bincount(gt.cls[~gt.crowd & (True if m is None else m[gt.image])], minlength=n_classes)
        rows = slice(None) if m is None else m[image]
        sweeps.append(_class_sweeps(cls[rows], score[rows], tp[rows], n_gt))
    bounds = np.searchsorted(cls, np.arange(n_classes + 1))
    cal = None if calibrated is None else calibrated[order]
    evaluation = sweeps[1] if len(sweeps) > 1 else [None] * n_classes
    return [ClassCurves(sweeps[0][c], evaluation[c], score[bounds[c]:bounds[c + 1]],
                        None if cal is None else cal[bounds[c]:bounds[c + 1]], tp[bounds[c]:bounds[c + 1]])
            for c in range(n_classes)]


def plot_name(index: int, name: str, kind: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "class"
    return f"{PLOTS_FOLDER}/{index:03d}-{slug}-{kind}.png"


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.4), dpi=90)
    fig.subplots_adjust(left=0.15, right=0.86, bottom=0.14, top=0.9)  # fixed margins: layout engines cost more than the drawing
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _title(ax, text: str) -> None:
    # A class name is data: "$\\frac{a$" must show as typed, not be parsed as mathtext (and fail).
    ax.set_title(text, parse_math=False)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same input, same bytes
    return buf.getvalue()


def _at(sweep: Sweep, threshold: float) -> int | None:
    kept = int(np.searchsorted(-sweep.thresholds, -threshold, side="right"))
    return kept - 1 if kept else None


def _pr_plot(curves: ClassCurves, result, title: str) -> bytes:
    fig, ax = _figure()
    for sweep, style, label in ((curves.selection, "-", "selection images"), (curves.evaluation, "--", "held-out images")):
        if sweep is None:
            continue
        ax.plot(np.r_[0.0, sweep.recall], np.r_[1.0, sweep.precision], style, drawstyle="steps-post", lw=1.4,
                label=label if curves.evaluation is not None else "all images")
        i = None if result.threshold is None else _at(sweep, result.threshold)
        if i is not None:
            ax.plot(sweep.recall[i], sweep.precision[i], "o", ms=7, color="crimson",
                    label=f"threshold {result.threshold:.3g}" if style == "-" else None)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    _title(ax, f"{title}: precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    return _png(fig)


def _f1_plot(curves: ClassCurves, result, title: str) -> bytes:
    fig, ax = _figure()
    for sweep, style, label in ((curves.selection, "-", "selection images"), (curves.evaluation, "--", "held-out images")):
        if sweep is None:
            continue
        ax.plot(sweep.thresholds, sweep.fbeta_score(1.0), style, drawstyle="steps-post", lw=1.4,
                label=label if curves.evaluation is not None else "all images")
    if result.threshold is not None:
        ax.axvline(result.threshold, color="crimson", lw=1, label=f"threshold {result.threshold:.3g}")
    ax.set(ylim=(0, 1.02), xlabel="threshold (keep score >= t)", ylabel="F1")
    _title(ax, f"{title}: F1 vs threshold")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    return _png(fig)


def _reliability_plot(scores: np.ndarray, labels: np.ndarray, calibrated: np.ndarray | None, title: str) -> bytes:
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
    centres = (np.arange(N_BINS) + 0.5) / N_BINS
    for conf_scores, marker, label in ((scores, "o-", "raw"), (calibrated, "s-", "calibrated (cross-fitted)")):
        if conf_scores is None:
            continue
        count, conf, acc = reliability_bins(conf_scores, labels)
        filled = count > 0
        ax.plot(conf[filled], acc[filled], marker, ms=4, lw=1.2, label=label)
    count, _, _ = reliability_bins(scores, labels)
    ax2 = ax.twinx()
    ax2.bar(centres, count, width=1 / N_BINS, alpha=0.15, color="grey")
    ax2.set_ylabel("detections per bin (raw)", fontsize=7)
    ax2.tick_params(labelsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=f"score ({N_BINS} equal-width bins)", ylabel="share true positive")
    _title(ax, f"{title}: reliability")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left", fontsize=7)
    return _png(fig)


def render_plots(report, curves: list[ClassCurves]) -> tuple[dict[str, bytes], dict[int, dict[str, str]], str | None]:
    """PNG files by name, the names per class index and kind, and the pooled reliability plot's name."""
    files: dict[str, bytes] = {}
    per_class: dict[int, dict[str, str]] = {}
    probabilities = all(c.scores.size == 0 or (c.scores.min() >= 0 and c.scores.max() <= 1) for c in curves)
    for c, (result, cc) in enumerate(zip(report.classes, curves)):
        names = {}
        if cc.selection is not None or cc.evaluation is not None:
            names["pr"] = plot_name(c, result.name, "pr")
            files[names["pr"]] = _pr_plot(cc, result, result.name)
            names["f1"] = plot_name(c, result.name, "f1")
            files[names["f1"]] = _f1_plot(cc, result, result.name)
        if probabilities and cc.scores.size:
            names["reliability"] = plot_name(c, result.name, "reliability")
            files[names["reliability"]] = _reliability_plot(cc.scores, cc.labels, cc.calibrated, result.name)
        per_class[c] = names
    pooled = None
    scores = np.concatenate([c.scores for c in curves]) if curves else np.zeros(0)
    if probabilities and scores.size:
        labels = np.concatenate([c.labels for c in curves])
        calibrated = None if any(c.calibrated is None for c in curves) else np.concatenate([c.calibrated for c in curves])
        pooled = f"{PLOTS_FOLDER}/reliability-all-classes.png"
        files[pooled] = _reliability_plot(scores, labels, calibrated, "all classes")
    return files, per_class, pooled
