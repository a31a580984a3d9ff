"""`index.html`: the report as one interactive, self-contained page.

Everything is inline (CSS, one script, SVG drawn by the script): no CDN, no network request, so the
page works from `file://` and from a bucket. The report's numbers and, per class, the sweep's
cumulative counts at the distinct scores travel in a `<script type="application/json">` block; the
script draws the table (sort, filter, pages), the PR and P/R/F1-vs-threshold curves, the threshold
slider, the reliability diagrams, the AP overview and the history panel from them.

Curve encoding (compact, lossless at every point kept; see `encode_sweep`):
  - counts: per point the increase of TP and FP over the previous point, as LEB128 varints
    (one byte for the common single-detection step: 0 = one TP, 1 = one FP, else 2 + dTP, dFP);
  - scores, one encoding for the whole page, picked as the first that is exact for every score:
    'dec' (k decimals: the integers round(s * 10^k), whose quotient by 10^k is the same double in
    Python and JavaScript), 'f32' (float32 values: order-preserving keys of their bits) or 'f64'
    (the raw doubles). Decreasing scores give positive deltas, varint-coded.
A class with more than MAX_POINTS distinct scores keeps MAX_POINTS of them at evenly spaced ranks,
plus the first, the last and the chosen threshold; counts are exact at every point kept, and the
page says so for that class.
"""

from __future__ import annotations

import base64
import json
from html import escape
from importlib import resources

import numpy as np

from jobs.evaluate.calibration import N_BINS

MAX_POINTS = 20_000  # distinct scores kept per class curve; above it, a documented subsample
HISTORY_COLUMNS = ("run_id", "finished_at", "class_id", "name", "status", "threshold", "precision", "recall", "f1",
                   "average_precision", "n_ground_truth")
_ASSETS = resources.files("jobs.evaluate") / "page_assets"


def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


# -- curve encoding --------------------------------------------------------------------------------


def varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LEB128 (7 bits a byte, low first, high bit = more follows) of non-negative integers < 2^63:
    the bytes (uint8) and each value's byte count."""
    v = np.asarray(values, dtype=np.int64)
    sizes = 1 + np.searchsorted(_VARINT_LIMITS, v, side="left")  # how many limits 2^7k - 1 lie below v
    longest = int(sizes.max()) if v.size else 1
    if longest == 1:
        return v.astype(np.uint8), sizes
    start = np.cumsum(sizes) - sizes
    out = np.empty(int(start[-1] + sizes[-1]), np.uint8)
    out[start] = (v & 0x7F) | ((sizes > 1) << 7)
    for k in range(1, longest):  # byte k of the values that have one (few, past the second)
        idx = np.flatnonzero(sizes > k)
        out[start[idx] + k] = ((v[idx] >> (7 * k)) & 0x7F) | ((sizes[idx] > k + 1) << 7)
    return out, sizes


_VARINT_LIMITS = np.array([(1 << (7 * k)) - 1 for k in range(1, 9)], dtype=np.int64)


def varint_bytes(values: np.ndarray) -> bytes:
    return varint(values)[0].tobytes()


def _b64(data) -> str:
    return base64.b64encode(data).decode("ascii")


