// The page: sign-in, uploads, the recipe builder, the jobs list and a job's live page. Hash routes:
// #/ uploads, #/new a new job, #/jobs the list, #/jobs/ID one job.

import { ApiError, get, listAll, send, upload } from "./api.js";
import { bytes, h, statusBadge, when } from "./dom.js";
import { placeErrors, stepForm } from "./forms.js";
import { resultPlots, resultsTable } from "./results.js";

const view = document.getElementById("view");
let leave = () => {}; // stops the timers and streams of the view being left

function show(...children) {
  leave();
  leave = () => {};
  view.replaceChildren(...children);
  const heading = view.querySelector("h2");
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  const previous = leave;
  leave = () => { previous(); clearInterval(timer); };
}

function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof ApiError ? `${error.message} (${error.code})` : String(error));
}

// ------------------------------------------------------------------ uploads

function uploadForm(kind) {
  const isModel = kind === "models";
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": `${kind} upload progress` });
  const message = h("p", { role: "status", class: "help" });
  const file = h("input", { type: "file", id: `${kind}-file`, name: "file", required: true });
  const name = h("input", { type: "text", id: `${kind}-name`, name: "name", placeholder: "optional" });
  const shape = isModel ? h("input", { type: "text", id: "models-shape", name: "input_shape", placeholder: "[1, 3, 224, 224] (optional)" }) : null;
  const button = h("button", { type: "submit" }, `Upload ${isModel ? "model" : "dataset"}`);
  const form = h("form", { class: "card", id: `upload-${kind}` },
    h("h3", {}, isModel ? "Upload a model" : "Upload a dataset"),
    h("p", { class: "help" }, isModel
      ? ".pt2 (torch.export), TorchScript, ONNX, safetensors with an architecture, or a zipped Hugging Face checkpoint."
      : ".npz or .safetensors with x (and optional integer labels y), or a .zip with one folder per class."),
    h("div", { class: "field" }, h("label", { for: `${kind}-file` }, "File"), file),
    h("div", { class: "field" }, h("label", { for: `${kind}-name` }, "Name"), name),
    isModel ? h("div", { class: "field" }, h("label", { for: "models-shape" }, "Input shape"), shape) : null,
    button, bar, message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const data = new FormData();
    data.append("file", file.files[0]);
    if (name.value) data.append("name", name.value);
    if (shape && shape.value) data.append("input_shape", shape.value);
    button.disabled = true;
    bar.hidden = false;
    message.className = "help";
    message.textContent = "Uploading…";
    try {
      const row = await upload(`/v1/${kind}`, data, (f) => { bar.value = f; message.textContent = `Uploading… ${Math.round(f * 100)} %`; });
      message.textContent = `Uploaded ${row.name} (${row.id}); a worker is inspecting it.`;
      form.reset();
      renderUploads();
    } catch (e) {
      message.className = "error";
      message.textContent = `${e.message} (${e.code})`;
    } finally {
      button.disabled = false;
      bar.hidden = true;
    }
  });
  return form;
}

function uploadsTable(kind, rows) {
  if (!rows.length) return h("p", { class: "help" }, `No ${kind} yet.`);
  return h("div", { class: "table-wrap" }, h("table", { id: `${kind}-table` },
    h("caption", {}, kind === "models" ? "Models" : "Datasets"),
    h("thead", {}, h("tr", {}, ["name", "id", "format", "size", "status", "details", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-id": r.id },
      h("th", { scope: "row" }, r.name),
      h("td", {}, h("code", {}, r.id)),
      h("td", {}, r.format),
      h("td", { class: "num" }, bytes(r.size_bytes)),
      h("td", {}, statusBadge(r.status)),
      h("td", {}, r.status === "invalid" ? h("span", { class: "error" }, r.error ? r.error.message : "invalid") : describe(kind, r)),
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => remove(kind, r) }, `Delete ${r.name}`)))))));
}

function describe(kind, r) {
  const info = r.info || {};
  if (kind === "models") return info.params ? `${info.params.toLocaleString()} params, input ${JSON.stringify(info.input ? info.input.shape : "?")}` : "";
  return info.samples ? `${info.samples} samples ${JSON.stringify(info.sample_shape)}${info.labels ? `, ${info.num_classes} classes` : ", no labels"}` : "";
}

async function remove(kind, row) {
  if (!confirm(`Delete ${row.name}?`)) return;
  try { await send("DELETE", `/v1/${kind}/${row.id}`); } catch (e) { alert(e.message); }
  renderUploads();
}

const lists = { models: h("div", { id: "models-list" }), datasets: h("div", { id: "datasets-list" }) };

async function renderUploads() {
  for (const kind of ["models", "datasets"]) {
    try { lists[kind].replaceChildren(uploadsTable(kind, await listAll(`/v1/${kind}`))); }
    catch (e) { lists[kind].replaceChildren(errorBox(e)); }
  }
}

function uploadsView() {
  show(h("h2", {}, "Uploads"),
    h("div", { class: "grid" }, uploadForm("models"), uploadForm("datasets")),
    lists.models, lists.datasets);
  renderUploads();
  every(2000, async () => {
    // refresh while something is still being inspected
    if (view.querySelector(".badge.pending")) renderUploads();
  });
}

