"""The page's embedded curves, decoded here independently of the page's script: counts exact at
every point kept, scores bit-for-bit, and the subsample of very large classes keeps the chosen point."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from jobs.evaluate import page
from jobs.evaluate.sweep import sweep_thresholds


def leb128(data: bytes) -> list[int]:
    out, value, weight = [], 0, 1
    for byte in data:
        value += (byte & 0x7F) * weight
        if byte & 0x80:
            weight *= 128
        else:
            out.append(value)
            value, weight = 0, 1
    return out


def decode(curve: dict, encoding: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, tp, fp, t, f, j = leb128(base64.b64decode(curve["c"])), [], [], 0, 0, 0
    while j < len(codes):
        x = codes[j]
        j += 1
        if x == 0:
            t += 1
        elif x == 1:
            f += 1
        else:
            t, f, j = t + x - 2, f + codes[j], j + 1
        tp.append(t)
        fp.append(f)
    raw = base64.b64decode(curve["s"])
    if encoding["kind"] == "f64":
        scores = np.frombuffer(raw, "<f8")
    else:
        keys = curve["k0"] - np.r_[0, np.cumsum(leb128(raw))]
        if encoding["kind"] == "dec":
            scores = keys / 10.0 ** encoding["digits"]
        else:
            bits = np.where(keys >= 1 << 31, keys - (1 << 31), 0xFFFFFFFF - keys).astype(np.uint32)
            scores = bits.view(np.float32).astype(np.float64)
    return scores, np.array(tp), np.array(fp)


def random_sweep(rng, n, kind):
    scores = {"dec": np.round(rng.random(n), 3), "f32": rng.random(n).astype(np.float32).astype(np.float64),
              "f64": rng.normal(0, 3, n)}[kind]
    scores = -np.sort(-scores)
    tp = rng.random(n) < 0.4
    return sweep_thresholds(scores, tp, int(tp.sum()) + 3)


def test_varint_round_trip_at_the_byte_boundaries():
    values = np.array([0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**35 + 5, 2**53 - 1, 2**62])
    data, sizes = page.varint(values)
    assert leb128(data.tobytes()) == values.tolist()
    assert sizes.tolist() == [1, 1, 1, 2, 2, 3, 3, 4, 6, 8, 9]


@pytest.mark.parametrize("kind", ["dec", "f32", "f64"])
def test_curves_decode_exactly(kind):
    rng = np.random.default_rng(3)
    sweeps = [random_sweep(rng, n, kind) for n in (1, 2, 500, 3000)] + [None]
    encoding = page.score_encoding(np.concatenate([s.thresholds for s in sweeps if s is not None]))
    assert encoding["kind"] == kind
    encoded = page.encode_sweeps(sweeps, [0, None, 7, 100, None], encoding)
    assert encoded[-1] is None
    for sweep, curve in zip(sweeps[:-1], encoded):
        scores, tp, fp = decode(curve, encoding)
        assert np.array_equal(scores, sweep.thresholds)  # bit for bit: a typed score selects its own point
        assert np.array_equal(tp, sweep.tp) and np.array_equal(fp, sweep.fp)
        assert curve["n"] == curve["distinct"] == sweep.thresholds.size


def test_dec_needs_every_score_exact():
    assert page.score_encoding(np.array([0.5, 0.25, 0.125]))["kind"] == "dec"
    assert page.score_encoding(np.array([0.123, 0.1234567891]))["kind"] != "dec"
    assert page.score_encoding(np.array([0.1, float(np.float32(0.3))]))["kind"] == "f64"


def test_large_classes_keep_a_subsample_with_the_chosen_point():
    rng = np.random.default_rng(4)
    sweep = random_sweep(rng, 5000, "f32")
    chosen = 1234
    curve = page.encode_sweep(sweep, {"kind": "f32"}, chosen, max_points=100)
    keep = page.kept_points(5000, chosen, 100)
    assert curve["n"] == keep.size <= 101 and curve["distinct"] == 5000
    assert {0, 4999, chosen} <= set(keep.tolist())
    scores, tp, fp = decode(curve, {"kind": "f32"})
    assert np.array_equal(scores, sweep.thresholds[keep])
    assert np.array_equal(tp, sweep.tp[keep]) and np.array_equal(fp, sweep.fp[keep])


def test_all_class_sweeps_at_once_equal_one_sweep_per_class():
    from jobs.evaluate.plots import _class_sweeps

    rng = np.random.default_rng(5)
    cls = np.sort(rng.integers(0, 30, 5000))
    cls[cls == 7] = 8  # a class without detections
    score = np.round(rng.random(cls.size), 2)  # ties within and across classes
    order = np.lexsort((-score, cls))
    cls, score, tp = cls[order], score[order], rng.random(cls.size) < 0.3
    n_gt = np.bincount(cls, minlength=31) + 1
    n_gt[3] = 0  # detections but no ground truth
    got = _class_sweeps(cls, score, tp, n_gt)
    for c in range(31):
        mine = cls == c
        if not (n_gt[c] and mine.any()):
            assert got[c] is None
            continue
        want = sweep_thresholds(score[mine], tp[mine], int(n_gt[c]))
        for name in ("thresholds", "tp", "fp"):
            assert np.array_equal(getattr(got[c], name), getattr(want, name))
        assert got[c].n_ground_truth == want.n_ground_truth


def test_reliability_bins_of_all_classes_at_once_equal_each_class_alone():
    from jobs.evaluate.calibration import reliability_bins
    from jobs.evaluate.plots import ClassCurves

    rng = np.random.default_rng(6)
    curves = []
    for n in (40, 0, 300, 7):
        s = rng.random(n)
        s[:2] = [0.0, 1.0][: min(n, 2)]  # both ends of [0, 1]
        curves.append(ClassCurves(None, None, s, rng.random(n), rng.random(n) < s))
    per_class, pooled = page.class_bins(curves, [cc.scores.size > 0 for cc in curves], calibrated=True)
    assert per_class[1] is None
    for cc, bins in zip(curves, per_class):
        if bins is None:
            continue
        for key, values in (("before", cc.scores), ("after", cc.calibrated)):
            count, conf, acc = reliability_bins(values, cc.labels)
            assert [b[0] for b in bins[key]] == count.tolist()
            filled = count > 0
            assert np.allclose([b[1] for b in bins[key] if b[0]], conf[filled], atol=5e-5)
            assert np.allclose([b[2] for b in bins[key] if b[0]], acc[filled], atol=5e-5)
    count, _, acc = reliability_bins(np.concatenate([c.scores for c in curves]), np.concatenate([c.labels for c in curves]))
    assert [b[0] for b in pooled["before"]] == count.tolist()
    assert np.allclose([b[2] for b in pooled["before"] if b[0]], acc[count > 0], atol=5e-5)
