"""Calibration of detection scores (temperature, Platt, isotonic; one map or one per class), and
expected calibration error (ECE).

A calibrated score is the probability that the detection is a true positive at the IoU threshold
(image-level evaluation: that the image carries the class). The maps, from a raw score s clipped
to [SCORE_EPS, 1 - SCORE_EPS] (so 0 and 1 stay finite), with logit(s) = log(s / (1 - s)):
  - temperature: sigmoid(logit(s) / T); T by maximum likelihood (Bernoulli NLL), found by
    bisection; T > 1 softens an overconfident detector;
  - platt: sigmoid(a * logit(s) + b); scikit-learn's LogisticRegression on the one feature
    logit(s), unpenalised (plain maximum likelihood: no label smoothing, no regularisation);
  - isotonic: scikit-learn's IsotonicRegression on s (non-decreasing, in [0, 1]); the map is the
    piecewise-linear interpolation of its breakpoints, numpy.interp(s, score_breakpoints,
    calibrated_breakpoints), constant beyond the first and last breakpoint.
EVAL_CALIBRATION_SCOPE=per_class fits one map per class on its own detections; a class with fewer
than EVAL_CALIBRATION_MIN_DETECTIONS detections, or only TPs or only FPs, uses the global map,
flagged (`fallback_reason`). `apply_calibration` applies an exported map (calibration.json).

Honest ECE: every map is cross-fitted over image folds. Each detection's `ece_after` score comes
from a map fitted on the other folds (its class's, or the fold's global map where the class falls
back or its other folds cannot be fitted), so no detection is scored by a map that saw it. The
reported maps (the ones to deploy) are refitted on all images. Temperature scaling and Platt
scaling with a > 0 are strictly increasing, so they never change which detections a threshold
keeps: a threshold t maps to map(t). Isotonic maps are non-decreasing with flat steps, so
`calibrated >= map(t)` may keep more detections than `raw >= t`: thresholds are applied to raw
scores, their calibrated value is for reading.

ECE uses N_BINS equal-width confidence bins on [0, 1] (the last bin closed): the count-weighted
mean of |accuracy - mean confidence| over non-empty bins.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

N_BINS = 15
SCORE_EPS = 1e-6
# 1/T is searched in [1/MAX_T, 1/MIN_T]; a fit at a bound means the scores carry (almost) no signal.
MIN_T, MAX_T = 1e-3, 1e3
BINNING = f"{N_BINS} equal-width bins on [0, 1]: [k/{N_BINS}, (k+1)/{N_BINS}), the last one closed"
METHODS = ("temperature", "platt", "isotonic")
# The NLL of calibrated probabilities clips them to [NLL_EPS, 1 - NLL_EPS]: an isotonic map can reach 0 or 1.
NLL_EPS = 1e-15
FORMULAS = {
    "temperature": "sigmoid(logit(s) / temperature)",
    "platt": "sigmoid(a * logit(s) + b)",
    "isotonic": "numpy.interp(s, score_breakpoints, calibrated_breakpoints): linear between breakpoints, "
                "constant beyond the ends",
}


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

    The NLL is convex in a = 1/T and its derivative g(a) = sum((sigmoid(a z) - y) z) increases
    with a, so the root is bracketed in [1/MAX_T, 1/MIN_T]. Newton steps (g' = sum(p (1 - p) z^2))
    from a = 1 converge in a handful of passes over the detections; a step that leaves the bracket
    is replaced by the bracket's geometric midpoint (bisection on log a), so it always converges.
    """
    labels = labels.astype(np.float64)
    if logits.size == 0 or labels.min() == labels.max():
        return None

    def slope(a: float) -> tuple[float, float]:
        p = sigmoid(a * logits)
        return float(np.dot(p - labels, logits)), float(np.dot(p * (1.0 - p), logits * logits))

    lo, hi = 1 / MAX_T, 1 / MIN_T
    if slope(lo)[0] >= 0:
        return MAX_T
    if slope(hi)[0] <= 0:
        return MIN_T
    a = 1.0
    for _ in range(200):  # Newton needs ~10; bisection alone shrinks log(hi / lo) 2^200-fold
        g, h = slope(a)
        if g == 0:
            break
        if g < 0:
            lo = a
        else:
            hi = a
        newton = a - g / h if h > 0 else -1.0
        if abs(newton - a) <= 1e-13 * a:  # converged (checked first: the step may land on the bracket's end)
            a = newton
            break
        a = newton if lo <= newton <= hi else float(np.sqrt(lo * hi))
    return float(1.0 / a)


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