// ------------------------------------------------------------------ a new job

let catalogue = null;

async function newJobView() {
  show(h("h2", {}, "New job"), h("p", { class: "help" }, "Loading…"));
  let models, datasets;
  try {
    [catalogue, models, datasets] = await Promise.all([
      catalogue || get("/v1/methods").then((body) => body.methods), listAll("/v1/models"), listAll("/v1/datasets"),
    ]);
  } catch (e) { show(h("h2", {}, "New job"), errorBox(e)); return; }
  const ready = (rows) => rows.filter((r) => r.status === "ready");
  const choose = (id, label, rows, optional) => h("div", { class: "field" },
    h("label", { for: id }, label),
    h("select", { id, required: !optional },
      optional ? h("option", { value: "" }, "none") : null,
      ready(rows).map((r) => h("option", { value: r.id }, `${r.name} (${r.format || r.id})`))));
  const steps = [];
  const stepsBox = h("div", { id: "steps" });
  const methodSelect = h("select", { id: "add-method" }, catalogue.map((m) => h("option", { value: m.method }, m.method)));
  const json = h("textarea", { id: "recipe-json", rows: 8, "aria-describedby": "recipe-json-help" });
  const mode = { value: "form" };
  const formPane = h("div", { id: "recipe-form" }, stepsBox,
    h("div", { class: "field inline" }, h("label", { for: "add-method" }, "Add a step"), methodSelect,
      h("button", { type: "button", id: "add-step", onclick: () => addStep(methodSelect.value) }, "Add step")));
  const jsonPane = h("div", { id: "recipe-json-pane", hidden: true },
    h("label", { for: "recipe-json" }, "Recipe (JSON)"), json,
    h("p", { class: "help", id: "recipe-json-help" }, 'For example {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}'));
  const toggle = h("button", { type: "button", class: "link", onclick: () => switchMode() }, "Paste JSON instead");
  const formError = h("div", { role: "alert", id: "job-error" });
  const submit = h("button", { type: "submit", id: "submit-job" }, "Submit job");

  function removeStep(index) {
    const kept = steps.splice(0).filter((_, i) => i !== index).map((s) => ({ method: s.method, values: s.form.values() }));
    stepsBox.replaceChildren();
    kept.forEach((s) => addStep(s.method, s.values));
  }

  function addStep(method, values) {
    const entry = catalogue.find((m) => m.method === method);
    const index = steps.length;
    const form = stepForm(entry, index, () => removeStep(index));
    if (values) form.restore(values);
    steps.push({ method, form });
    stepsBox.append(form.element);
  }

  function recipe() {
    if (mode.value === "json") {
      try { return JSON.parse(json.value); } catch (e) { throw new Error(`the recipe is not valid JSON: ${e.message}`); }
    }
    return {
      steps: steps.map((s, i) => {
        try { return s.form.read(); } catch (e) { e.step = i; throw e; }
      }),
    };
  }

  function switchMode() {
    if (mode.value === "form") {
      try { json.value = JSON.stringify(recipe(), null, 2); } catch { json.value = '{"steps": []}'; }
      mode.value = "json"; formPane.hidden = true; jsonPane.hidden = false; toggle.textContent = "Use the form instead";
    } else {
      mode.value = "form"; formPane.hidden = false; jsonPane.hidden = true; toggle.textContent = "Paste JSON instead";
    }
  }

  const form = h("form", { class: "card", id: "job-form" },
    h("div", { class: "grid" },
      choose("job-model", "Model", models, false),
      choose("job-dataset", "Dataset (calibration, training, accuracy)", datasets, true),
      choose("job-eval-dataset", "Evaluation dataset", datasets, true),
      h("div", { class: "field" }, h("label", { for: "job-device" }, "Device"),
        h("select", { id: "job-device" }, ["auto", "cpu", "cuda"].map((d) => h("option", { value: d }, d)))),
      h("div", { class: "field" }, h("label", { for: "job-name" }, "Name"), h("input", { id: "job-name", type: "text", placeholder: "optional" }))),
    h("h3", {}, "Recipe"), toggle, formPane, jsonPane, formError, submit);
  addStep(catalogue[0].method);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.replaceChildren();
    steps.forEach((s) => s.form.clearErrors());
    let body;
    try {
      body = {
        model_id: form.querySelector("#job-model").value,
        recipe: recipe(),
        device: form.querySelector("#job-device").value,
      };
    } catch (e) {
      if (e.field !== undefined) steps[e.step].form.showError(e.field, e.message);
      else formError.replaceChildren(errorBox(e));
      return;
    }
    for (const [key, id] of [["dataset_id", "#job-dataset"], ["eval_dataset_id", "#job-eval-dataset"], ["name", "#job-name"]]) {
      const v = form.querySelector(id).value;
      if (v) body[key] = v;
    }
    submit.disabled = true;
    try {
      const job = await send("POST", "/v1/jobs", body);
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      if (e.status === 422 && mode.value === "form") {
        const unplaced = [];
        for (const part of placeErrors(e.message)) {
          if (part.step !== null && steps[part.step]) steps[part.step].form.showError(part.field, part.message);
          else unplaced.push(part.message);
        }
        if (unplaced.length) formError.replaceChildren(errorBox(new ApiError(422, e.code, unplaced.join("; "))));
      } else {
        formError.replaceChildren(errorBox(e));
      }
    } finally {
      submit.disabled = false;
    }
  });
  show(h("h2", {}, "New job"), form);
}

