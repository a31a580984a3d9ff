"""Bootstrap intervals: resample images (not detections), rerun the choice, take percentiles.

Objects within an image are correlated (one crowded image yields many TPs or FPs at once), so the
unit resampled is the image. Each replicate draws images with replacement (a drawn image's copies
count as separate images), reruns the same evaluation as the report (the policy, min_support and
fallback rules of `evaluate_classes`, at the same matches) and records per class the AP, the
chosen threshold, and F1 at that threshold. With a holdout, the selection and evaluation images
are resampled separately, and F1/AP come from the evaluation resample at the threshold chosen on
the selection resample: the intervals then cover exactly the quantities the report states.
"""

from __future__ import annotations

import time

import numpy as np

from jobs.evaluate.classes import evaluate_at_thresholds, evaluate_classes
from jobs.evaluate.split import BOOTSTRAP_STREAM, rng, take_images

LOG_EVERY_S = 5.0


def _resample(generator: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """As many images as given, drawn with replacement (none from none)."""
    return images[generator.integers(0, images.size, images.size)] if images.size else images


def percentile_interval(values: list[float | None]) -> dict:
    """The 95% percentile interval of the defined values (None where undefined)."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"low": None, "high": None, "defined": 0}
    low, high = np.percentile(v, [2.5, 97.5])
    return {"low": float(low), "high": float(high), "defined": int(v.size)}


def bootstrap_intervals(aligned, matches, *, replicates: int, seed: int, policy, min_support: int,
                        evaluation_mask: np.ndarray | None, log=None):
    """The `bootstrap` block. `evaluation_mask` (n_images,) bool marks held-out images, or None."""
    from jobs.evaluate.report import Bootstrap, ClassIntervals, Interval

    generator = rng(seed, BOOTSTRAP_STREAM)
    if evaluation_mask is None:
        selection_images = evaluation_images = np.arange(aligned.n_images)
    else:
        selection_images, evaluation_images = np.flatnonzero(~evaluation_mask), np.flatnonzero(evaluation_mask)
    names = [c.name for c in aligned.classes]
    ap, f1, thr = ([[] for _ in names] for _ in range(3))  # per class index: names may repeat
    mean_ap, macro_f1 = [], []

    started = last_log = time.monotonic()
    for r in range(replicates):
        draw = _resample(generator, selection_images)
        sub, sub_matches = take_images(aligned, matches, draw)
        chosen, summary = evaluate_classes(sub, sub_matches, policy=policy, min_support=min_support)
        if evaluation_mask is not None:
            draw = _resample(generator, evaluation_images)
            sub, sub_matches = take_images(aligned, matches, draw)
            chosen, summary = evaluate_at_thresholds(sub, sub_matches, chosen, global_threshold=summary.global_threshold)
        for c, result in enumerate(chosen):
            ap[c].append(result.average_precision)
            f1[c].append(result.f1)
            thr[c].append(result.threshold)
        mean_ap.append(summary.mean_average_precision)
        macro_f1.append(summary.macro_f1)
        now = time.monotonic()
        if log is not None and (now - last_log >= LOG_EVERY_S or r + 1 == replicates):
            rate = (r + 1) / max(now - started, 1e-9)
            log.info("bootstrap", done=r + 1, total=replicates, per_second=round(rate, 1),
                     eta_seconds=round((replicates - r - 1) / rate, 1))
            last_log = now

    if evaluation_mask is None:
        resampling = f"all {aligned.n_images} images, with replacement, {replicates} times"
    else:
        resampling = (f"the {selection_images.size} selection and the {evaluation_images.size} held-out images "
                      f"separately, with replacement, {replicates} times; threshold from the selection resample, "
                      "AP and F1 from the held-out resample")
    return Bootstrap(
        replicates=replicates, seed=seed, resampling=resampling,
        mean_average_precision=Interval(**percentile_interval(mean_ap)),
        macro_f1=Interval(**percentile_interval(macro_f1)),
        classes=[ClassIntervals(name=n, average_precision=Interval(**percentile_interval(ap[c])),
                                f1=Interval(**percentile_interval(f1[c])),
                                threshold=Interval(**percentile_interval(thr[c]))) for c, n in enumerate(names)],
    )