def _bins(confidence: np.ndarray, labels: np.ndarray):
    from jobs.evaluate.report import ReliabilityBin

    count, conf, acc = reliability_bins(confidence, labels)
    return [
        ReliabilityBin(lower=k / N_BINS, upper=(k + 1) / N_BINS, count=int(count[k]),
                       confidence=None if count[k] == 0 else float(conf[k]),
                       accuracy=None if count[k] == 0 else float(acc[k]))
        for k in range(N_BINS)
    ]




@dataclass(frozen=True)
class ScoreMap:
    """A fitted calibration map: raw score -> probability (see the module docstring)."""

    method: str
    temperature: float | None = None
    a: float | None = None
    b: float | None = None
    score_breakpoints: tuple[float, ...] | None = None
    calibrated_breakpoints: tuple[float, ...] | None = None

    def parameters(self) -> dict:
        """The map's method and fitted parameters (None where another method's)."""
        return {"method": self.method, "temperature": self.temperature, "a": self.a, "b": self.b,
                "score_breakpoints": None if self.score_breakpoints is None else list(self.score_breakpoints),
                "calibrated_breakpoints": None if self.calibrated_breakpoints is None else list(self.calibrated_breakpoints)}

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return apply_calibration(self.parameters(), scores)


def apply_calibration(parameters: dict, scores) -> np.ndarray:
    """Calibrated probabilities of raw `scores` (in [0, 1]) under one exported map: a `global` or
    `classes` entry of calibration.json, or its `parameters()`. Self-contained, for serving code."""
    method = parameters["method"]
    if method == "temperature":
        return sigmoid(logit(scores) / parameters["temperature"])
    if method == "platt":
        return sigmoid(parameters["a"] * logit(scores) + parameters["b"])
    if method == "isotonic":
        s = np.clip(np.asarray(scores, dtype=np.float64), SCORE_EPS, 1.0 - SCORE_EPS)
        return np.interp(s, parameters["score_breakpoints"], parameters["calibrated_breakpoints"])
    raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float] | None:
    """(a, b) maximising the likelihood of labels under sigmoid(a * logits + b); None without both labels.

    Separable data has no finite maximum: the fit then stops where lbfgs stops (a steep map).
    """
    from sklearn import config_context
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=bool)
    if logits.size == 0 or labels.all() or not labels.any():
        return None
    # The inputs are finite float64 by construction; per-class scope fits thousands of small models,
    # where scikit-learn's validation would cost more than the fit.
    with warnings.catch_warnings(), config_context(assume_finite=True, skip_parameter_validation=True):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=1000).fit(logits.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Breakpoints (score, calibrated) of the non-decreasing least-squares fit of labels on the clipped
    scores; None without both labels."""
    from sklearn.isotonic import IsotonicRegression

    labels = np.asarray(labels, dtype=np.float64)
    if scores.size == 0 or labels.min() == labels.max():
        return None
    from sklearn import config_context

    s = np.clip(np.asarray(scores, dtype=np.float64), SCORE_EPS, 1.0 - SCORE_EPS)
    with config_context(assume_finite=True, skip_parameter_validation=True):
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, labels)
    return model.X_thresholds_, model.y_thresholds_


def fit_map(method: str, scores: np.ndarray, labels: np.ndarray) -> ScoreMap | None:
    """The `method` map fitted on raw scores against labels; None when both labels are not present."""
    if method == "temperature":
        t = fit_temperature(logit(scores), labels)
        return None if t is None else ScoreMap(method, temperature=t)
    if method == "platt":
        ab = fit_platt(logit(scores), labels)
        return None if ab is None else ScoreMap(method, a=ab[0], b=ab[1])
    if method == "isotonic":
        xy = fit_isotonic(scores, labels)
        return None if xy is None else ScoreMap(method, score_breakpoints=tuple(map(float, xy[0])),
                                                calibrated_breakpoints=tuple(map(float, xy[1])))
    raise ValueError(f"unknown calibration method {method!r}")


def nll_of_probabilities(p: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean Bernoulli NLL of labels under probabilities p (clipped to [NLL_EPS, 1 - NLL_EPS])."""
    if p.size == 0:
        return None
    p = np.clip(p, NLL_EPS, 1.0 - NLL_EPS)
    return float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))


