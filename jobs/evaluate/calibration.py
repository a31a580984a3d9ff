"""Temperature scaling of detection scores, and expected calibration error (ECE).

The calibrated score is sigmoid(logit(s) / T). T is fitted by maximum likelihood (Bernoulli
NLL) on every non-ignored detection with label "this detection is a true positive at the IoU
threshold"; T > 1 softens an overconfident detector. For image-level (multi-label) evaluation the
label is "the image carries this class". Scores are clipped to [SCORE_EPS, 1 - SCORE_EPS] before
the logit, so 0 and 1 stay finite.

Honest ECE: T is cross-fitted over image folds. Each detection's `ece_after` score comes from a T
fitted on the other folds, so no detection is scored by a T that saw it. The reported
`temperature` (the one to deploy) is refitted on all images. Temperature scaling is strictly
increasing, so it never changes which detections a threshold keeps: the chosen operating points
are the same on both scales, and a threshold t maps to sigmoid(logit(t) / T).

ECE uses N_BINS equal-width confidence bins on [0, 1] (the last bin closed): the count-weighted
mean of |accuracy - mean confidence| over non-empty bins.
"""

from __future__ import annotations

import numpy as np

N_BINS = 15
SCORE_EPS = 1e-6
# 1/T is searched in [1/MAX_T, 1/MIN_T]; a fit at a bound means the scores carry (almost) no signal.
MIN_T, MAX_T = 1e-3, 1e3
BINNING = f"{N_BINS} equal-width bins on [0, 1]: [k/{N_BINS}, (k+1)/{N_BINS}), the last one closed"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), SCORE_EPS, 1.0 - SCORE_EPS)
    return np.log(s) - np.log1p(-s)


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    return sigmoid(logit(scores) / temperature)


