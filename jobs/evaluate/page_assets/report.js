// The report page's script: reads the JSON block, draws the table, the curves and the slider.
// No network, no libraries. Every text from the data goes in through textContent.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const $ = (id) => document.getElementById(id);
  const SVG = "http" + "://www.w3.org/2000/svg"; // a namespace name, never fetched

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  }
  function sv(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
    return e;
  }
  const fmt = (x, d) => (x === null || x === undefined ? "\u2013" : Number(x).toFixed(d));

  // -- curve decoding (see jobs/evaluate/page.py) --
  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function varints(b64) {
    const b = bytes(b64), out = [];
    let v = 0, m = 1;
    for (let i = 0; i < b.length; i++) {
      const x = b[i];
      v += (x & 127) * m; // multiplication, not shifts: exact up to 2^53
      if (x & 128) m *= 128; else { out.push(v); v = 0; m = 1; }
    }
    return out;
  }
  const dv = new DataView(new ArrayBuffer(4));
  function keyToScore(k) {
    if (D.encoding.kind === "dec") return k / 10 ** D.encoding.digits;
    dv.setUint32(0, k >= 2147483648 ? k - 2147483648 : 4294967295 - k);
    return dv.getFloat32(0);
  }
  const decoded = new Map();
  function curve(cv) {
    if (!cv) return null;
    if (decoded.has(cv)) return decoded.get(cv);
    const n = cv.n, s = new Float64Array(n), tp = new Float64Array(n), fp = new Float64Array(n);
    const c = varints(cv.c);
    let j = 0, t = 0, f = 0;
    for (let i = 0; i < n; i++) {
      const x = c[j++];
      if (x === 0) t += 1; else if (x === 1) f += 1; else { t += x - 2; f += c[j++]; }
      tp[i] = t; fp[i] = f;
    }
    if (D.encoding.kind === "f64") s.set(new Float64Array(bytes(cv.s).buffer, 0, n));
    else {
      const d = varints(cv.s);
      let k = cv.k0;
      for (let i = 0; i < n; i++) { if (i > 0) k -= d[i - 1]; s[i] = keyToScore(k); }
    }
    const out = { s, tp, fp, gt: cv.gt, n, distinct: cv.distinct };
    decoded.set(cv, out);
    return out;
  }
  // The point a threshold selects: the last (lowest) score >= t; -1 when none is kept.
  function pointAt(cv, t) {
    let lo = 0, hi = cv.n; // scores descending: find the first index with s < t
    while (lo < hi) { const mid = (lo + hi) >> 1; if (cv.s[mid] >= t) lo = mid + 1; else hi = mid; }
    return lo - 1;
  }
  function metrics(cv, i) {
    const tp = i < 0 ? 0 : cv.tp[i], fp = i < 0 ? 0 : cv.fp[i], fn = cv.gt - tp;
    return { tp, fp, fn, p: tp + fp > 0 ? tp / (tp + fp) : null, r: tp / cv.gt, f1: (2 * tp) / (2 * tp + fp + fn) };
  }

  // -- table --
  const STATUS = {
    ok: "\u2713 ok", no_ground_truth: "\u2205 no ground truth", no_predictions: "\u2205 no predictions",
    low_support: "\u26A0 low support", policy_unreachable: "\u2715 policy unreachable",
  };
  const cols = [
    { key: "name", label: "class", text: true }, { key: "status", label: "status", text: true },
    { key: "gt", label: "GT" }, { key: "pred", label: "pred" }, { key: "ap", label: "AP", d: 3, ci: "ap" },
  ];
  if (D.ap_ious) cols.push({ key: "ap_ious", label: "AP over IoUs", d: 3 });
  cols.push({ key: "thr", label: "threshold", d: 4, ci: "thr" });
  if (D.calibrated) cols.push({ key: "cal_thr", label: "calibrated thr.", d: 4 });
  cols.push({ key: "p", label: "precision", d: 3 }, { key: "r", label: "recall", d: 3 }, { key: "f1", label: "F1", d: 3, ci: "f1" },
    { key: "tp", label: "TP" }, { key: "fp", label: "FP" }, { key: "fn", label: "FN" });
  if (D.drift) cols.push({ key: "drift", label: "drift", text: true });
  const state = { sort: null, dir: 1, page: 0, size: 50, filter: "", status: "", driftOnly: false, selected: null };

  function sortValue(c, key) {
    if (key === "drift") return c.drift ? c.drift.reasons.length : 0;
    return c[key];
  }
  function rowsInView() {
    const q = state.filter.toLowerCase();
    let rows = D.classes.filter((c) => (!q || c.name.toLowerCase().includes(q)) && (!state.status || c.status === state.status)
      && (!state.driftOnly || c.drift));
    if (state.sort) {
      const k = state.sort, dir = state.dir;
      rows = rows.slice().sort((a, b) => {
        const x = sortValue(a, k), y = sortValue(b, k);
        if (x === y) return a.i - b.i;
        if (x === null || x === undefined) return 1; // missing values last, either direction
        if (y === null || y === undefined) return -1;
        return (typeof x === "string" ? x.localeCompare(y) : x - y) * dir;
      });
    }
    return rows;
  }
  function headers() {
    const tr = $("classes-head");
    for (const col of cols) {
      const b = el("button", { type: "button", "data-key": col.key, title: "sort by " + col.label }, col.label);
      b.addEventListener("click", () => {
        if (state.sort === col.key) state.dir = -state.dir; else { state.sort = col.key; state.dir = col.text ? 1 : -1; }
        state.page = 0;
        drawTable();
      });
      tr.append(el("th", { scope: "col", "aria-sort": "none", "data-key": col.key }, b));
    }
  }
  function cell(c, col) {
    if (col.key === "name") {
      const b = el("button", { type: "button", class: "link", id: "sel-" + c.i, "data-i": c.i }, c.name);
      b.addEventListener("click", () => select(c.i, true));
      return el("td", {}, b);
    }
    if (col.key === "status") return el("td", {}, el("span", { class: "badge st-" + c.status }, STATUS[c.status] || c.status));
    if (col.key === "drift") {
      if (!c.drift) return el("td", {}, "\u2013");
      const delta = c.drift.delta === null || c.drift.delta === undefined ? "" : " " + (c.drift.delta > 0 ? "+" : "") + c.drift.delta.toFixed(4);
      return el("td", { class: "drift-cell" }, "\u25B2 " + c.drift.reasons.join(", ") + delta);
    }
    const v = c[col.key];
    const td = el("td", {}, col.d === undefined ? (v === null || v === undefined ? "\u2013" : String(v)) : fmt(v, col.d));
    if (col.ci && c.ci && c.ci[col.ci][0] !== null) td.append(el("span", { class: "muted" }, ` [${fmt(c.ci[col.ci][0], col.d)}, ${fmt(c.ci[col.ci][1], col.d)}]`));
    return td;
  }
  function drawTable() {
    const rows = rowsInView(), pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    const body = $("classes-body");
    body.replaceChildren(...rows.slice(state.page * state.size, (state.page + 1) * state.size).map((c) => {
      const tr = el("tr", { "data-i": c.i, class: (c.drift ? "drifted " : "") + (c.i === state.selected ? "selected" : "") });
      for (const col of cols) tr.append(cell(c, col));
      return tr;
    }));
    for (const th of $("classes-head").children)
      th.setAttribute("aria-sort", th.dataset.key === state.sort ? (state.dir > 0 ? "ascending" : "descending") : "none");
    $("count").textContent = `${rows.length} of ${D.classes.length} classes`;
    $("page-info").textContent = `page ${state.page + 1} of ${pages}`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }
  function controls() {
    const statuses = [...new Set(D.classes.map((c) => c.status))];
    for (const s of statuses) $("status-filter").append(el("option", { value: s }, STATUS[s] || s));
    $("filter").addEventListener("input", (e) => { state.filter = e.target.value; state.page = 0; drawTable(); });
    $("status-filter").addEventListener("change", (e) => { state.status = e.target.value; state.page = 0; drawTable(); });
    $("drift-only").addEventListener("change", (e) => { state.driftOnly = e.target.checked; state.page = 0; drawTable(); });
    $("page-size").addEventListener("change", (e) => { state.size = Number(e.target.value); state.page = 0; drawTable(); });
    $("prev").addEventListener("click", () => { state.page--; drawTable(); });
    $("next").addEventListener("click", () => { state.page++; drawTable(); });
    if (!D.drift) $("drift-only").parentElement.hidden = true;
    const notes = [];
    if (D.holdout) notes.push("Numbers and curves are measured on the held-out images; thresholds were chosen on the selection images (dashed curve).");
    if (D.bootstrap) notes.push("Brackets: bootstrap 95% intervals.");
    notes.push("Select a class name to explore its thresholds. Column headers sort (again: reverse).");
    $("table-note").textContent = notes.join(" ");
  }

  // -- charts --
  const W = 360, H = 280, M = { l: 46, r: 12, t: 14, b: 38 };
  function frame(svg, o) {
    const w = o.w || W, h = o.h || H;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const X = (x) => M.l + ((x - o.x[0]) / (o.x[1] - o.x[0] || 1)) * (w - M.l - M.r);
    const Y = (y) => h - M.b - ((y - o.y[0]) / (o.y[1] - o.y[0] || 1)) * (h - M.t - M.b);
    const g = sv("g", { class: "axis" });
    for (const xv of ticks(o.x)) {
      g.append(sv("line", { class: "gridline", x1: X(xv), x2: X(xv), y1: Y(o.y[0]), y2: Y(o.y[1]) }));
      if (!o.xticks) { const t = sv("text", { x: X(xv), y: h - M.b + 14, "text-anchor": "middle" }); t.textContent = +xv.toPrecision(3); g.append(t); }
    }
    for (const yv of ticks(o.y)) {
      g.append(sv("line", { class: "gridline", x1: X(o.x[0]), x2: X(o.x[1]), y1: Y(yv), y2: Y(yv) }));
      const u = sv("text", { x: M.l - 4, y: Y(yv) + 4, "text-anchor": "end" }); u.textContent = +yv.toPrecision(3); g.append(u);
    }
    g.append(sv("path", { d: `M${X(o.x[0])},${Y(o.y[1])}V${Y(o.y[0])}H${X(o.x[1])}`, fill: "none" }));
    const xl = sv("text", { x: (M.l + w - M.r) / 2, y: h - 6, "text-anchor": "middle" }); xl.textContent = o.xlabel;
    const yl = sv("text", { x: 12, y: (M.t + h - M.b) / 2, transform: `rotate(-90 12 ${(M.t + h - M.b) / 2})`, "text-anchor": "middle" });
    yl.textContent = o.ylabel;
    g.append(xl, yl);
    svg.append(g);
    return { X, Y, w, h };
  }
  function ticks([lo, hi]) {
    const raw = (hi - lo) / 5, e = 10 ** Math.floor(Math.log10(raw || 1)), m = raw / e;
    const step = (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * e, out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) out.push(Math.abs(v) < 1e-12 ? 0 : v);
    return out;
  }
  // Legend in a white box; corner "ll" (lower left), "ul" (upper left) or "ur" (upper right, the default).
  function legend(svg, f, items, corner) {
    const bw = 150, bh = 14 * items.length + 6, left = corner === "ll" || corner === "ul";
    const x0 = left ? M.l + 6 : f.w - M.r - bw - 4, y0 = corner === "ll" ? f.h - M.b - bh - 6 : M.t + 2;
    svg.append(sv("rect", { x: x0, y: y0, width: bw, height: bh, fill: "#fff", "fill-opacity": 0.88, stroke: "#ccc" }));
    items.forEach((it, k) => {
      const y = y0 + 15 + 14 * k, x = x0 + 6;
      if (it.marker === "diamond") svg.append(sv("rect", { x: x + 7, y: y - 7, width: 6, height: 6, transform: `rotate(45 ${x + 10} ${y - 4})`, class: it.cls }));
      else if (it.marker) svg.append(sv("circle", { cx: x + 10, cy: y - 4, r: 4, class: it.cls }));
      else svg.append(sv("line", { x1: x, x2: x + 22, y1: y - 4, y2: y - 4, class: it.cls }));
      const t = sv("text", { x: x + 27, y }); t.textContent = it.label; svg.append(t);
    });
  }
  function marker(svg, x, y, cls, label, shape) {
    const m = shape === "diamond" ? sv("rect", { x: x - 5, y: y - 5, width: 10, height: 10, transform: `rotate(45 ${x} ${y})`, class: cls })
      : sv("circle", { cx: x, cy: y, r: 5.5, class: cls });
    const t = sv("title"); t.textContent = label; m.append(t);
    svg.append(m);
  }
  function stepPath(xs, ys, X, Y, pre) {
    let d = "";
    for (let i = 0; i < xs.length; i++) {
      if (ys[i] === null) continue;
      const x = X(xs[i]).toFixed(1), y = Y(ys[i]).toFixed(1);
      d += d === "" ? `M${x},${y}` : pre ? `V${y}H${x}` : `H${x}V${y}`;
    }
    return d;
  }

  function prChart(c, cv, sel, policy) {
    const svg = $("pr-chart"), f = frame(svg, { x: [0, 1.02], y: [0, 1.02], xlabel: "recall", ylabel: "precision" });
    const draw = (k, cls) => {
      const xs = [0], ys = [1];
      for (let j = 0; j < k.n; j++) { xs.push(k.tp[j] / k.gt); ys.push(k.tp[j] / (k.tp[j] + k.fp[j])); }
      svg.append(sv("path", { d: stepPath(xs, ys, f.X, f.Y, false), class: cls }));
    };
    const side = curve(c.selection);
    if (side) draw(side, "s-alt");
    draw(cv, "s-main");
    const items = [{ cls: "s-main", label: side ? "held-out images" : "all images" }];
    if (side) items.push({ cls: "s-alt", label: "selection images" });
    if (policy >= 0) { const m = metrics(cv, policy); marker(svg, f.X(m.r), f.Y(m.p), "m-policy", `policy threshold ${c.thr}`); items.push({ marker: true, cls: "m-policy", label: "policy point" }); }
    if (sel >= 0) { const m = metrics(cv, sel); marker(svg, f.X(m.r), f.Y(m.p), "m-slider", "slider", "diamond"); }
    items.push({ marker: "diamond", cls: "m-slider", label: "slider" });
    legend(svg, f, items, "ll");
  }
  function thrChart(c, cv, t, policy) {
    const lo = Math.min(cv.s[cv.n - 1], 0 <= cv.s[cv.n - 1] && cv.s[0] <= 1 ? 0 : cv.s[cv.n - 1]);
    const hi = Math.max(cv.s[0], cv.s[cv.n - 1] >= 0 && cv.s[0] <= 1 ? 1 : cv.s[0]);
    const svg = $("thr-chart"), f = frame(svg, { x: [lo, hi], y: [0, 1.02], xlabel: "threshold (keep score \u2265 t)", ylabel: "value" });
    const xs = [], P = [], R = [], F = [];
    for (let j = cv.n - 1; j >= 0; j--) { const m = metrics(cv, j); xs.push(cv.s[j]); P.push(m.p); R.push(m.r); F.push(m.f1); }
    for (const [ys, cls] of [[P, "s-p"], [R, "s-r"], [F, "s-f1"]]) svg.append(sv("path", { d: stepPath(xs, ys, f.X, f.Y, true), class: cls }));
    if (c.thr !== null && c.thr !== undefined) svg.append(sv("line", { class: "v-policy", x1: f.X(c.thr), x2: f.X(c.thr), y1: f.Y(0), y2: f.Y(1.02) }));
    if (t !== null && isFinite(t)) { const x = f.X(Math.min(Math.max(t, lo), hi)); svg.append(sv("line", { class: "v-slider", x1: x, x2: x, y1: f.Y(0), y2: f.Y(1.02) })); }
    legend(svg, f, [{ cls: "s-p", label: "precision" }, { cls: "s-r", label: "recall (dashed)" }, { cls: "s-f1", label: "F1 (dotted)" },
      { cls: "v-policy", label: "policy (dash-dot)" }, { cls: "v-slider", label: "slider (solid)" }], "ll");
  }
  function reliabilityChart(svg, rel) {
    const f = frame(svg, { x: [0, 1], y: [0, 1.02], xlabel: `score (${D.n_bins} equal-width bins)`, ylabel: "share true positive" });
    svg.append(sv("path", { d: `M${f.X(0)},${f.Y(0)}L${f.X(1)},${f.Y(1)}`, class: "s-diag" }));
    const items = [{ cls: "s-diag", label: "perfect calibration" }];
    for (const [key, cls, label] of [["before", "s-before", "raw scores"], ["after", "s-after", "calibrated (dashed)"]]) {
      if (!rel[key]) continue;
      let d = "";
      for (const [n, conf, acc] of rel[key]) {
        if (!n) continue;
        d += (d ? "L" : "M") + f.X(conf).toFixed(1) + "," + f.Y(acc).toFixed(1);
        const m = key === "before" ? sv("circle", { cx: f.X(conf), cy: f.Y(acc), r: 3, class: cls })
          : sv("rect", { x: f.X(conf) - 3, y: f.Y(acc) - 3, width: 6, height: 6, class: cls });
        const t = sv("title"); t.textContent = `${label}: ${n} detections, mean score ${conf}, share TP ${acc}`; m.append(t);
        svg.append(m);
      }
      svg.append(sv("path", { d, class: cls }));
      items.push({ cls, label });
    }
    legend(svg, f, items, "ul");
  }
  function apChart() {
    const rows = D.classes.filter((c) => c.ap !== null).sort((a, b) => b.ap - a.ap || a.i - b.i);
    const svg = $("ap-chart"), w = 1240, h = 240;
    if (!rows.length) { svg.parentElement.hidden = true; return; }
    const f = frame(svg, { w, h, x: [0, rows.length], y: [0, 1], xlabel: `${rows.length} classes, highest AP first`, ylabel: "AP", xticks: true });
    const slot = f.X(1) - f.X(0), bw = Math.max(Math.min(slot * 0.84, 40), 0.5);
    rows.forEach((c, k) => {
      const r = sv("rect", { class: "bar", x: f.X(k) + (slot - bw) / 2, width: bw, y: f.Y(c.ap), height: f.Y(0) - f.Y(c.ap), "data-i": c.i });
      const t = sv("title"); t.textContent = `${c.name}: AP ${c.ap.toFixed(3)}`; r.append(t);
      r.addEventListener("click", () => select(c.i, true));
      svg.append(r);
      if (rows.length <= 40) { const l = sv("text", { x: f.X(k + 0.5), y: f.h - M.b + 14, "text-anchor": "middle" }); l.textContent = c.name.slice(0, 14); svg.append(l); }
    });
  }

  // -- the explorer --
  let cur = null; // {c, cv, policy}
  function setPoint(i, typed) {
    const { c, cv } = cur;
    const m = metrics(cv, i);
    const put = (id, v, text) => { const e = $(id); e.textContent = text; e.dataset.value = v === null ? "" : String(v); };
    put("ro-tp", m.tp, String(m.tp)); put("ro-fp", m.fp, String(m.fp)); put("ro-fn", m.fn, String(m.fn));
    put("ro-p", m.p, fmt(m.p, 4)); put("ro-r", m.r, fmt(m.r, 4)); put("ro-f1", m.f1, fmt(m.f1, 4));
    const thr = typed !== null ? typed : i >= 0 ? cv.s[i] : null;
    $("ro-thr").textContent = thr === null ? `> ${cv.s[0]}` : String(thr);
    $("ro-kept").textContent = i < 0 ? `none: above the highest score, ${cv.s[0]}` : `${cv.s[i]} and above`;
    $("ro-thr").dataset.point = String(i);
    const slider = $("thr-slider");
    slider.value = String(i < 0 ? cv.n : cv.n - 1 - i);
    slider.setAttribute("aria-valuetext", i < 0 ? "above the highest score" : `threshold ${cv.s[i]}, precision ${fmt(m.p, 3)}, recall ${fmt(m.r, 3)}, F1 ${fmt(m.f1, 3)}`);
    if (typed === null) $("thr-input").value = i < 0 ? "" : String(cv.s[i]);
    prChart(c, cv, i, cur.policy);
    thrChart(c, cv, thr === null ? (i < 0 ? cv.s[0] : null) : thr, cur.policy);
  }
  function select(i, focus) {
    const c = D.classes[i];
    state.selected = i;
    drawTable();
    $("detail-h").textContent = "Class: " + c.name;
    const ids = c.id === null || c.id === undefined ? "" : ` (id ${c.id})`;
    $("detail-status").replaceChildren(el("span", { class: "badge st-" + c.status }, STATUS[c.status] || c.status),
      ` ${c.gt} ground truths, ${c.pred} predictions${ids}` + (c.drift ? `; \u25B2 drift: ${c.drift.reasons.join(", ")} (baseline threshold ${fmt(c.drift.baseline_thr, 4)}, F1 ${fmt(c.drift.baseline_f1, 3)})` : ""));
    const cv = curve(c.curve);
    const explorer = document.querySelector(".explorer");
    if (!cv) {
      cur = null;
      explorer.hidden = true;
      $("detail-status").append(el("p", { class: "muted" }, "No curve for this class: it needs ground truth and detections."));
    } else {
      explorer.hidden = false;
      const policy = c.thr === null || c.thr === undefined ? -1 : pointAt(cv, c.thr);
      cur = { c, cv, policy };
      const slider = $("thr-slider");
      slider.max = String(cv.n);
      $("thr-note").textContent = cv.n < cv.distinct
        ? `Subsampled: ${cv.n.toLocaleString()} of ${cv.distinct.toLocaleString()} distinct scores kept (evenly spaced ranks, the first, the last and the policy's threshold); counts are exact at every kept score, and a typed value reads the nearest kept score at or above it.`
        : `${cv.n.toLocaleString()} distinct scores: counts are exact at every one. Slider: arrow keys step one score, Home/End jump to the ends.`;
      $("policy-note").textContent = policy >= 0 ? `Policy ${D.policy}: threshold ${c.thr}, precision ${fmt(c.p, 4)}, recall ${fmt(c.r, 4)}, F1 ${fmt(c.f1, 4)}.`
        : `Policy ${D.policy}: no threshold (${STATUS[c.status] || c.status}).`;
      setPoint(policy >= 0 ? policy : cv.n - 1, null);
    }
    const relFig = $("rel-fig");
    relFig.hidden = !c.rel;
    if (c.rel) reliabilityChart($("rel-chart"), c.rel);
    for (const r of document.querySelectorAll("#ap-chart .bar")) r.classList.toggle("sel", Number(r.dataset.i) === i);
    historyPanel(c);
    if (focus) $("detail").focus();
    try { history.replaceState(null, "", "#class-" + i); } catch (e) { /* some file:// contexts refuse it */ }
  }
  function explorerControls() {
    $("thr-slider").addEventListener("input", (e) => {
      if (!cur) return;
      const v = Number(e.target.value);
      setPoint(v >= cur.cv.n ? -1 : cur.cv.n - 1 - v, null);
    });
    $("thr-input").addEventListener("input", (e) => {
      if (!cur || e.target.value.trim() === "") return;
      const t = Number(e.target.value);
      if (!isFinite(t)) return;
      setPoint(pointAt(cur.cv, t), t);
    });
    $("thr-policy").addEventListener("click", () => { if (cur && cur.policy >= 0) setPoint(cur.policy, null); });
  }

  // -- history --
  function historyPanel(c) {
    const rows = D.history.filter((r) => r.name === c.name).sort((a, b) => (a.finished_at < b.finished_at ? -1 : a.finished_at > b.finished_at ? 1 : 0));
    const box = $("history");
    box.hidden = D.history.length === 0;
    if (box.hidden) return;
    const tb = document.querySelector("#hist-table tbody");
    tb.replaceChildren(...rows.map((r) => el("tr", {}, el("td", {}, String(r.run_id)), el("td", {}, String(r.finished_at)),
      el("td", {}, STATUS[r.status] || String(r.status)), el("td", {}, fmt(r.threshold, 4)), el("td", {}, fmt(r.f1, 3)),
      el("td", {}, fmt(r.average_precision, 3)))));
    const vals = rows.flatMap((r) => [r.threshold, r.f1]).filter((v) => v !== null && v !== undefined);
    const lo = Math.min(0, ...vals), hi = Math.max(1, ...vals);
    const svg = $("hist-chart"), n = rows.length;
    const f = frame(svg, { w: 1240, h: 240, x: [-0.5, Math.max(n - 0.5, 0.5)], y: [lo, hi], xlabel: `${n} runs, oldest first`, ylabel: "value", xticks: true });
    for (const [key, cls, shape] of [["threshold", "s-p", "circle"], ["f1", "s-f1", "rect"]]) {
      let d = "";
      rows.forEach((r, k) => {
        const v = r[key];
        if (v === null || v === undefined) return;
        const x = f.X(k), y = f.Y(v);
        d += (d ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
        const m = shape === "circle" ? sv("circle", { cx: x, cy: y, r: 4, class: "hist-pt", "data-series": key })
          : sv("rect", { x: x - 4, y: y - 4, width: 8, height: 8, class: "hist-pt", "data-series": key });
        const t = sv("title"); t.textContent = `${r.run_id} (${r.finished_at}): ${key} ${v}`; m.append(t);
        svg.append(m);
      });
      svg.insertBefore(sv("path", { d, class: cls }), svg.children[1] || null);
    }
    rows.forEach((r, k) => { const t = sv("text", { x: f.X(k), y: f.h - M.b + 14, "text-anchor": "middle" }); t.textContent = String(r.run_id).slice(-12); svg.append(t); });
    legend(svg, f, [{ cls: "s-p", label: "threshold (circles)" }, { cls: "s-f1", label: "F1 (squares)" }]);
  }

  // -- start --
  headers();
  controls();
  explorerControls();
  drawTable();
  apChart();
  if (D.reliability) reliabilityChart($("pooled-chart"), D.reliability); else $("pooled").hidden = true;
  const fromHash = /^#class-(\d+)$/.exec(location.hash);
  const first = fromHash && D.classes[Number(fromHash[1])] ? Number(fromHash[1]) : (D.classes.find((c) => c.curve) || D.classes[0] || {}).i;
  if (first !== undefined) select(first, false); else $("detail").hidden = true;
  document.body.dataset.ready = "1";
})();
