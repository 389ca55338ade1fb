// A job's results: what came out first (the recommended artifact and why), then one compact row per
// measured artifact (details fold out per row; rows become cards on a phone), then two plots, then a
// search's candidates. The same number names a row in the table and its point in the plots.

import { bytes, fixed, h } from "./dom.js";
import { scatter } from "./plot.js";

const present = (x) => x !== null && x !== undefined;

function quality(m, base) {
  if (present(m.accuracy)) return { value: m.accuracy, label: "accuracy" };
  if (m === base) return { value: 1, label: "agreement" };
  return { value: m.agreement, label: (m.agreement_metric || "").startsWith("cosine") ? "cosine agreement" : "agreement" };
}

function variant(step) {
  const p = step.params || {};
  if (p.scheme) return p.scheme;
  if (p.kind) return `${p.kind.replaceAll("_", " ")}${present(p.sparsity) ? ` ${Math.round(p.sparsity * 100)} %` : ""}`;
  if (p.format) return p.format;
  if (p.student) return "student";
  return "";
}

// one row per artifact: a plain step, each runtime a step was measured on, each member of a search's front,
// and each peer (the field's one-call recipe) measured beside them
export function rowsOf(results) {
  const base = results.baseline;
  const rows = [{ n: null, name: "original", m: base, entry: null }];
  const several = results.steps.length > 1;
  let n = 0;
  results.steps.forEach((step, i) => {
    const prefix = several ? `step ${i + 1}: ` : "";
    const entries = step.front || step.runtimes || [step];
    for (const entry of entries) {
      const runtime = entry.measurement.runtime;
      let name = `${step.method} ${variant(step)}`.trim();
      if (step.front) {
        const label = (entry.details && entry.details.label) || name;
        name = label.includes(runtime) ? label : `${label} on ${runtime}`;
      } else if (step.runtimes) {
        name = `${name} on ${runtime}`;
      }
      const recommended = (step.front || step.runtimes) ? entry.artifact_id === step.artifact_id : false;
      rows.push({ n: ++n, name: prefix + name, m: entry.measurement, entry, step, recommended });
    }
    for (const entry of step.peers || []) {
      rows.push({ n: ++n, name: `${prefix}peer: ${entry.peer}`, m: entry.measurement, entry, step, recommended: false, peer: true });
    }
  });
  return rows;
}

function qualityText(m, base) {
  const q = quality(m, base);
  if (m === base && q.label !== "accuracy") return "reference";
  let text = `${fixed(q.value, 4)} ${q.label}`;
  if (q.label === "accuracy" && m !== base && present(base.accuracy)) {
    const delta = (m.accuracy - base.accuracy) * 100;
    text += ` (${delta >= 0 ? "+" : "−"}${Math.abs(delta).toFixed(2)} pt)`;
  }
  return text;
}

function qualityCell(m, base) {
  const lines = [h("span", {}, qualityText(m, base))];
  if (present(m.perplexity)) lines.push(h("span", { class: "sub" }, `perplexity ${fixed(m.perplexity, 2)}`));
  if (m.generation) lines.push(h("span", { class: "sub" }, `decode ${fixed(m.generation.decode_tokens_per_s, 1)} tokens/s`));
  if (m.agreement_metric && m.agreement_metric.includes("worst of")) lines.push(h("span", { class: "sub" }, m.agreement_metric));
  return h("span", { class: "stack" }, ...lines);
}

// "2.10x" with its 95 % interval beneath, where the measurement has one
function speedupCell(entry, key) {
  if (!entry) return "1x";
  const v = entry[`speedup_${key}`];
  const ci = (entry.speedup_ci95 || {})[key];
  const lines = [h("span", {}, fixed(v, 2, "x"))];
  if (ci) lines.push(h("span", { class: "sub interval", title: "95 % interval" }, `${fixed(ci[0], 2)}–${fixed(ci[1], 2)}`));
  return h("span", { class: "stack" }, ...lines);
}

function verdictBadge(entry) {
  return h("span", { class: `badge ${entry.verdict}`, title: entry.verdict_reason || "" }, entry.verdict.replaceAll("_", " "));
}

function downloadLink(artifact, extra = "") {
  if (!artifact) return "";
  return h("a", { class: "button", href: artifact.download_url, download: artifact.filename },
    `Download ${artifact.format}`, extra ? h("span", { class: "visually-hidden" }, ` ${extra}`) : null);
}

