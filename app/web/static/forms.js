// Recipe step forms generated from the /v1/methods catalogue (each step's JSON Schema).

import { h } from "./dom.js";

function resolve(schema, root) {
  if (schema && schema.$ref) return resolve(root.$defs[schema.$ref.split("/").pop()], root);
  if (schema && schema.anyOf) {
    const options = schema.anyOf.filter((o) => o.type !== "null");
    if (options.length === 1) return { ...resolve(options[0], root), ...pick(schema, ["default", "description", "title"]) };
  }
  return schema || {};
}

function pick(obj, keys) {
  const out = {};
  for (const k of keys) if (k in obj) out[k] = obj[k];
  return out;
}

// the options a step shows at once; the rest fold under "More options" (required ones always show)
const MAIN = {
  quantize: ["scheme", "max_accuracy_drop"],
  prune: ["kind", "sparsity", "finetune_epochs"],
  distill: ["student", "epochs"],
  export: ["format"],
  auto: ["objective", "max_accuracy_drop", "budget_minutes"],
};

const WORDS = { macs: "MACs", lr: "LR", amp: "mixed precision (AMP)", qat: "QAT" };

// "max_accuracy_drop" -> "Max accuracy drop": what a person reads, the JSON name stays in the help
export function humanLabel(name) {
  const words = name.split("_").map((w) => WORDS[w] || w);
  const text = words.join(" ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function kindOf(field) {
  if (field.enum) return "select";
  if (field.type === "boolean") return "checkbox";
  if (field.type === "integer" || field.type === "number") return "number";
  if (field.type === "string") return "text";
  return "json";
}

// One fieldset per step; `read()` gives the step object, `showError(field, message)` marks a field.
export function stepForm(entry, index, onRemove) {
  const root = entry.schema;
  const id = (name) => `step${index}-${name}`;
  const fields = [];
  const rows = [];
  const more = [];
  const main = new Set(MAIN[entry.method] || []);
  const required = new Set(root.required || []);
  for (const [name, raw] of Object.entries(root.properties)) {
    if (name === "method") continue;
    const field = resolve(raw, root);
    const kind = kindOf(field);
    const help = field.description || raw.description || "";
    const dflt = raw.default !== undefined ? raw.default : field.default;
    let input;
    if (kind === "select") {
      input = h("select", { id: id(name), name },
        required.has(name) ? null : h("option", { value: "" }, `default (${dflt})`),
        field.enum.map((v) => h("option", { value: v }, v)));
    } else if (kind === "checkbox") {
      input = h("input", { id: id(name), name, type: "checkbox", checked: dflt === true });
    } else if (kind === "number") {
      const min = field.minimum ?? field.exclusiveMinimum;
      const max = field.maximum ?? field.exclusiveMaximum;
      input = h("input", {
        id: id(name), name, type: "number", step: field.type === "integer" ? "1" : "any",
        min, max, placeholder: dflt === undefined || dflt === null ? "" : `default ${dflt}`,
      });
    } else if (kind === "text") {
      input = h("input", { id: id(name), name, type: "text", placeholder: dflt ? `default ${dflt}` : "" });
    } else {
      input = h("textarea", { id: id(name), name, rows: 2, placeholder: dflt !== undefined ? JSON.stringify(dflt) : "JSON" });
    }
    const error = h("p", { class: "error field-error", id: id(name) + "-error", role: "alert", hidden: true });
    const helpEl = help ? h("p", { class: "help", id: id(name) + "-help" }, help) : null;
    input.setAttribute("aria-describedby", [helpEl ? id(name) + "-help" : "", id(name) + "-error"].join(" ").trim());
    if (required.has(name)) input.setAttribute("aria-required", "true");
    fields.push({ name, kind, input, error, dflt, required: required.has(name) });
    const row = h("div", { class: kind === "checkbox" ? "field inline" : "field" },
      h("label", { for: id(name) }, humanLabel(name) + (required.has(name) ? " *" : ""),
        h("span", { class: "sub" }, ` ${name}`)), input, helpEl, error);
    (required.has(name) || main.has(name) ? rows : more).push(row);
  }
  const stepError = h("p", { class: "error", role: "alert", hidden: true });
  const fieldset = h("fieldset", { class: "step card", "data-step": index, tabindex: "-1" },
    h("legend", {}, `Step ${index + 1}: ${entry.method}`),
    h("p", { class: "help" }, entry.description),
    rows,
    more.length ? h("details", { class: "options", id: id("more") }, h("summary", {}, `More options (${more.length})`), more) : null,
    stepError,
    h("button", { type: "button", class: "link", onclick: onRemove }, `Remove step ${index + 1}`));

  function read() {
    const step = { method: entry.method };
    for (const f of fields) {
      const v = f.input.value;
      if (f.kind === "checkbox") {
        if (f.input.checked !== (f.dflt === true)) step[f.name] = f.input.checked;
      } else if (v === "") {
        continue;
      } else if (f.kind === "number") {
        step[f.name] = Number(v);
      } else if (f.kind === "json") {
        try { step[f.name] = JSON.parse(v); } catch { throw Object.assign(new Error("not valid JSON"), { field: f.name }); }
      } else {
        step[f.name] = v;
      }
    }
    return step;
  }

  function clearErrors() {
    stepError.hidden = true;
    for (const f of fields) { f.error.hidden = true; f.input.removeAttribute("aria-invalid"); }
  }

  function showError(name, message) {
    const f = fields.find((x) => x.name === name);
    if (!f) { stepError.textContent = message; stepError.hidden = false; return fieldset; }
    f.error.textContent = message;
    f.error.hidden = false;
    f.input.setAttribute("aria-invalid", "true");
    const folded = f.input.closest("details");
    if (folded) folded.open = true;
    return f.input;  // the caller focuses the first field a refusal names
  }

  // the inputs as typed, to rebuild the form after another step is removed
  function values() {
    return Object.fromEntries(fields.map((f) => [f.name, f.kind === "checkbox" ? f.input.checked : f.input.value]));
  }

  function restore(saved) {
    for (const f of fields) {
      if (!(f.name in saved)) continue;
      if (f.kind === "checkbox") f.input.checked = saved[f.name];
      else f.input.value = saved[f.name];
    }
  }

  return { element: fieldset, read, values, restore, clearErrors, showError };
}

// Splits the server's 422 message into per-step, per-field parts: "steps.0.sparsity: ..." or "step 1 (...): ...".
export function placeErrors(message) {
  const parts = [];
  for (const piece of message.split(/;\s(?=steps\.\d|step \d)/)) {
    let m = piece.match(/^steps\.(\d+)\.([a-z_]+)[^:]*:\s*(.*)$/);
    if (m) { parts.push({ step: Number(m[1]), field: m[2], message: m[3] }); continue; }
    m = piece.match(/^step (\d+) \([^)]*\)(?: does not accept|:)\s*(.*)$/);
    if (m) { parts.push({ step: Number(m[1]) - 1, field: null, message: piece }); continue; }
    parts.push({ step: null, field: null, message: piece });
  }
  return parts;
}
