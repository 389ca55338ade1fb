// A job's results: the measured table (baseline beside every step) and two plots a person reads at a
// glance: quality against size and against latency.

import { bytes, fixed, h, s } from "./dom.js";

function quality(m, base) {
  if (m.accuracy !== null && m.accuracy !== undefined) return { value: m.accuracy, label: "accuracy" };
  if (m === base) return { value: 1, label: "agreement" };
  return { value: m.agreement, label: (m.agreement_metric || "").startsWith("cosine") ? "cosine agreement" : "agreement" };
}

// the headline figure, then what a language model or a multi-output model is also judged by
function qualityCell(m, q) {
  const lines = [h("span", {}, `${fixed(q.value, 4)} ${q.label}`)];
  if (m.perplexity !== null && m.perplexity !== undefined) lines.push(h("span", { class: "interval" }, `perplexity ${fixed(m.perplexity, 2)}`));
  if (m.agreement_metric && m.agreement_metric.includes("worst of")) lines.push(h("span", { class: "interval" }, m.agreement_metric));
  return h("span", { class: "speedup" }, ...lines);
}

function rowsOf(results) {
  const base = results.baseline;
  const rows = [{ name: "baseline", m: base, step: null }];
  results.steps.forEach((step, i) => {
    const name = `step ${i + 1}: ${step.method} ${variant(step)}`;
    // a step measured on several runtimes shows each, a search (auto) its Pareto front; the recommended is marked
    const entries = step.runtimes || step.front || [step];
    entries.forEach((entry, j) => {
      const mark = entry.recommended ? " (recommended)" : "";
      let label = name;
      if (step.front) label = `${name}: ${entry.details.label} on ${entry.measurement.runtime}${mark}`;
      else if (step.runtimes) label = `${name} on ${entry.measurement.runtime}${mark}`;
      rows.push({ name: label, short: step.front ? `front ${j + 1}` : `step ${i + 1}`, m: entry.measurement, step: entry });
    });
  });
  return rows;
}

// "2.10x" with its 95 % interval beneath, where the measurement has one
function speedupCell(step) {
  if (!step) return "–";
  const ci = step.speedup_ci95 || {};
  const one = (key) => {
    const v = step[`speedup_${key}`];
    const lines = [h("span", {}, fixed(v, 2, "x"))];
    if (ci[key]) lines.push(h("span", { class: "interval" }, `${fixed(ci[key][0], 2)}–${fixed(ci[key][1], 2)}`));
    return h("span", { class: "speedup" }, ...lines);
  };
  const parts = [one("b1"), " / ", one("bN")];
  if (step.noisy) parts.push(" ", h("span", { class: "badge noisy", title: (step.noise || []).join("; ") }, "noisy"));
  const ref = step.runtime_baseline;
  if (ref) {
    parts.push(h("span", { class: "vs-runtime", title: "against the same original model, fp32, on this runtime: what compression bought apart from the runtime switch" },
      `vs ${ref.runtime} fp32: ${fixed(ref.speedup_b1, 2, "x")} / ${fixed(ref.speedup_bN, 2, "x")}`));
  }
  return parts;
}

function variant(step) {
  const p = step.params || {};
  return p.scheme || p.kind || p.format || p.objective || (p.student ? "student" : "");
}

export function resultsTable(results, artifacts) {
  const byId = Object.fromEntries((artifacts || []).map((a) => [a.id, a]));
  const base = results.baseline;
  const head = ["", "format / runtime", "size", "params (non-zero)", "latency b1 p50", `latency b${base.latency_ms.batch} p50`,
    "speedup b1 / bN", "size ratio", "quality", "verdict", ""];
  const body = rowsOf(results).map(({ name, m, step }) => {
    const q = quality(m, base);
    const artifact = step ? byId[step.artifact_id] : null;
    return h("tr", {},
      h("th", { scope: "row" }, name),
      h("td", {}, `${step ? step.format : "original"} / ${m.runtime}`),
      h("td", { class: "num" }, bytes(m.size_bytes)),
      h("td", { class: "num" }, `${m.params.toLocaleString()} (${m.nonzero_params.toLocaleString()})`),
      h("td", { class: "num" }, fixed(m.latency_ms.b1 && m.latency_ms.b1.p50, 2, " ms")),
      h("td", { class: "num" }, fixed(m.latency_ms.bN && m.latency_ms.bN.p50, 1, " ms")),
      h("td", { class: "num" }, speedupCell(step)),
      h("td", { class: "num" }, step ? fixed(step.size_ratio, 2, "x") : "–"),
      h("td", { class: "num" }, qualityCell(m, q)),
      h("td", {}, step ? h("span", { class: `badge ${step.verdict}`, title: step.verdict_reason || "" },
        step.verdict.replaceAll("_", " ")) : "–"),
      h("td", {}, artifact ? h("a", { class: "button", href: artifact.download_url, download: artifact.filename },
        `Download ${artifact.format}`) : ""));
  });
  const notes = results.steps.flatMap((step, i) => (step.notes || []).map((n) => h("li", {}, `step ${i + 1}: ${n}`)));
  if (results.partial) notes.unshift(h("li", {}, "the search is still running (or was stopped): this is what it has found so far"));
  return h("div", {},
    h("div", { class: "table-wrap" },
      h("table", { class: "results" },
        h("caption", {}, "Measured in one run on the same machine; speedups are medians of interleaved rounds, with their 95 % interval beneath"),
        h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, body))),
    notes.length ? h("ul", { class: "notes" }, notes) : null,
    ...results.steps.filter((step) => step.search).map((step) => candidatesTable(step.search)));
}