// the facts behind a row, folded out on demand
function detailsList(row, base) {
  const { m, entry } = row;
  const lat = m.latency_ms;
  const items = [
    ["format / runtime", `${entry ? entry.format : "original"} / ${m.runtime}`],
    ["size", bytes(m.size_bytes)],
    ["parameters (non-zero)", `${m.params.toLocaleString()} (${m.nonzero_params.toLocaleString()})`],
    ["latency, batch 1", lat.b1 ? `p50 ${fixed(lat.b1.p50, 2)} ms, p90 ${fixed(lat.b1.p90, 2)} ms` : "–"],
    [`latency, batch ${lat.batch}`, lat.bN ? `p50 ${fixed(lat.bN.p50, 1)} ms, p90 ${fixed(lat.bN.p90, 1)} ms` : "–"],
    ["throughput", present(m.throughput_per_s) ? `${fixed(m.throughput_per_s, 1)} samples/s` : "–"],
  ];
  if (m.generation) items.push(["generation", generationText(m.generation, entry)]);
  if (entry) {
    items.push(["verdict", entry.verdict_reason || entry.verdict]);
    if (entry.rounds && Object.keys(entry.rounds).length) {
      items.push(["rounds", Object.entries(entry.rounds).map(([k, v]) => `${v} (${k})`).join(", ")]);
    }
    const ref = entry.runtime_baseline;
    if (ref) items.push([`vs the original on ${ref.runtime}`, `${fixed(ref.speedup_b1, 2, "x")} at batch 1, ${fixed(ref.speedup_bN, 2, "x")} at batch ${lat.batch}, ${fixed(ref.size_ratio, 2, "x")} smaller`]);
    if (entry.noisy) items.push(["noisy", (entry.noise || []).join("; ")]);
    for (const note of entry.notes || []) items.push(["note", note]);
  }
  if (row.artifact && row.artifact.how_to_run) {
    items.push(["how to run it", h("pre", { class: "code" }, h("code", {}, row.artifact.how_to_run))]);
  }
  return h("dl", { class: "facts" }, items.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// a language model's generation figures, each with its 95 % interval, and how they were taken
function generationText(g, entry) {
  const figure = (key, digits, unit) => {
    const ci = (g.ci95 || {})[key];
    return `${fixed(g[key], digits)}${unit}` + (ci ? ` [${fixed(ci[0], digits)}–${fixed(ci[1], digits)}]` : "");
  };
  let text = `decode ${figure("decode_tokens_per_s", 1, " tokens/s")}, prefill ${figure("prefill_tokens_per_s", 0, " tokens/s")}, `
    + `first token ${figure("ttft_ms", 1, " ms")}; ${g.new_tokens} tokens after a prompt of ${g.prompt_tokens}, `
    + (g.kv_cache ? "from a key/value cache" : "no key/value cache: each token recomputes the sequence");
  if (entry && present(entry.speedup_decode)) text += `; decode ${fixed(entry.speedup_decode, 2, "x")} the original's`;
  return text;
}

export function resultsTable(results, artifacts) {
  const byId = Object.fromEntries((artifacts || []).map((a) => [a.id, a]));
  const base = results.baseline;
  const batch = base.latency_ms.batch;
  const head = ["#", "artifact", "size ×", "speedup b1", `speedup b${batch}`, "quality", "verdict", "download"];
  const body = [];
  rowsOf(results).forEach((row, i) => {
    const { n, name, m, entry } = row;
    row.artifact = entry ? byId[entry.artifact_id] : null;
    const detailsId = `result-details-${i}`;
    const toggle = h("button", { type: "button", class: "link toggle", "aria-expanded": "false", "aria-controls": detailsId },
      "details", h("span", { class: "visually-hidden" }, ` of ${name}`));
    const details = h("tr", { class: "details", id: detailsId, hidden: true },
      h("td", { colspan: head.length }, detailsList(row, base)));
    toggle.addEventListener("click", () => {
      const open = details.hidden;
      details.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
    });
    const cell = (label, content, cls) => h("td", { "data-label": label, class: cls }, content);
    body.push(h("tr", { class: row.recommended ? "recommended" : null, "data-n": n ?? "original" },
      cell("#", n ?? "–", "num row-n"),
      h("th", { scope: "row", "data-label": "artifact" },
        h("span", { class: "name" }, h("span", { class: "phone-only" }, n ? `${n}. ` : ""), name), row.recommended ? h("span", { class: "badge recommended" }, "recommended") : null,
        row.peer ? h("span", { class: "badge peer", title: "built with the field's one-call recipe, for comparison" }, "peer") : null,
        " ", toggle),
      cell("size ×", entry ? fixed(entry.size_ratio, 2, "x") : "1x", "num"),
      cell("speedup b1", speedupCell(entry, "b1"), "num"),
      cell(`speedup b${batch}`, speedupCell(entry, "bN"), "num"),
      cell("quality", qualityCell(m, base)),
      cell("verdict", entry ? [verdictBadge(entry), entry.noisy ? [" ", h("span", { class: "badge noisy", title: (entry.noise || []).join("; ") }, "noisy")] : null] : "–"),
      cell("download", entry ? downloadLink(byId[entry.artifact_id], name) : "")));
    body.push(details);
  });
  return h("div", { class: "table-wrap" },
    h("table", { class: "results cards" },
      h("caption", {}, "Measured in one run on the same machine. Speedups are medians of interleaved rounds, with the 95 % interval beneath."),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, body)));
}

// What came out, first: the recommended artifact of a search (with why), or the final artifact of a recipe.
export function resultSummary(results, artifacts) {
  const byId = Object.fromEntries((artifacts || []).map((a) => [a.id, a]));
  const final = results.final;
  const base = results.baseline;
  const rows = rowsOf(results);
  const row = rows.find((r) => r.entry && r.entry.artifact_id === final.artifact_id) || rows[rows.length - 1];
  const search = results.steps.find((s) => s.front);
  const ci = (final.speedup_ci95 || {}).b1;
  const figures = [
    final.size_ratio >= 1 ? `${fixed(final.size_ratio, 2)}× smaller` : `${fixed(1 / final.size_ratio, 2)}× larger`,
    `${fixed(final.speedup_b1, 2)}× ${final.speedup_b1 >= 1 ? "faster" : "the speed"} at batch 1${ci ? ` (95 %: ${fixed(ci[0], 2)}–${fixed(ci[1], 2)})` : ""}`,
    `${fixed(final.speedup_bN, 2)}× at batch ${base.latency_ms.batch}`,
    qualityText(row.m, base),
  ];
  return h("section", { class: "card summary", id: "result-summary", "aria-labelledby": "result-summary-title" },
    h("h3", { id: "result-summary-title" }, search ? "Recommended: " : "Result: ",
      h("span", { class: "name" }, row.n ? `#${row.n} ${row.name}` : row.name)),
    h("p", { class: "figures" }, figures.join(" · ")),
    h("p", {}, verdictBadge(final), " ", final.verdict_reason),
    final.against_peers ? h("p", { class: final.against_peers.ahead ? "peers" : "peers behind", id: "against-peers" },
      h("strong", {}, final.against_peers.ahead ? "Ahead of the peers: " : "Behind a peer: "), final.against_peers.summary) : null,
    search && search.recommendation_reason ? h("p", { class: "why" }, h("strong", {}, "Why: "), search.recommendation_reason) : null,
    search && search.within_budget === false ? h("p", { class: "error" }, "No candidate met the accuracy budget; this is the closest.") : null,
    results.failed ? h("p", { class: "error" }, `A later step failed: ${results.failed}`) : null,
    results.partial ? h("p", { class: "help" }, "The search is still running (or was stopped): this is what it has found so far.") : null,
    downloadLink(byId[final.artifact_id]));
}

// Every candidate a search tried, in order, with what became of it (figures from the search's own timing).
function candidatesTable(search) {
  const pct = (x) => (present(x) ? `${(x * 100).toFixed(2)} pt` : "–");
  const rows = search.candidates.flatMap((c) => {
    const found = c.artifacts && c.artifacts.length ? c.artifacts : [null];
    return found.map((a) => h("tr", {},
      h("th", { scope: "row", "data-label": "candidate" }, `${c.id} ${c.label}`),
      h("td", { "data-label": "rung" }, c.rung),
      h("td", { "data-label": "status" }, a ? `${c.status}${a.on_front ? ", on the front" : ""}` : `${c.status}: ${c.reason || ""}`),
      h("td", { "data-label": "runtime" }, a ? a.runtime : "–"),
      h("td", { class: "num", "data-label": "accuracy drop" }, a ? pct(a.accuracy_drop) : "–"),
      h("td", { class: "num", "data-label": "speedup b1 / bN" }, a ? `${fixed(a.speedup_b1, 2, "x")} / ${fixed(a.speedup_bN, 2, "x")}` +
        (present(a.speedup_decode) ? ` (decode ${fixed(a.speedup_decode, 2, "x")}, ranked by it)` : "") : "–"),
      h("td", { class: "num", "data-label": "size ×" }, a ? fixed(a.size_ratio, 2, "x") : "–")));
  });
  const head = ["candidate", "rung", "status", "runtime", "accuracy drop", "speedup b1 / bN", "size ×"];
  return h("details", { class: "candidates" },
    h("summary", {}, `Search: ${search.candidates.length} candidates in ${Math.round(search.search_s)} s ` +
      `(objective ${search.objective}, budget ${(search.max_accuracy_drop * 100).toFixed(2).replace(/\.?0+$/, "")} pt; validated on ${search.validation})`),
    h("div", { class: "table-wrap" },
      h("table", { class: "results cards candidates-table" },
        h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows))));
}