def count_stream(dtp: np.ndarray, dfp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint values for per-point TP and FP increases, and how many values each point takes."""
    single = dtp + dfp == 1
    first = np.where(single, dfp, 2 + dtp)  # (1, 0) -> 0, (0, 1) -> 1
    width = 1 + ~single
    start = np.cumsum(width) - width
    out = np.empty(int(width.sum()), np.int64)
    out[start] = first
    out[start[~single] + 1] = dfp[~single]
    return out, width


def score_encoding(scores: np.ndarray) -> dict:
    """The first exact encoding for every score of the page: {'kind': 'dec', 'digits': k}, 'f32' or 'f64'."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0 or not np.isfinite(s).all():
        return {"kind": "f64"}
    probe = s[:: max(1, s.size // 2000)]  # most inputs fail on a small sample; the full check confirms
    for k in range(10):
        scale = 10.0 ** k
        if np.abs(probe).max() * scale >= 2.0 ** 52:
            break
        if (np.rint(probe * scale) / scale == probe).all():
            n = np.rint(s * scale)
            if np.abs(s).max() * scale < 2.0 ** 52 and (n / scale == s).all():
                return {"kind": "dec", "digits": k}
    if (s.astype(np.float32).astype(np.float64) == s).all():
        return {"kind": "f32"}
    return {"kind": "f64"}


def _score_keys(scores: np.ndarray, encoding: dict) -> np.ndarray:
    """Integers that decrease with the (decreasing) scores: their deltas are what is stored."""
    if encoding["kind"] == "dec":
        return np.rint(scores * 10.0 ** encoding["digits"]).astype(np.int64)
    bits = scores.astype(np.float32).view(np.uint32).astype(np.int64)
    return np.where(bits >= 1 << 31, 0xFFFFFFFF - bits, bits + (1 << 31))  # order-preserving, sign included


def kept_points(n: int, chosen: int | None, max_points: int | None = None) -> np.ndarray:
    """Indices of the points a curve keeps: all, or max_points at evenly spaced ranks plus the chosen one."""
    max_points = MAX_POINTS if max_points is None else max_points
    if n <= max_points:
        return np.arange(n)
    keep = np.rint(np.linspace(0, n - 1, max_points)).astype(np.int64)
    return np.unique(np.r_[keep, [] if chosen is None else [chosen]].astype(np.int64))


def _split(data: np.ndarray, nbytes: np.ndarray, counts: np.ndarray) -> list[str]:
    """Base64 of each group's bytes: `counts` values per group, `nbytes` bytes per value."""
    ends = np.r_[0, np.cumsum(nbytes)][np.r_[0, np.cumsum(counts)]]
    raw = data.tobytes()
    return [_b64(raw[a:b]) for a, b in zip(ends[:-1].tolist(), ends[1:].tolist())]


def encode_sweeps(sweeps: list, chosen: list, encoding: dict, max_points: int | None = None) -> list[dict | None]:
    """Each class's curve for the page (None where no sweep): n points in descending score with
    exact counts at each. All classes are encoded in one pass over their concatenated points."""
    present = [i for i, sw in enumerate(sweeps) if sw is not None]
    out: list[dict | None] = [None] * len(sweeps)
    if not present:
        return out
    keeps = [kept_points(sweeps[i].thresholds.size, chosen[i], max_points) for i in present]
    sizes = np.array([k.size for k in keeps])
    starts = np.cumsum(sizes) - sizes
    scores = np.concatenate([sweeps[i].thresholds[k] for i, k in zip(present, keeps)])
    tp = np.concatenate([sweeps[i].tp[k] for i, k in zip(present, keeps)])
    fp = np.concatenate([sweeps[i].fp[k] for i, k in zip(present, keeps)])
    dtp, dfp = np.diff(tp, prepend=0), np.diff(fp, prepend=0)
    dtp[starts], dfp[starts] = tp[starts], fp[starts]  # each class starts from zero
    values, width = count_stream(dtp, dfp)
    cbytes, cnb = varint(values)
    counts = _split(cbytes, cnb, np.add.reduceat(width, starts))
    if encoding["kind"] == "f64":
        s_text = _split(scores.astype("<f8").view(np.uint8), np.full(scores.size, 8), sizes)
        firsts = [None] * len(present)
    else:
        keys = _score_keys(scores, encoding)
        later = np.ones(scores.size, bool)
        later[starts] = False
        sbytes, snb = varint((keys[:-1] - keys[1:])[later[1:]])
        s_text = _split(sbytes, snb, sizes - 1)
        firsts = keys[starts].tolist()
    for j, i in enumerate(present):
        sw = sweeps[i]
        out[i] = {"n": int(sizes[j]), "distinct": int(sw.thresholds.size), "gt": int(sw.n_ground_truth),
                  "c": counts[j], "s": s_text[j]}
        if firsts[j] is not None:
            out[i]["k0"] = firsts[j]
    return out


def encode_sweep(sweep, encoding: dict, chosen: int | None, max_points: int | None = None) -> dict:
    return encode_sweeps([sweep], [chosen], encoding, max_points)[0]


def _at(sweep, threshold: float | None) -> int | None:
    """Index of the point a threshold selects (the last score >= it), or None."""
    if threshold is None or sweep is None:
        return None
    kept = int(np.searchsorted(-sweep.thresholds, -threshold, side="right"))
    return kept - 1 if kept else None


# -- the data block --------------------------------------------------------------------------------


def _r(x, digits=6):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), digits)


def _bin_rows(count, conf, acc) -> list:
    conf, acc = np.round(conf, 4).tolist(), np.round(acc, 4).tolist()
    return [[n, c, a] if n else [0, None, None] for n, c, a in zip(count.tolist(), conf, acc)]


def class_bins(curves, use: list[bool], calibrated: bool) -> tuple[list[dict | None], dict | None]:
    """Per class {'before': bins, 'after': bins} of raw and calibrated scores, all classes in one
    pass, and the same for all of them pooled."""
    sizes = np.array([cc.scores.size if ok else 0 for cc, ok in zip(curves, use)])
    if not sizes.sum():
        return [None] * len(curves), None
    cls = np.repeat(np.arange(len(curves)), sizes)
    labels = np.concatenate([cc.labels for cc, ok in zip(curves, use) if ok]).astype(np.float64)
    out, pooled = {}, {}
    for key, attr in (("before", "scores"), ("after", "calibrated")):
        if key == "after" and not calibrated:
            continue
        conf = np.concatenate([getattr(cc, attr) for cc, ok in zip(curves, use) if ok])
        idx = cls * N_BINS + np.minimum((conf * N_BINS).astype(np.int64), N_BINS - 1)
        size = len(curves) * N_BINS
        count = np.bincount(idx, minlength=size).reshape(-1, N_BINS)
        total = np.bincount(idx, weights=conf, minlength=size).reshape(-1, N_BINS)
        hits = np.bincount(idx, weights=labels, minlength=size).reshape(-1, N_BINS)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[key] = (count, total / count, hits / count)
            n = count.sum(0)
            pooled[key] = _bin_rows(n, total.sum(0) / n, hits.sum(0) / n)
    rows = {k: _bin_rows(*(a.reshape(-1) for a in v)) for k, v in out.items()}  # one conversion for all classes
    per_class = [{k: r[c * N_BINS:(c + 1) * N_BINS] for k, r in rows.items()} if sizes[c] else None
                 for c in range(len(curves))]
    return per_class, pooled


def _report_bins(bins) -> list:
    return [[b.count, _r(b.confidence, 4), _r(b.accuracy, 4)] for b in bins]


def _json_safe(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        clean = {}
        for k in HISTORY_COLUMNS:
            v = row.get(k)
            if hasattr(v, "isoformat"):
                v = v.isoformat()
            elif isinstance(v, (np.generic,)):
                v = v.item()
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            clean[k] = v
        out.append(clean)
    return out


def page_data(report, curves, history: list[dict] | None = None) -> dict:
    """Everything the script draws, JSON-ready. `curves`: plots.class_curves (one per class) or None."""
    cal = {c.name: c for c in report.calibration.classes} if report.calibration else {}
    boot = {c.name: c for c in report.bootstrap.classes} if report.bootstrap else {}
    drifted = {c.class_: c for c in report.drift.changed} if report.drift else {}
    curves = curves or [None] * len(report.classes)
    table_sweeps = [None if cc is None else (cc.evaluation if report.holdout else cc.selection) for cc in curves]
    side_sweeps = [None if cc is None or not report.holdout else cc.selection for cc in curves]
    every = [s.thresholds for s in table_sweeps + side_sweeps if s is not None]
    encoding = score_encoding(np.concatenate(every) if every else np.zeros(0))
    probabilities = all(cc is None or cc.scores.size == 0 or (cc.scores.min() >= 0 and cc.scores.max() <= 1)
                        for cc in curves)
    chosen = [_at(sw, r.threshold) for sw, r in zip(table_sweeps, report.classes)]
    encoded = encode_sweeps(table_sweeps, chosen, encoding)
    encoded_side = encode_sweeps(side_sweeps, [_at(sw, r.threshold) for sw, r in zip(side_sweeps, report.classes)], encoding)
    use = [cc is not None and probabilities and cc.scores.size > 0 for cc in curves]
    bins, pooled = class_bins(curves, use, all(cc.calibrated is not None for cc, ok in zip(curves, use) if ok))
    classes = []
    for c, (result, cc) in enumerate(zip(report.classes, curves)):
        row = {"i": c, "id": result.class_id, "name": result.name, "status": result.status, "gt": result.n_ground_truth,
               "pred": result.n_predictions, "ap": result.average_precision, "thr": result.threshold,
               "p": result.precision, "r": result.recall, "f1": result.f1, "tp": result.tp, "fp": result.fp,
               "fn": result.fn}
        if result.average_precision_iou_mean is not None:
            row["ap_ious"] = result.average_precision_iou_mean
        if result.name in cal:
            row["cal_thr"] = cal[result.name].calibrated_threshold
        if result.name in boot:
            b = boot[result.name]
            row["ci"] = {k: [_r(iv.low), _r(iv.high)] for k, iv in
                         (("ap", b.average_precision), ("f1", b.f1), ("thr", b.threshold))}
        if result.name in drifted:
            d = drifted[result.name]
            row["drift"] = {"reasons": list(d.reasons), "delta": d.delta, "baseline_thr": d.baseline_threshold,
                            "baseline_f1": d.baseline_f1}
        if encoded[c] is not None:
            row["curve"] = encoded[c]
        if encoded_side[c] is not None:
            row["selection"] = encoded_side[c]
        if use[c] and bins[c] is not None:
            row["rel"] = bins[c]
        classes.append(row)
    reliability = None
    if report.calibration:
        reliability = {"before": _report_bins(report.calibration.reliability_before),
                       "after": _report_bins(report.calibration.reliability_after)}
    elif pooled:
        reliability = {"before": pooled["before"]}
    return {
        "run": report.run.id, "policy": report.matching.policy, "encoding": encoding, "max_points": MAX_POINTS,
        "n_bins": N_BINS, "holdout": report.holdout is not None, "calibrated": report.calibration is not None,
        "drift": report.drift is not None, "bootstrap": report.bootstrap is not None,
        "ap_ious": report.summary.mean_average_precision_iou_mean is not None,
        "classes": classes, "reliability": reliability,
        "history": _json_safe(history) if history else [],
    }


# -- the static parts ------------------------------------------------------------------------------


def _f(value, spec=".3f") -> str:
    return "&ndash;" if value is None else escape(format(value, spec))


def _kv(pairs) -> str:
    return '<table class="kv">' + "".join(f"<tr><th scope='row'>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _header(report, report_name: str) -> str:
    s, m, r = report.summary, report.matching, report.run
    nms = f"NMS IoU &gt; {report.nms.iou_threshold}" if report.nms else "no NMS"
    inputs = "; ".join(f"{escape(side)}: <code>{escape(i.uri)}</code> ({escape(i.format)}, {i.rows:,} rows"
                       f"{', sha256 ' + escape(i.sha256[:12]) if i.sha256 else ''}{', ETag ' + escape(i.etag) if i.etag else ''})"
                       for side, i in report.inputs.items())
    pairs = [("run", f"{escape(r.id)} &middot; finished {escape(r.finished_at)} &middot; code {escape(r.code_version)}"),
             ("inputs", inputs),
             ("matching", f"{escape(m.geometry)}{' (' + escape(m.reason) + ')' if m.reason else ''}, IoU {m.iou_threshold}, "
                          f"policy <code>{escape(m.policy)}</code>, {nms}"),
             ("alignment", f"{report.alignment.matched_images:,} of {report.alignment.annotation_images:,} annotated images "
                           f"have predictions ({escape(report.alignment.join)} join)"),
             ("report", f'<a href="{escape(report_name)}">{escape(report_name)}</a>')]
    coco = ""
    if s.mean_average_precision_iou_mean is not None:
        ious = ", ".join(f"{escape(k)}: {v:.3f}" for k, v in (s.mean_average_precision_by_iou or {}).items())
        coco = (f' &middot; COCO mAP over IoUs <b id="map-ious">{_f(s.mean_average_precision_iou_mean)}</b>'
                f' <span class="muted">({ious})</span>')
    headline = (f'<p class="headline">mAP <b id="map">{_f(s.mean_average_precision)}</b> &middot; macro F1 '
                f'<b id="macro-f1">{_f(s.macro_f1)}</b> &middot; global threshold {_f(s.global_threshold, ".4f")}{coco}</p>')
    return (f"<header><h1>Detection thresholds &mdash; run {escape(r.id)}</h1>{headline}{_kv(pairs)}"
            f"{_coco_table(report)}</header>")


def _coco_table(report) -> str:
    """COCO's standard summary (the 12 numbers pycocotools' summarize() prints), when the report has one."""
    if report.coco is None:
        return ""
    stats = report.coco.stats.model_dump()
    head = "".join(f"<th scope='col'>{escape(k)}</th>" for k in stats)
    cells = "".join(f"<td>{_f(v)}</td>" for v in stats.values())
    return (f'<h2>COCO summary ({escape(report.coco.iou_type)})</h2><table id="coco-summary"><tr>{head}</tr>'
            f'<tr>{cells}</tr></table><p class="muted">{escape(report.coco.parameters)}; thresholds come from the '
            "single-IoU evaluation.</p>")


def _sections(report) -> list[str]:
    out = []
    if report.holdout:
        h = report.holdout
        out.append("<section><h2>Holdout</h2>" + _kv([
            ("split", escape(f"{h.selection_images} selection images chose the thresholds; the table is measured on "
                             f"{h.evaluation_images} held-out images (fraction {h.fraction}, seed {h.seed})")),
            ("macro F1 in-sample (selection)", _f(h.selection_summary.macro_f1)),
            ("macro F1 held-out", _f(report.summary.macro_f1)),
        ]) + "</section>")
    if report.calibration:
        c = report.calibration
        rows = [("method", escape(c.method)), ("fit", escape(c.fit_description))]
        if c.temperature is not None:
            rows.append(("temperature", _f(c.temperature, ".4f")))
        rows += [("ECE before / after", f"{_f(c.ece_before, '.4f')} / {_f(c.ece_after, '.4f')}"),
                 ("NLL before / after", f"{_f(c.nll_before, '.4f')} / {_f(c.nll_after, '.4f')}"),
                 ("binning", escape(c.binning)), ("target", escape(c.target))]
        out.append("<section><h2>Calibration</h2>" + _kv(rows) + "</section>")
    if report.bootstrap:
        b = report.bootstrap
        out.append("<section><h2>Bootstrap</h2>" + _kv([
            ("replicates / seed", f"{b.replicates} / {b.seed}"), ("resampling", escape(b.resampling)),
            ("interval", f"{b.confidence:.0%} {escape(b.method)}"),
            ("mAP", f"[{_f(b.mean_average_precision.low)}, {_f(b.mean_average_precision.high)}]"),
            ("macro F1", f"[{_f(b.macro_f1.low)}, {_f(b.macro_f1.high)}]"),
        ]) + "</section>")
    if report.drift:
        d = report.drift
        notes = "".join(f"<li>{escape(x)}</li>" for x in d.config_differences)
        result = (f'<span class="badge {"drifted" if d.drifted else "ok"}">{"&#9650; drift" if d.drifted else "no drift"}</span> '
                  f"{len(d.changed)} of {d.compared_classes} classes changed (marked in the table)")
        out.append("<section><h2>Drift</h2>" + _kv([
            ("baseline", escape(d.baseline or "none yet")), ("baseline run", escape(d.baseline_run_id or "")),
            ("tolerance", escape(f"|delta| > {d.threshold_tolerance}, or F1 fell by > {d.f1_tolerance}")),
            ("result", result),
        ]) + (f"<p>Settings differ from the baseline's:</p><ul>{notes}</ul>" if notes else "") + "</section>")
    return out


def _png_cards(report, plots: dict[int, dict[str, str]], pooled: str | None) -> str:
    cards = []
    if pooled:
        cards.append(f'<div class="card"><h3>all classes</h3><img src="{escape(pooled)}" alt="reliability diagram, all classes"></div>')
    for i, c in enumerate(report.classes):
        imgs = "".join(f'<img src="{escape(path)}" alt="{escape(c.name)} {escape(kind)}">' for kind, path in plots.get(i, {}).items())
        if imgs:
            cards.append(f'<div class="card" id="png-{i}"><h3>{escape(c.name)}</h3>{imgs}</div>')
    if not cards:
        return ""
    return ('<section><details><summary><h2>PNG plots (EVAL_PLOTS)</h2></summary><div class="cards">'
            + "".join(cards) + "</div></details></section>")


BODY = """
<main>
<section aria-labelledby="classes-h"><h2 id="classes-h">Classes</h2>
<div class="controls" role="search">
 <label>Filter by name <input id="filter" type="search" placeholder="class name" autocomplete="off"></label>
 <label>Status <select id="status-filter"><option value="">all</option></select></label>
 <label><input id="drift-only" type="checkbox"> drifted only</label>
 <label>Rows per page <select id="page-size"><option>25</option><option selected>50</option><option>100</option><option>500</option></select></label>
 <span id="count" aria-live="polite"></span>
</div>
<table id="classes" class="grid"><thead><tr id="classes-head"></tr></thead><tbody id="classes-body"></tbody></table>
<nav class="pager" aria-label="table pages"><button id="prev" type="button">&larr; previous</button>
 <span id="page-info"></span><button id="next" type="button">next &rarr;</button></nav>
<p class="muted" id="table-note"></p>
</section>
<section id="detail" aria-labelledby="detail-h" tabindex="-1"><h2 id="detail-h">Class</h2>
<p id="detail-status"></p>
<div class="explorer">
 <div class="slider-box">
  <label for="thr-slider">Threshold (keep score &ge; t)</label>
  <input id="thr-slider" type="range" min="0" max="0" step="1" value="0">
  <label for="thr-input">typed value</label> <input id="thr-input" type="number" step="any" inputmode="decimal">
  <button id="thr-policy" type="button">back to the policy's threshold</button>
  <p id="thr-note" class="muted" aria-live="polite"></p>
  <table class="readout" aria-live="polite"><tbody>
   <tr><th scope="row">threshold</th><td id="ro-thr"></td></tr><tr><th scope="row">scores kept</th><td id="ro-kept"></td></tr>
   <tr><th scope="row">precision</th><td id="ro-p"></td></tr><tr><th scope="row">recall</th><td id="ro-r"></td></tr>
   <tr><th scope="row">F1</th><td id="ro-f1"></td></tr><tr><th scope="row">TP</th><td id="ro-tp"></td></tr>
   <tr><th scope="row">FP</th><td id="ro-fp"></td></tr><tr><th scope="row">FN</th><td id="ro-fn"></td></tr>
  </tbody></table>
  <p id="policy-note" class="muted"></p>
 </div>
 <figure><svg id="pr-chart" class="chart" role="img" aria-label="precision-recall curve"></svg><figcaption>Precision&ndash;recall</figcaption></figure>
 <figure><svg id="thr-chart" class="chart" role="img" aria-label="precision, recall and F1 against the threshold"></svg><figcaption>P, R, F1 vs threshold</figcaption></figure>
 <figure id="rel-fig"><svg id="rel-chart" class="chart" role="img" aria-label="reliability diagram of the class"></svg><figcaption>Reliability, this class</figcaption></figure>
</div>
<div id="history" hidden><h3>History over runs</h3>
 <figure><svg id="hist-chart" class="chart wide" role="img" aria-label="threshold and F1 of the class over runs"></svg><figcaption>threshold and F1 per run</figcaption></figure>
 <table id="hist-table" class="grid"><thead><tr><th scope="col">run</th><th scope="col">finished</th><th scope="col">status</th><th scope="col">threshold</th><th scope="col">F1</th><th scope="col">AP</th></tr></thead><tbody></tbody></table>
</div>
</section>
<section aria-labelledby="ap-h"><h2 id="ap-h">AP per class</h2>
<svg id="ap-chart" class="chart wide" role="img" aria-label="average precision per class, sorted"></svg>
<p class="muted">Sorted by AP; select a bar (click) to open the class. The table above holds the same numbers.</p></section>
<section id="pooled" aria-labelledby="rel-h"><h2 id="rel-h">Reliability, all classes</h2>
<svg id="pooled-chart" class="chart" role="img" aria-label="reliability diagram of all classes"></svg></section>
"""


def render_index(report, curves=None, *, history: list[dict] | None = None, plots: dict[int, dict[str, str]] | None = None,
                 pooled: str | None = None, report_name: str = "thresholds.json") -> str:
    """The page. `curves`: plots.class_curves, one per class (None: table only); `history`: rows in the
    history.parquet layout (HISTORY_COLUMNS), earlier runs and this one; `plots`: class index ->
    {kind: relative PNG path} when EVAL_PLOTS wrote them."""
    data = json.dumps(page_data(report, curves, history), separators=(",", ":"), allow_nan=False)
    data = data.replace("</", "<\\/")  # nothing in the data can close the script element
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Evaluation {escape(report.run.id)}</title><style>{_asset('report.css')}</style></head><body>",
        _header(report, report_name),
        '<noscript><p class="bad">The table and curves need JavaScript; thresholds.json holds every number.</p></noscript>',
        BODY, *_sections(report), _png_cards(report, plots or {}, pooled), "</main>",
        f'<script type="application/json" id="report-data">{data}</script>',
        f"<script>{_asset('report.js')}</script>",
        "</body></html>",
    ])