def nll_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean Bernoulli negative log-likelihood of labels under sigmoid(logits / T)."""
    z = logits / temperature
    # log(1 + exp(z)) - y z, computed without overflow.
    return float(np.mean(np.logaddexp(0.0, z) - labels * z)) if z.size else float("nan")


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Maximum-likelihood T for sigmoid(logits / T); None when both labels are not present.

    The NLL is convex in a = 1/T and its derivative sum((sigmoid(a z) - y) z) increases with a,
    so the root is bracketed and found by bisection on log a (no optimiser dependency).
    """
    labels = labels.astype(np.float64)
    if logits.size == 0 or labels.min() == labels.max():
        return None

    def slope(a: float) -> float:
        return float(np.dot(sigmoid(a * logits) - labels, logits))

    lo, hi = np.log(1 / MAX_T), np.log(1 / MIN_T)
    if slope(np.exp(lo)) >= 0:
        return MAX_T
    if slope(np.exp(hi)) <= 0:
        return MIN_T
    for _ in range(60):  # the bracket shrinks 2^60-fold: far below any meaningful precision
        mid = 0.5 * (lo + hi)
        if slope(np.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return float(1.0 / np.exp(0.5 * (lo + hi)))


def reliability_bins(confidence: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS):
    """Per bin: count, mean confidence and accuracy (NaN where empty). Arrays of shape (n_bins,)."""
    idx = np.minimum((np.asarray(confidence) * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(idx, weights=labels.astype(np.float64), minlength=n_bins) / count
    return count, conf, acc


def expected_calibration_error(confidence: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float | None:
    """ECE over `n_bins` equal-width bins; None without detections. Lower is better."""
    if confidence.size == 0:
        return None
    count, conf, acc = reliability_bins(confidence, labels, n_bins)
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(acc[filled] - conf[filled])) / confidence.size)


def fold_of_images(n_images: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(n_images,) fold number of each image: a seeded permutation dealt round-robin."""
    fold = np.empty(n_images, dtype=np.int64)
    fold[rng.permutation(n_images)] = np.arange(n_images) % folds
    return fold


def cross_fitted_temperatures(logits: np.ndarray, labels: np.ndarray, fold: np.ndarray, folds: int,
                              fallback: float) -> tuple[np.ndarray, list[float]]:
    """Per detection the T fitted without its fold (`fold`: per-detection fold), and the fold Ts.

    A fold whose complement has only one label (no fit possible) uses `fallback`.
    """
    per_detection = np.full(logits.size, fallback)
    temperatures = []
    for k in range(folds):
        held = fold == k
        if not held.any():
            continue
        t = fit_temperature(logits[~held], labels[~held])
        t = fallback if t is None else t
        temperatures.append(t)
        per_detection[held] = t
    return per_detection, temperatures


def _bins(confidence: np.ndarray, labels: np.ndarray):
    from jobs.evaluate.report import ReliabilityBin

    count, conf, acc = reliability_bins(confidence, labels)
    return [
        ReliabilityBin(lower=k / N_BINS, upper=(k + 1) / N_BINS, count=int(count[k]),
                       confidence=None if count[k] == 0 else float(conf[k]),
                       accuracy=None if count[k] == 0 else float(acc[k]))
        for k in range(N_BINS)
    ]


def check_probabilities(scores: np.ndarray) -> None:
    from common.errors import InputDataError

    bad = np.flatnonzero((scores < 0) | (scores > 1))
    if bad.size:
        raise InputDataError(f"EVAL_CALIBRATION=temperature needs prediction scores in [0, 1]; "
                             f"{bad.size} are outside, e.g. {scores[bad[0]]!r}")


def calibrate(aligned, matches, classes, summary, *, folds: int, seed: int):
    """The `calibration` block, and every detection's cross-fitted calibrated score (NaN if ignored).

    `classes`/`summary` carry the chosen raw thresholds, which are mapped to the calibrated scale.
    """
    from jobs.evaluate.report import Calibration, ClassCalibration
    from jobs.evaluate.split import CALIBRATION_STREAM, rng

    det = aligned.det
    check_probabilities(det.score)
    used = ~matches.ignored
    z, y = logit(det.score[used]), matches.tp[used]
    temperature = fit_temperature(z, y)
    fold = fold_of_images(aligned.n_images, folds, rng(seed, CALIBRATION_STREAM))[det.image[used]]
    per_detection, fold_ts = cross_fitted_temperatures(z, y, fold, folds, 1.0 if temperature is None else temperature)
    raw = sigmoid(z)  # the clipped raw score, so both ECEs see the same inputs
    calibrated = sigmoid(z / per_detection)
    out = np.full(det.score.size, np.nan)
    out[used] = calibrated

    def to_calibrated(t):
        return None if t is None or temperature is None else float(apply_temperature(np.array([t]), temperature)[0])

    cls = det.cls[used]
    per_class = []
    for c, result in enumerate(classes):
        mine = cls == c
        per_class.append(ClassCalibration(
            name=result.name, n_detections=int(mine.sum()), threshold=result.threshold,
            calibrated_threshold=to_calibrated(result.threshold),
            ece_before=expected_calibration_error(raw[mine], y[mine]),
            ece_after=expected_calibration_error(calibrated[mine], y[mine]) if temperature is not None else None,
        ))
    fitted = temperature is not None
    block = Calibration(
        method="temperature",
        target="a non-ignored detection is a true positive at the IoU threshold"
        if aligned.geometry != "image" else "the image carries the predicted class (image-level)",
        fit="cross_validation",
        fit_description=f"T cross-fitted over {folds} seeded image folds: ece_after/nll_after score each detection "
        "with a T fitted on the other folds; `temperature` is refitted on all images. Scaling is monotonic, so "
        "the threshold choice is the same on both scales and no fold decides a threshold.",
        folds=folds, seed=seed, status="ok" if fitted else "not_fitted",
        temperature=temperature, fold_temperatures=fold_ts if fitted else [],
        n_detections=int(y.size), n_true_positives=int(y.sum()), score_clip=SCORE_EPS,
        n_bins=N_BINS, binning=BINNING,
        ece_before=expected_calibration_error(raw, y),
        ece_after=expected_calibration_error(calibrated, y) if fitted else None,
        nll_before=nll_loss(z, y) if y.size else None,
        nll_after=float(np.mean(np.logaddexp(0.0, z / per_detection) - y * z / per_detection)) if fitted else None,
        reliability_before=_bins(raw, y),
        reliability_after=_bins(calibrated, y) if fitted else [],
        global_threshold=to_calibrated(summary.global_threshold),
        thresholds={r.name: to_calibrated(r.threshold) for r in classes if r.threshold is not None and fitted},
        classes=per_class,
    )
    return block, (out if fitted else None)