export function resultPlots(results) {
  const base = results.baseline;
  const rows = rowsOf(results).filter(({ m }) => present(quality(m, base).value));
  const q = quality(base, base).label;
  const point = (r, x, interval) => ({ x, y: quality(r.m, base).value, label: r.n === null ? "original" : String(r.n), name: r.name, baseline: r.n === null, interval });
  const bySize = rows.map((r) => point(r, r.m.size_bytes / 2 ** 20)); // MB as the table counts them (1024²)
  const bySpeed = rows.filter((r) => !r.entry || present(r.entry.speedup_b1))
    .map((r) => point(r, r.entry ? r.entry.speedup_b1 : 1, r.entry && (r.entry.speedup_ci95 || {}).b1));
  const legend = h("ol", { class: "legend", "aria-label": "points" },
    rows.filter((r) => r.n !== null).map((r) => h("li", { value: r.n }, r.name)));
  return h("div", { class: "plots" },
    h("figure", {}, scatter({ title: `${q} against size`, points: bySize, xLabel: "size (MB)", yLabel: q, yCeiling: 1, reference: { x: base.size_bytes / 2 ** 20 } }),
      h("figcaption", {}, `Up and left is better. The open circle is the original.`)),
    h("figure", {}, scatter({ title: `${q} against speedup`, points: bySpeed, xLabel: "speedup at batch 1 (×), 95 % interval as bars", yLabel: q, yCeiling: 1, reference: { x: 1 } }),
      h("figcaption", {}, `Up and right is better. Numbers are the table's rows.`)),
    legend);
}