// ------------------------------------------------------------------ jobs

async function jobsView() {
  const box = h("div", { id: "jobs-list" });
  show(h("h2", {}, "Jobs"), h("p", {}, h("a", { href: "#/new", class: "button" }, "New job")), box);
  async function render() {
    try {
      const jobs = (await get("/v1/jobs?limit=100")).items;
      box.replaceChildren(jobs.length ? h("div", { class: "table-wrap" }, h("table", { id: "jobs-table" },
        h("caption", {}, "Newest first; refreshed every 2 s"),
        h("thead", {}, h("tr", {}, ["job", "status", "progress", "stage", "created"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, jobs.map((j) => h("tr", {},
          h("th", { scope: "row" }, h("a", { href: `#/jobs/${j.id}` }, j.name || j.id)),
          h("td", {}, statusBadge(j.status)),
          h("td", {}, h("progress", { max: 1, value: j.progress || 0, "aria-label": `progress of ${j.id}` })),
          h("td", {}, j.stage || ""),
          h("td", {}, when(j.created_at))))))) : h("p", { class: "help" }, "No jobs yet."));
    } catch (e) { box.replaceChildren(errorBox(e)); }
  }
  render();
  every(2000, render);
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

async function jobView(id) {
  const status = h("span", { id: "job-status" });
  const bar = h("progress", { id: "job-progress", max: 1, value: 0, "aria-label": "job progress" });
  const stage = h("p", { id: "job-stage", "aria-live": "polite" });
  const error = h("div", { id: "job-failure" });
  const log = h("ol", { id: "job-log", class: "log" });
  const results = h("div", { id: "job-results" });
  const cancel = h("button", { type: "button", id: "cancel-job", onclick: async () => {
    try { await send("POST", `/v1/jobs/${id}/cancel`); } catch (e) { error.replaceChildren(errorBox(e)); }
  } }, "Cancel job");
  const title = h("h2", {}, `Job ${id}`);
  show(title, h("div", { class: "card" }, h("p", {}, "Status: ", status), bar, stage, cancel, error),
    results, h("details", {}, h("summary", {}, "Log"), log));

  async function refresh() {
    let job;
    try { job = await get(`/v1/jobs/${id}`); } catch (e) { error.replaceChildren(errorBox(e)); return; }
    if (job.name) title.textContent = `Job ${job.name}`;
    status.replaceChildren(statusBadge(job.status));
    bar.value = job.progress || 0;
    stage.textContent = job.stage || "";
    cancel.hidden = TERMINAL.has(job.status);
    if (job.error) error.replaceChildren(h("p", { class: "error", role: "alert" }, `${job.error.message} (${job.error.code})`));
    if (job.results) results.replaceChildren(h("h3", {}, "Results"), resultsTable(job.results, job.artifacts), resultPlots(job.results));
  }

  await refresh();
  const stream = new EventSource(`/v1/jobs/${id}/events`);
  const on = (kind, fn) => stream.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  on("progress", (d) => { bar.value = d.progress; if (d.stage) stage.textContent = d.stage; });
  on("stage", (d) => {
    if (d.progress !== null && d.progress !== undefined) bar.value = d.progress;
    stage.textContent = d.stage;
    log.append(h("li", {}, d.stage));
  });
  on("log", (d) => log.append(h("li", { class: "log-line" }, d.message)));
  // a search found a new front: its results are stored at the worker's next heartbeat, then shown
  on("front", () => setTimeout(refresh, 1000));
  on("status", async (d) => {
    status.replaceChildren(statusBadge(d.status));
    if (TERMINAL.has(d.status)) { stream.close(); await refresh(); }
  });
  const previous = leave;
  leave = () => { previous(); stream.close(); };
}

// ------------------------------------------------------------------ session and routing

async function signedIn() {
  try { const me = await get("/ui/session"); return me.tenant ? me : null; } catch { return null; }
}

async function route() {
  const me = await signedIn();
  document.getElementById("signin").hidden = !!me;
  document.getElementById("nav").hidden = !me;
  if (!me) {
    leave();
    view.replaceChildren();
    document.getElementById("signin-error").hidden = !location.search.includes("signin=failed");
    document.getElementById("api-key").focus();
    return;
  }
  document.getElementById("who").textContent = `tenant ${me.tenant}`;
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/([\w-]+)$/);
  if (job) return jobView(job[1]);
  if (hash === "#/jobs") return jobsView();
  if (hash === "#/new") return newJobView();
  return uploadsView();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await send("POST", "/ui/session/delete").catch(() => {});
  location.href = "/";
});
window.addEventListener("hashchange", route);
route();