// Every candidate a search tried, in order, with what became of it (figures from the search's own timing).
function candidatesTable(search) {
  const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(2)} pt`);
  const rows = search.candidates.flatMap((c) => {
    const found = c.artifacts && c.artifacts.length ? c.artifacts : [null];
    return found.map((a) => h("tr", {},
      h("th", { scope: "row" }, `${c.id} ${c.label}`),
      h("td", {}, c.rung),
      h("td", {}, a ? `${c.status}${a.on_front ? ", on the front" : ""}` : `${c.status}: ${c.reason || ""}`),
      h("td", {}, a ? a.runtime : "–"),
      h("td", { class: "num" }, a ? pct(a.accuracy_drop) : "–"),
      h("td", { class: "num" }, a ? `${fixed(a.speedup_b1, 2, "x")} / ${fixed(a.speedup_bN, 2, "x")}` : "–"),
      h("td", { class: "num" }, a ? fixed(a.size_ratio, 2, "x") : "–")));
  });
  const head = ["candidate", "rung", "status", "runtime", "accuracy drop", "speedup b1 / bN", "size ratio"];
  return h("details", { class: "candidates" },
    h("summary", {}, `Search: ${search.candidates.length} candidates in ${Math.round(search.search_s)} s ` +
      `(objective ${search.objective}, budget ${search.max_accuracy_drop * 100} pt; validated on ${search.validation})`),
    h("div", { class: "table-wrap" },
      h("table", { class: "results" },
        h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows))));
}

// A scatter of quality (y) against a cost (x); labels name every point, so it reads without colour.
function scatter(title, points, xLabel, format) {
  const W = 420, H = 260, L = 56, R = 16, T = 28, B = 44;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1] = [0, Math.max(...xs) * 1.15 || 1];
  const yMin = Math.min(...ys), yMax = Math.max(...ys);
  const pad = Math.max(0.01, (yMax - yMin) * 0.15);
  const [y0, y1] = [Math.max(0, yMin - pad), Math.min(1, yMax + pad) + (yMax + pad > 1 ? 0.001 : 0)];
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const ticks = (a, b, n) => Array.from({ length: n + 1 }, (_, i) => a + ((b - a) * i) / n);
  return s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ` + points.map((p) => `${p.label} ${format(p.x)}, ${p.y.toFixed(4)}`).join("; "), class: "plot" },
    s("text", { x: W / 2, y: 16, "text-anchor": "middle", class: "plot-title" }, title),
    s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    s("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
    ticks(x0, x1, 4).map((t) => s("text", { x: px(t), y: H - B + 16, "text-anchor": "middle", class: "tick" }, format(t))),
    ticks(y0, y1, 4).map((t) => s("text", { x: L - 6, y: py(t) + 4, "text-anchor": "end", class: "tick" }, t.toFixed(3))),
    s("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label" }, xLabel),
    points.map((p, i) => {
      // labels go left of points near the right edge, and alternate above/below so neighbours stay legible
      const right = px(p.x) > W - R - 70;
      return s("g", { class: i === 0 ? "point baseline" : "point" },
        s("circle", { cx: px(p.x), cy: py(p.y), r: 6 }),
        s("text", {
          x: px(p.x) + (right ? -9 : 9), y: py(p.y) + (i % 2 ? 16 : -8),
          "text-anchor": right ? "end" : "start", class: "point-label",
        }, p.label));
    }));
}

export function resultPlots(results) {
  const base = results.baseline;
  const rows = rowsOf(results).filter(({ m }) => quality(m, base).value !== null && quality(m, base).value !== undefined);
  const label = (r, i) => (i === 0 ? "baseline" : r.short);
  const q = quality(base, base).label;
  const bySize = rows.map((r, i) => ({ x: r.m.size_bytes / 1e6, y: quality(r.m, base).value, label: label(r, i) }));
  const byLatency = rows
    .filter((r) => r.m.latency_ms.b1)
    .map((r, i) => ({ x: r.m.latency_ms.b1.p50, y: quality(r.m, base).value, label: label(r, i) }));
  return h("div", { class: "plots" },
    h("figure", {}, scatter(`${q} vs size`, bySize, "size (MB)", (x) => x.toFixed(2)),
      h("figcaption", {}, `${q} against file size; up and left is better`)),
    h("figure", {}, scatter(`${q} vs latency`, byLatency, "latency at batch 1, p50 (ms)", (x) => x.toFixed(1)),
      h("figcaption", {}, `${q} against latency; up and left is better`)));
}
