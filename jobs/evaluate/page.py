"""`index.html`: the report as one self-contained page (inline CSS, relative links, no scripts),
readable offline beside its `plots/` folder."""

from __future__ import annotations

from html import escape

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1240px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap} th{background:#f3f3f5}
td.l,th.l{text-align:left} .bad{background:#fde8e8} .ok{background:#e8f6ea} .muted{color:#888}
.cards{display:flex;flex-wrap:wrap;gap:10px} .card{border:1px solid #ddd;border-radius:6px;padding:8px}
.card h3{font-size:14px;margin:0 0 6px} .card img{width:320px;height:auto;margin-right:4px}
.kv td{text-align:left;white-space:normal;max-width:900px}
"""


def _f(value, spec=".3f") -> str:
    return "&ndash;" if value is None else escape(format(value, spec))


def _interval(iv) -> str:
    if iv is None or iv.low is None:
        return ""
    return f' <span class="muted">[{_f(iv.low)}, {_f(iv.high)}]</span>'


def _summary_table(report) -> str:
    boot = {c.name: c for c in report.bootstrap.classes} if report.bootstrap else {}
    cal = {c.name: c for c in report.calibration.classes} if report.calibration else {}
    drifted = {c.class_: c for c in report.drift.changed} if report.drift else {}
    head = ["class", "status", "GT", "pred", "AP", "threshold"]
    if report.calibration:
        head.append("calibrated thr.")
    head += ["precision", "recall", "F1", "TP", "FP", "FN"]
    if report.drift:
        head.append("drift")
    rows = ["<tr>" + "".join(f'<th class="{"l" if i < 2 else ""}">{escape(h)}</th>' for i, h in enumerate(head)) + "</tr>"]
    for c in report.classes:
        b = boot.get(c.name)
        cells = [f'<td class="l"><a href="#class-{escape(c.name)}">{escape(c.name)}</a></td>',
                 f'<td class="l">{escape(c.status)}</td>', f"<td>{c.n_ground_truth}</td>", f"<td>{c.n_predictions}</td>",
                 f"<td>{_f(c.average_precision)}{_interval(b and b.average_precision)}</td>",
                 f"<td>{_f(c.threshold, '.4f')}{_interval(b and b.threshold)}</td>"]
        if report.calibration:
            cells.append(f"<td>{_f(cal[c.name].calibrated_threshold, '.4f') if c.name in cal else ''}</td>")
        cells += [f"<td>{_f(c.precision)}</td>", f"<td>{_f(c.recall)}</td>",
                  f"<td>{_f(c.f1)}{_interval(b and b.f1)}</td>", f"<td>{c.tp}</td>", f"<td>{c.fp}</td>", f"<td>{c.fn}</td>"]
        if report.drift:
            d = drifted.get(c.name)
            cells.append(f'<td class="l bad">{escape(", ".join(d.reasons))}</td>' if d else '<td class="l ok">no</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _kv(pairs) -> str:
    return '<table class="kv">' + "".join(f"<tr><th class='l'>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _sections(report, pooled: str | None) -> list[str]:
    out = []
    if report.holdout:
        h = report.holdout
        out.append("<h2>Holdout</h2>" + _kv([
            ("split", escape(f"{h.selection_images} selection images chose the thresholds; the table is measured on "
                             f"{h.evaluation_images} held-out images (fraction {h.fraction}, seed {h.seed})")),
            ("macro F1 in-sample (selection)", _f(h.selection_summary.macro_f1)),
            ("macro F1 held-out", _f(report.summary.macro_f1)),
        ]))
    if report.calibration:
        c = report.calibration
        body = _kv([("method", escape(c.method)), ("fit", escape(c.fit_description)),
                    ("temperature", _f(c.temperature, ".4f")), ("fold temperatures", escape(", ".join(f"{t:.3f}" for t in c.fold_temperatures))),
                    ("ECE before / after", f"{_f(c.ece_before, '.4f')} / {_f(c.ece_after, '.4f')}"),
                    ("NLL before / after", f"{_f(c.nll_before, '.4f')} / {_f(c.nll_after, '.4f')}"),
                    ("binning", escape(c.binning)), ("target", escape(c.target))])
        out.append("<h2>Calibration</h2>" + body)
    if pooled:
        out.append(f'<h2>Reliability, all classes</h2><img src="{escape(pooled)}" alt="reliability diagram, all classes">')
    if report.bootstrap:
        b = report.bootstrap
        out.append("<h2>Bootstrap</h2>" + _kv([
            ("replicates / seed", f"{b.replicates} / {b.seed}"), ("resampling", escape(b.resampling)),
            ("interval", f"{b.confidence:.0%} {escape(b.method)}"),
            ("mAP", f"[{_f(b.mean_average_precision.low)}, {_f(b.mean_average_precision.high)}]"),
            ("macro F1", f"[{_f(b.macro_f1.low)}, {_f(b.macro_f1.high)}]"),
        ]))
    if report.drift:
        d = report.drift
        rows = "".join(
            f"<tr><td class='l'>{escape(ch.class_)}</td><td class='l'>{escape(', '.join(ch.reasons))}</td>"
            f"<td>{_f(ch.baseline_threshold, '.4f')}</td><td>{_f(ch.threshold, '.4f')}</td><td>{_f(ch.delta, '+.4f')}</td>"
            f"<td>{_f(ch.baseline_f1)}</td><td>{_f(ch.f1)}</td></tr>" for ch in d.changed)
        table = ("<table><tr><th class='l'>class</th><th class='l'>reasons</th><th>baseline thr.</th><th>threshold</th>"
                 f"<th>delta</th><th>baseline F1</th><th>F1</th></tr>{rows}</table>") if d.changed else "<p>No class changed.</p>"
        notes = "".join(f"<li>{escape(x)}</li>" for x in d.config_differences)
        out.append("<h2>Drift</h2>" + _kv([
            ("baseline", escape(d.baseline or "none yet")), ("baseline run", escape(d.baseline_run_id or "")),
            ("tolerance", escape(f"|delta| > {d.threshold_tolerance}, or F1 fell by > {d.f1_tolerance}")),
            ("result", f'<span class="{"bad" if d.drifted else "ok"}">{len(d.changed)} of {d.compared_classes} classes changed</span>'),
        ]) + table + (f"<p>Settings differ from the baseline's:</p><ul>{notes}</ul>" if notes else ""))
    return out


def _coco_table(report) -> str:
    """COCO's standard summary, as pycocotools prints it, when the report has one."""
    if report.coco is None:
        return ""
    stats = report.coco.stats.model_dump()
    head = "".join(f"<th>{escape(k)}</th>" for k in stats)
    cells = "".join(f"<td>{_f(v)}</td>" for v in stats.values())
    return (f"<h2>COCO summary ({escape(report.coco.iou_type)})</h2><table><tr>{head}</tr><tr>{cells}</tr></table>"
            f'<p class="muted">{escape(report.coco.parameters)}; thresholds come from the single-IoU evaluation.</p>')


def render_index(report, plots: dict[int, dict[str, str]], pooled: str | None, report_name: str) -> str:
    """The page. `plots`: class index -> {kind: relative PNG path}; only files that exist are named."""
    s, m = report.summary, report.matching
    nms = f", NMS IoU &gt; {report.nms.iou_threshold}" if report.nms else ""
    cards = []
    for i, c in enumerate(report.classes):
        imgs = "".join(f'<img src="{escape(path)}" alt="{escape(c.name)} {escape(kind)}">' for kind, path in plots.get(i, {}).items())
        if imgs:
            cards.append(f'<div class="card" id="class-{escape(c.name)}"><h3>{escape(c.name)} '
                         f'<span class="muted">threshold {_f(c.threshold, ".4f")}, F1 {_f(c.f1)}</span></h3>{imgs}</div>')
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Evaluation {escape(report.run.id)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Detection thresholds &mdash; run {escape(report.run.id)}</h1>",
        f'<p class="meta">finished {escape(report.run.finished_at)} &middot; code {escape(report.run.code_version)} &middot; '
        f"{escape(m.geometry)}, IoU {m.iou_threshold}, policy {escape(m.policy)}{nms} &middot; "
        f'<a href="{escape(report_name)}">{escape(report_name)}</a></p>',
        f"<p>mAP <b>{_f(s.mean_average_precision)}</b> &middot; macro F1 <b>{_f(s.macro_f1)}</b> &middot; "
        f"global threshold {_f(s.global_threshold, '.4f')} &middot; {report.alignment.matched_images} of "
        f"{report.alignment.annotation_images} annotated images have predictions</p>",
        _coco_table(report),
        "<h2>Classes</h2>", _summary_table(report),
        '<p class="muted">Brackets: bootstrap 95% intervals.</p>' if report.bootstrap else "",
        *_sections(report, pooled),
        "<h2>Per class</h2>", '<div class="cards">', *cards, "</div>",
        "</body></html>",
    ])