// what each step says of itself (a search's budget ran out, a runtime was measured, ...), once per step
function stepNotes(results) {
  const several = results.steps.length > 1;
  const notes = results.steps.flatMap((step, i) => (step.notes || []).map((n) => h("li", {}, several ? `step ${i + 1}: ${n}` : n)));
  return notes.length ? h("ul", { class: "notes", "aria-label": "notes" }, notes) : null;
}

// a structured pruning step whose ratios were chosen by sensitivity (scope: sensitivity): each channel
// group's measured error at each ratio tried, the ratio it got (with a bar), the target and what was reached
function allocationTables(results) {
  return results.steps.filter((step) => step.details && step.details.allocation).map((step) => {
    const a = step.details.allocation;
    const pct = (x) => `${Math.round(x * 100)} %`;
    const head = ["channel group", ...a.ratios_tried.map((r) => `error at ${pct(r)}`), "ratio chosen"];
    const rows = a.groups.map((g) => h("tr", {},
      h("th", { scope: "row", "data-label": head[0] }, g.layer),
      ...g.errors.map((e, j) => h("td", { class: "num", "data-label": head[j + 1] }, present(e) ? fixed(e, 3) : "broke the model")),
      h("td", { class: "num", "data-label": "ratio chosen" },
        h("meter", { min: "0", max: "1", value: String(g.ratio), "aria-hidden": "true" }), ` ${pct(g.ratio)}`)));
    return h("details", { class: "allocation" },
      h("summary", {}, `Pruning by sensitivity: ${a.groups.length} channel groups, ${a.target}; ${a.achieved}`),
      h("div", { class: "table-wrap" },
        h("table", { class: "results cards allocation-table" },
          h("caption", {}, `${a.metric}, on ${a.samples} samples; lower is better`),
          h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows))));
  });
}

export function resultsSection(results, artifacts) {
  return h("div", {},
    results.final ? resultSummary(results, artifacts) : null,
    h("h3", {}, "Every artifact"),
    resultsTable(results, artifacts),
    stepNotes(results),
    resultPlots(results),
    ...allocationTables(results),
    ...results.steps.filter((step) => step.search).map((step) => candidatesTable(step.search)));
}
