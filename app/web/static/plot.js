// A scatter plot a person would publish: ticks at 1, 2 or 5 times a power of ten, a log axis when the
// values span more than ten times, the reference (the original model) marked with dashed lines, the
// 95 % interval as error bars, and short point labels placed where they overlap nothing.
// Written by hand: a charting library would be the page's only third-party code for two small plots.

import { s } from "./dom.js";

const W = 440, H = 280, L = 58, R = 18, T = 30, B = 46;

// "nice" linear ticks covering [lo, hi]: step 1, 2 or 5 × 10^k, about `count` of them
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { const pad = Math.abs(lo) * 0.05 || 0.5; lo -= pad; hi += pad; }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((k) => k >= raw * 0.999);
  const start = Math.floor(lo / step + 1e-9) * step, end = Math.ceil(hi / step - 1e-9) * step;
  const ticks = [];
  for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return { ticks, lo: start, hi: end, format: (v) => (Math.abs(v) < step / 1e6 ? 0 : v).toFixed(digits) };
}

// log ticks: 1, 2, 5 × 10^k inside [lo, hi] (every power of ten when that is too many)
export function logTicks(lo, hi) {
  const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
  let ticks = [];
  for (let k = a; k <= b; k++) for (const m of [1, 2, 5]) ticks.push(m * 10 ** k);
  ticks = ticks.filter((t) => t >= lo / 1.0001 && t <= hi * 1.0001);
  if (ticks.length > 8) ticks = ticks.filter((t) => Math.abs(Math.log10(t) - Math.round(Math.log10(t))) < 1e-9);
  const format = (v) => (v >= 1 ? String(Number(v.toPrecision(3))) : String(Number(v.toPrecision(2))));
  return { ticks, lo, hi, format };
}

// ceiling: a bound no value can pass (accuracy and agreement stop at 1), so no tick is drawn past it
function axis(values, extra, ceiling = Infinity, allowLog = true) {
  const all = [...values, ...extra].filter((v) => Number.isFinite(v));
  const min = Math.min(...all), max = Math.max(...all);
  if (allowLog && min > 0 && max / min > 10) {
    const lo = min / 1.25, hi = max * 1.25;
    const t = logTicks(lo, hi);
    return { ...t, map: (v) => (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)), log: true };
  }
  const span = max - min || Math.abs(max) * 0.1 || 1;
  const t = niceTicks(min - span * 0.08, Math.min(max + span * 0.08, ceiling));
  return { ...t, map: (v) => (v - t.lo) / (t.hi - t.lo), log: false };
}

const overlaps = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

// points: [{x, y, label, name, baseline, interval: [lo, hi] | undefined}]
export function scatter({ title, points, xLabel, yLabel, reference, yCeiling }) {
  const xa = axis(points.map((p) => p.x), points.flatMap((p) => p.interval || []));
  const ya = axis(points.map((p) => p.y), [], yCeiling, false); // quality stays linear: 0.05 is a collapse
  const px = (x) => L + xa.map(x) * (W - L - R);
  const py = (y) => H - B - ya.map(y) * (H - T - B);
  const base = points.find((p) => p.baseline);
  const placed = [];
  const labelFor = (p) => {
    const w = 7 * p.label.length + 4, hgt = 13, cx = px(p.x), cy = py(p.y);
    // right, above, below, left of the point: the first spot that overlaps no label and no point
    const spots = [[cx + 9, cy - 6], [cx - w / 2, cy - 22], [cx - w / 2, cy + 10], [cx - w - 9, cy - 6]];
    const dots = points.map((q) => ({ x: px(q.x) - 6, y: py(q.y) - 6, w: 12, h: 12 }));
    let box = null;
    for (const [x, y] of spots) {
      const b = { x, y, w, h: hgt };
      if (x < 2 || x + w > W - 2 || y < T - 4 || y + hgt > H - B + 2) continue;
      if (placed.some((o) => overlaps(o, b)) || dots.some((d) => overlaps(d, b))) continue;
      box = b; break;
    }
    if (!box) {
      // crowded: stack it under the last label placed near here
      const [x, y] = spots[0];
      box = { x: Math.min(x, W - w - 2), y, w, h: hgt };
      while (placed.some((o) => overlaps(o, box))) box.y += hgt;
    }
    placed.push(box);
    return s("text", { x: box.x + 2, y: box.y + 10, class: "point-label" }, p.label);
  };
  const exact = (v) => String(Number(v.toPrecision(3))); // the value itself, not rounded to the ticks
  const describe = points.map((p) => `${p.baseline ? "original" : `${p.label} ${p.name}`}: ${exact(p.x)}, ${exact(p.y)}`).join("; ");
  return s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}. ${describe}`, class: "plot" },
    s("title", {}, title),
    s("text", { x: L, y: 16, class: "plot-title" }, title),
    xa.ticks.map((t) => s("g", { class: "tick" },
      s("line", { x1: px(t), x2: px(t), y1: T, y2: H - B, class: "grid" }),
      s("text", { x: px(t), y: H - B + 16, "text-anchor": "middle" }, xa.format(t)))),
    ya.ticks.map((t) => s("g", { class: "tick" },
      s("line", { x1: L, x2: W - R, y1: py(t), y2: py(t), class: "grid" }),
      s("text", { x: L - 6, y: py(t) + 4, "text-anchor": "end" }, ya.format(t)))),
    s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    s("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
    reference && Number.isFinite(reference.x) ? s("line", { x1: px(reference.x), x2: px(reference.x), y1: T, y2: H - B, class: "reference" }) : null,
    base ? s("line", { x1: L, x2: W - R, y1: py(base.y), y2: py(base.y), class: "reference" }) : null,
    s("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", class: "axis-label" }, xLabel + (xa.log ? ", log scale" : "")),
    s("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", class: "axis-label", transform: `rotate(-90 14 ${(T + H - B) / 2})` }, yLabel),
    points.map((p) => s("g", { class: p.baseline ? "point baseline" : "point" },
      p.interval ? s("line", { x1: px(p.interval[0]), x2: px(p.interval[1]), y1: py(p.y), y2: py(p.y), class: "error-bar" }) : null,
      p.interval ? [p.interval[0], p.interval[1]].map((v) => s("line", { x1: px(v), x2: px(v), y1: py(p.y) - 4, y2: py(p.y) + 4, class: "error-bar" })) : null,
      s("circle", { cx: px(p.x), cy: py(p.y), r: 5 }))),
    // labels last, so they are drawn over the points and placed knowing where every point is
    s("g", { class: "labels" }, points.map(labelFor)));
}
