"""Image subsets of one evaluation: the seeded holdout split and bootstrap resamples.

Matching is per (image, class), so the matches of a subset of images are exactly the subset of
the matches: nothing is matched again. Every random draw takes its generator from `rng(seed,
stream)`, one stream per use, so changing e.g. the bootstrap size never moves the holdout split.
"""

from __future__ import annotations

import numpy as np

from jobs.evaluate.align import Aligned, Objects
from jobs.evaluate.match import Matches

# One random stream per use of EVAL_SEED.
HOLDOUT_STREAM, BOOTSTRAP_STREAM, CALIBRATION_STREAM = 0, 1, 2


def rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def holdout_mask(n_images: int, *, fraction: float, seed: int) -> np.ndarray:
    """(n_images,) bool, True for the held-out (evaluation) images: round(fraction * n) of them.

    At least one image lands on each side when there are two or more. The split depends on the
    seed and on the set of annotated images in evaluation order (COCO id, else normalised name).
    """
    mask = np.zeros(n_images, dtype=bool)
    if fraction <= 0 or n_images == 0:
        return mask
    n_eval = int(round(fraction * n_images))
    if n_images >= 2:
        n_eval = min(max(n_eval, 1), n_images - 1)
    mask[rng(seed, HOLDOUT_STREAM).permutation(n_images)[:n_eval]] = True
    return mask


def _rows_of_images(image: np.ndarray, n_images: int, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the given images (repeats allowed, in that order) and each row's new image."""
    order = np.argsort(image, kind="stable")
    counts = np.bincount(image, minlength=n_images)
    starts = np.cumsum(counts) - counts
    per = counts[images]
    new_image = np.repeat(np.arange(images.size), per)
    offsets = np.arange(new_image.size) - np.repeat(np.cumsum(per) - per, per)
    return order[np.repeat(starts[images], per) + offsets], new_image


def _thin(objects: Objects, rows: np.ndarray, new_image: np.ndarray) -> Objects:
    # Geometry is not carried: after matching, only image, class, crowd and score are used.
    return Objects(image=new_image, cls=objects.cls[rows], boxes=None, polygons=None, crowd=objects.crowd[rows],
                   score=None if objects.score is None else objects.score[rows])


def take_images(aligned: Aligned, matches: Matches, images: np.ndarray) -> tuple[Aligned, Matches]:
    """The evaluation restricted to `images` (int indices; repeats allowed, each copy a new image).

    Image j of the result is `images[j]`; the rows of one image keep their input order.
    """
    images = np.asarray(images, dtype=np.int64)
    d_rows, d_image = _rows_of_images(aligned.det.image, aligned.n_images, images)
    g_rows, g_image = _rows_of_images(aligned.gt.image, aligned.n_images, images)
    sub = Aligned(aligned.classes, int(images.size), _thin(aligned.gt, g_rows, g_image),
                  _thin(aligned.det, d_rows, d_image), aligned.geometry, aligned.alignment)
    return sub, Matches(tp=matches.tp[d_rows], ignored=matches.ignored[d_rows])