def class_groups(cls: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Indices of each class's detections (ascending), for classes 0..n_classes-1."""
    order = np.argsort(cls, kind="stable")
    bounds = np.searchsorted(cls[order], np.arange(n_classes + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(n_classes)]


def fallback_reason(labels: np.ndarray, min_detections: int) -> str | None:
    """Why a class cannot have its own map (None: it can)."""
    if labels.size < min_detections:
        return "low_support"
    if labels.all() or not labels.any():
        return "one_label"
    return None


def cross_fitted_scores(method: str, scores: np.ndarray, labels: np.ndarray, fold: np.ndarray, folds: int,
                        groups: list[np.ndarray], own: list[bool], fallback: ScoreMap) -> tuple[np.ndarray, list[ScoreMap]]:
    """Every detection's probability under maps fitted without its fold, and each fold's global map.

    `fold`: per-detection fold; `groups`/`own`: the classes' detections and whether each has its own
    map. A fold whose complement cannot be fitted uses `fallback` (the global map on all images);
    a class whose other folds cannot be fitted uses that fold's global map.
    """
    out = np.empty(scores.size)
    fold_maps = []
    for k in range(folds):
        held = fold == k
        if not held.any():
            continue
        pooled = fit_map(method, scores[~held], labels[~held]) or fallback
        fold_maps.append(pooled)
        out[held] = pooled.apply(scores[held])
        for idx, mine in zip(groups, own):
            if not mine:
                continue
            inside = held[idx]
            test, train = idx[inside], idx[~inside]
            if test.size:
                fitted = fit_map(method, scores[train], labels[train]) or pooled
                out[test] = fitted.apply(scores[test])
    return out, fold_maps


def check_probabilities(scores: np.ndarray, method: str) -> None:
    from common.errors import InputDataError

    bad = np.flatnonzero((scores < 0) | (scores > 1))
    if bad.size:
        raise InputDataError(f"EVAL_CALIBRATION={method} needs prediction scores in [0, 1]; "
                             f"{bad.size} are outside, e.g. {scores[bad[0]]!r}")


def calibrate(aligned, matches, classes, summary, *, folds: int, seed: int, method: str = "temperature",
              scope: str = "global", min_detections: int = 50):
    """The `calibration` block, and every detection's cross-fitted calibrated score (NaN if ignored).

    `classes`/`summary` carry the chosen raw thresholds, which are mapped to the calibrated scale
    (each class's threshold by its own map).
    """
    from jobs.evaluate.report import Calibration, ClassCalibration, ClassCalibrationMap
    from jobs.evaluate.split import CALIBRATION_STREAM, rng

    det = aligned.det
    check_probabilities(det.score, method)
    used = ~matches.ignored
    s, y = det.score[used], matches.tp[used]
    z = logit(s)
    raw = sigmoid(z)  # the clipped raw score, so both ECEs see the same inputs
    groups = class_groups(det.cls[used], len(classes))
    global_map = fit_map(method, s, y)
    fitted = global_map is not None
    reasons = [fallback_reason(y[idx], min_detections) if scope == "per_class" else None for idx in groups]
    own = [fitted and scope == "per_class" and r is None for r in reasons]
    maps = [fit_map(method, s[idx], y[idx]) if mine else global_map for idx, mine in zip(groups, own)]
    fold = fold_of_images(aligned.n_images, folds, rng(seed, CALIBRATION_STREAM))[det.image[used]]
    out = np.full(det.score.size, np.nan)
    fold_maps = []
    calibrated = raw
    if fitted:
        calibrated, fold_maps = cross_fitted_scores(method, s, y, fold, folds, groups, own, global_map)
        out[used] = calibrated

    def to_calibrated(t, score_map):
        return None if t is None or score_map is None else float(score_map.apply(np.array([t]))[0])

    per_class, class_maps = [], []
    for c, (result, idx) in enumerate(zip(classes, groups)):
        ece_before = expected_calibration_error(raw[idx], y[idx])
        ece_after = expected_calibration_error(calibrated[idx], y[idx]) if fitted else None
        per_class.append(ClassCalibration(
            name=result.name, n_detections=int(idx.size), threshold=result.threshold,
            calibrated_threshold=to_calibrated(result.threshold, maps[c]), ece_before=ece_before, ece_after=ece_after))
        if fitted:
            class_maps.append(ClassCalibrationMap(
                class_id=result.class_id, name=result.name, **maps[c].parameters(),
                fit="class" if own[c] else "global", fallback=scope == "per_class" and not own[c],
                fallback_reason=reasons[c], n=int(idx.size), n_true_positives=int(y[idx].sum()),
                ece_before=ece_before, ece_after=ece_after))
    target = ("a non-ignored detection is a true positive at the IoU threshold" if aligned.geometry != "image"
              else "the image carries the predicted class (image-level)")
    where = ("one map per class (classes under the minimum support use the global map)" if scope == "per_class"
             else "one map for all classes")
    block = Calibration(
        method=method, scope=scope, min_detections=min_detections, formula=FORMULAS[method], target=target,
        fit="cross_validation",
        fit_description=f"{method}, {where}, cross-fitted over {folds} seeded image folds: ece_after/nll_after score "
        "each detection with maps fitted on the other folds; the reported maps are refitted on all images. "
        "No fold decides a threshold: thresholds are chosen on raw scores.",
        folds=folds, seed=seed, status="ok" if fitted else "not_fitted",
        temperature=global_map.temperature if fitted else None,
        fold_temperatures=[m.temperature for m in fold_maps] if method == "temperature" else [],
        global_map=global_map.parameters() if fitted else None,
        n_detections=int(y.size), n_true_positives=int(y.sum()), score_clip=SCORE_EPS,
        n_bins=N_BINS, binning=BINNING,
        ece_before=expected_calibration_error(raw, y),
        ece_after=expected_calibration_error(calibrated, y) if fitted else None,
        nll_before=nll_loss(z, y) if y.size else None,
        nll_after=nll_of_probabilities(calibrated, y) if fitted else None,
        reliability_before=_bins(raw, y),
        reliability_after=_bins(calibrated, y) if fitted else [],
        global_threshold=to_calibrated(summary.global_threshold, global_map),
        thresholds={r.name: to_calibrated(r.threshold, m) for r, m in zip(classes, maps)
                    if r.threshold is not None and fitted},
        classes=per_class,
        per_class=class_maps,
    )
    return block, (out if fitted else None)


def calibration_document(report: dict) -> dict:
    """calibration.json from a report (thresholds.json as a dict): the fitted maps, for a serving
    system (apply an entry with `apply_calibration`)."""
    c = report["calibration"]
    params = ("method", "temperature", "a", "b", "score_breakpoints", "calibrated_breakpoints")
    return {
        "kind": "ml-batch-jobs/evaluate/calibration",
        "run_id": report["run"]["id"],
        "method": c["method"],
        "scope": c["scope"],
        "input": f"the detector's raw score s in [0, 1], clipped to [{SCORE_EPS:g}, 1 - {SCORE_EPS:g}]; "
                 "logit(s) = log(s / (1 - s))",
        "output": c["target"],
        "formula": FORMULAS[c["method"]],
        "global": c["global_map"],
        "classes": {m["name"]: {"class_id": m["class_id"], **{k: m[k] for k in params},
                                "fit": m["fit"], "fallback": m["fallback"], "fallback_reason": m["fallback_reason"]}
                    for m in c["per_class"]},
        "thresholds": {"raw": report["summary"]["thresholds"], "calibrated": c["thresholds"]},
    }
