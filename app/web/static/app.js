// The page: sign-in, uploads, the recipe builder, the jobs list and a job's live page. Hash routes:
// #/ uploads, #/new a new job, #/jobs the list, #/jobs/ID one job.

import { ApiError, get, listAll, send, upload } from "./api.js";
import { bytes, fixed, h, statusBadge } from "./dom.js";
import { placeErrors, stepForm } from "./forms.js";
import { resultsSection } from "./results.js";
import { duration, listTable, seconds, shortId, shortWhen } from "./tables.js";

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
      ? ".pt2 (torch.export), TorchScript, ONNX, safetensors with an architecture, a zipped Hugging Face checkpoint, a language model as .gguf, or OpenVINO IR (zipped)."
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

const uploadSort = { models: { key: "created", dir: "descending" }, datasets: { key: "created", dir: "descending" } };

function uploadsTable(kind, rows) {
  if (!rows.length) return h("p", { class: "help" }, `No ${kind} yet.`);
  const columns = [
    { key: "name", label: "name", value: (r) => r.name.toLowerCase(), cell: (r) => r.name },
    { key: "format", label: "format", value: (r) => r.format, cell: (r) => r.format },
    { key: "size", label: "size", value: (r) => r.size_bytes, cell: (r) => bytes(r.size_bytes), num: true },
    { key: "created", label: "uploaded", value: (r) => r.created_at, cell: (r) => shortWhen(r.created_at) },
    { key: "id", label: "id", cell: (r) => shortId(r.id) },
    { key: "status", label: "status", value: (r) => r.status, cell: (r) => statusBadge(r.status) },
    { key: "details", label: "details", cell: (r) => (r.status === "invalid" ? h("span", { class: "error" }, r.error ? r.error.message : "invalid") : describe(kind, r)) },
    { key: "actions", label: "actions", cell: (r) => h("button", { type: "button", class: "link", onclick: () => remove(kind, r) }, `Delete ${r.name}`) },
  ];
  return listTable({
    id: `${kind}-table`, caption: kind === "models" ? "Models" : "Datasets", columns, rows, state: uploadSort[kind],
    onSort: (state) => { uploadSort[kind] = state; lists[kind].replaceChildren(uploadsTable(kind, rows)); },
    rowAttrs: (r) => ({ "data-id": r.id }),
  });
}

// how a model or dataset is named in a menu: enough to tell look-alikes apart
function optionLabel(r) {
  return `${r.name} · ${r.format} · ${bytes(r.size_bytes)} · ${shortWhen(r.created_at)} · …${r.id.slice(-6)}`;
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

const newest = (rows) => [...rows].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));

// Which field a refusal of the whole job concerns, from its code and message (step fields are placed by
// placeErrors): the dataset when a step needs data or labels, the model when it is not ready or not found.
function fieldOf(error) {
  const text = `${error.code} ${error.message}`;
  if (/^dataset_|dataset_id|dataset has no|add a dataset|\bdataset\b.*not found/.test(text)) return "job-dataset";
  if (/^model_|\bmodel\b.*(not found|still being inspected|invalid)/.test(text)) return "job-model";
  return null;
}

// The page opens on the goal (faster, smaller or both within N points: an `auto` search, or the int8 preset
// when there is no dataset to check accuracy on); the full recipe builder is one click away.
async function newJobView(startIn = "goal") {
  show(h("h2", {}, "New job"), h("p", { class: "help" }, "Loading…"));
  let models, datasets;
  try {
    [catalogue, models, datasets] = await Promise.all([
      catalogue || get("/v1/methods").then((body) => body.methods), listAll("/v1/models"), listAll("/v1/datasets"),
    ]);
  } catch (e) { show(h("h2", {}, "New job"), errorBox(e)); return; }
  const readyModels = newest(models.filter((r) => r.status === "ready"));
  const readyData = newest(datasets.filter((r) => r.status === "ready"));
  if (!readyModels.length) {
    show(h("h2", {}, "New job"), h("p", {}, "There is no model ready yet: ", h("a", { href: "#/" }, "upload one"), " first."));
    return;
  }
  const fieldErrors = {};
  const field = (id, label, input, help) => {
    fieldErrors[id] = h("p", { class: "error field-error", id: `${id}-error`, role: "alert", hidden: true });
    const helpEl = help ? h("p", { class: "help", id: `${id}-help` }, help) : null;
    input.setAttribute("aria-describedby", [helpEl ? `${id}-help` : "", `${id}-error`].join(" ").trim());
    return h("div", { class: "field" }, h("label", { for: id }, label), input, helpEl, fieldErrors[id]);
  };
  const select = (id, rows, { none, selected }) => h("select", { id },
    none ? h("option", { value: "", selected: !selected }, none) : null,
    rows.map((r) => h("option", { value: r.id, selected: r.id === selected }, optionLabel(r))));
  const modelSelect = select("job-model", readyModels, {});
  const datasetSelect = select("job-dataset", readyData, { none: "none", selected: readyData.length ? readyData[0].id : null });
  const evalSelect = select("job-eval-dataset", readyData, { none: "the same dataset" });
  const deviceSelect = h("select", { id: "job-device" }, ["auto", "cpu", "cuda"].map((d) => h("option", { value: d }, d)));
  const nameInput = h("input", { id: "job-name", type: "text", placeholder: "optional" });

  // ---- the goal
  const goals = [["latency", "faster"], ["size", "smaller"], ["balanced", "both: faster and smaller"]];
  const goalBox = h("fieldset", { class: "goal" }, h("legend", {}, "Make it"),
    h("div", { class: "choices" }, goals.map(([value, label], i) => h("label", {},
      h("input", { type: "radio", name: "goal", value, id: `goal-${value}`, checked: i === 0 }), label))));
  const dropInput = h("input", { id: "goal-drop", type: "number", min: "0.1", max: "50", step: "0.1", value: "1", required: true });
  const budgetInput = h("input", { id: "goal-budget", type: "number", min: "0.1", max: "1440", step: "any", value: "15", required: true });
  const plan = h("p", { class: "help", id: "goal-plan", "aria-live": "polite" });
  const goalPane = h("div", { id: "goal-pane" }, goalBox,
    h("div", { class: "grid" },
      field("goal-drop", "Keep accuracy within (points)", dropInput,
        "1 = one point of accuracy (of agreement with the original when the dataset has no labels)."),
      field("goal-budget", "Time budget (minutes)", budgetInput, "When it runs out, the best result found so far is returned.")),
    plan);
  const goal = () => goalBox.querySelector("input:checked").value;
  function describePlan() {
    plan.textContent = datasetSelect.value
      ? `Squeeze searches quantization, pruning and distillation and their combinations on this machine for up to ${budgetInput.value || "?"} minutes, measures every candidate against the original, and recommends the ${goal() === "latency" ? "fastest" : goal() === "size" ? "smallest" : "best balanced"} one that keeps accuracy within ${dropInput.value || "?"} point${dropInput.value === "1" ? "" : "s"}.`
      : "Without a dataset the search cannot check accuracy, so this submits int8 dynamic quantization (the int8 preset), measured against the original by agreement on generated inputs. Upload a dataset to let the search run.";
  }
  for (const el of [goalBox, dropInput, budgetInput, datasetSelect]) el.addEventListener("input", describePlan);
  describePlan();

  function goalRecipe() {
    if (!datasetSelect.value) return { steps: [{ method: "quantize", scheme: "int8_dynamic" }] };
    const points = Number(dropInput.value), minutes = Number(budgetInput.value);
    if (!(points >= 0.1 && points <= 50)) throw Object.assign(new Error("give the accuracy you may lose in points, between 0.1 and 50"), { field: "goal-drop" });
    if (!(minutes > 0)) throw Object.assign(new Error("give a time budget in minutes, more than 0"), { field: "goal-budget" });
    return { steps: [{ method: "auto", objective: goal(), max_accuracy_drop: Number((points / 100).toPrecision(6)), budget_minutes: minutes }] };
  }

  // ---- the recipe builder
  const steps = [];
  const stepsBox = h("div", { id: "steps" });
  const methodSelect = h("select", { id: "add-method" }, catalogue.map((m) => h("option", { value: m.method }, m.method)));
  const json = h("textarea", { id: "recipe-json", rows: 8, "aria-describedby": "recipe-json-help" });
  const recipeMode = { value: "form" };
  const formPane = h("div", { id: "recipe-form" }, stepsBox,
    h("div", { class: "field inline" }, h("label", { for: "add-method" }, "Add a step"), methodSelect,
      h("button", { type: "button", id: "add-step", onclick: () => addStep(methodSelect.value) }, "Add step")));
  const jsonPane = h("div", { id: "recipe-json-pane", hidden: true },
    h("label", { for: "recipe-json" }, "Recipe (JSON)"), json,
    h("p", { class: "help", id: "recipe-json-help" }, 'For example {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}'));
  const jsonToggle = h("button", { type: "button", class: "link", onclick: () => switchJson() }, "Paste JSON instead");
  const builderPane = h("div", { id: "builder-pane" }, h("h3", {}, "Recipe"), jsonToggle, formPane, jsonPane);

  function removeStep(index) {
    const kept = steps.splice(0).filter((_, i) => i !== index).map((st) => ({ method: st.method, values: st.form.values() }));
    stepsBox.replaceChildren();
    kept.forEach((st) => addStep(st.method, st.values));
  }

  function addStep(method, values) {
    const entry = catalogue.find((m) => m.method === method);
    const index = steps.length;
    const stepEl = stepForm(entry, index, () => removeStep(index));
    if (values) stepEl.restore(values);
    steps.push({ method, form: stepEl });
    stepsBox.append(stepEl.element);
  }

  function builderRecipe() {
    if (recipeMode.value === "json") {
      try { return JSON.parse(json.value); } catch (e) { throw new Error(`the recipe is not valid JSON: ${e.message}`); }
    }
    return { steps: steps.map((st, i) => { try { return st.form.read(); } catch (e) { e.step = i; throw e; } }) };
  }

  function switchJson() {
    if (recipeMode.value === "form") {
      try { json.value = JSON.stringify(builderRecipe(), null, 2); } catch { json.value = '{"steps": []}'; }
      recipeMode.value = "json"; formPane.hidden = true; jsonPane.hidden = false; jsonToggle.textContent = "Use the form instead";
    } else {
      recipeMode.value = "form"; formPane.hidden = false; jsonPane.hidden = true; jsonToggle.textContent = "Paste JSON instead";
    }
  }

  // ---- one form, two ways in
  const mode = { value: startIn };
  const modeToggle = h("button", { type: "button", class: "link", id: "mode-toggle", onclick: () => setMode(mode.value === "goal" ? "recipe" : "goal") });
  function setMode(value) {
    mode.value = value;
    goalPane.hidden = value !== "goal";
    builderPane.hidden = value === "goal";
    modeToggle.textContent = value === "goal" ? "Build the recipe yourself (every method and option)" : "Back to the simple form (say the goal)";
    if (value === "recipe" && !steps.length) addStep(catalogue[0].method);
  }
  const formError = h("div", { role: "alert", id: "job-error" });
  const submit = h("button", { type: "submit", id: "submit-job" }, "Submit job");
  const form = h("form", { class: "card", id: "job-form", novalidate: true },
    h("div", { class: "grid" },
      field("job-model", "Model", modelSelect),
      field("job-dataset", "Dataset", datasetSelect, "Calibrates, trains and scores the result. Labels optional."),
      field("job-name", "Name", nameInput)),
    h("details", { class: "options", id: "job-more" }, h("summary", {}, "More options: device, evaluation dataset"),
      h("div", { class: "grid" },
        field("job-device", "Device", deviceSelect, "auto: a GPU worker when there is one, else the CPU."),
        field("job-eval-dataset", "Evaluation dataset", evalSelect, "Scored on this one instead, when given."))),
    h("p", {}, modeToggle),
    goalPane, builderPane,
    h("div", { class: "submit-row" }, submit, formError));
  setMode(startIn);

  function clearErrors() {
    formError.replaceChildren();
    for (const [id, el] of Object.entries(fieldErrors)) { el.hidden = true; form.querySelector(`#${id}`).removeAttribute("aria-invalid"); }
    steps.forEach((st) => st.form.clearErrors());
  }

  function markField(id, message) {
    const el = fieldErrors[id];
    el.textContent = message;
    el.hidden = false;
    const input = form.querySelector(`#${id}`);
    input.setAttribute("aria-invalid", "true");
    if (id === "job-device" || id === "job-eval-dataset") form.querySelector("#job-more").open = true;
    return input;
  }

  // the refusal beside Submit, each part with a button that goes to the field it concerns
  function summarise(parts) {
    formError.replaceChildren(h("div", { class: "error" },
      h("p", {}, parts.length === 1 ? "The job was not submitted:" : `The job was not submitted (${parts.length} problems):`),
      h("ul", {}, parts.map((part) => h("li", {}, part.message,
        part.input ? [" ", h("button", { type: "button", class: "link", onclick: () => part.input.focus() }, `go to ${part.where}`)] : null)))));
    const first = parts.find((part) => part.input);
    if (first) first.input.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    let body;
    try {
      body = { model_id: modelSelect.value, recipe: mode.value === "goal" ? goalRecipe() : builderRecipe(), device: deviceSelect.value };
    } catch (e) {
      if (e.step !== undefined && e.field !== undefined) {
        const input = steps[e.step].form.showError(e.field, e.message);
        summarise([{ message: `step ${e.step + 1}, ${e.field}: ${e.message}`, input, where: `step ${e.step + 1}` }]);
      } else if (e.field) {
        summarise([{ message: e.message, input: markField(e.field, e.message), where: "the field" }]);
      } else summarise([{ message: e.message }]);
      return;
    }
    for (const [key, el] of [["dataset_id", datasetSelect], ["eval_dataset_id", evalSelect], ["name", nameInput]]) {
      if (el.value) body[key] = el.value;
    }
    submit.disabled = true;
    try {
      const job = await send("POST", "/v1/jobs", body);
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) { summarise([{ message: String(e) }]); return; }
      const parts = [];
      const pieces = e.status === 422 ? placeErrors(e.message) : [{ step: null, field: null, message: e.message }];
      for (const piece of pieces) {
        const text = `${piece.message} (${e.code})`;
        const shared = fieldOf({ code: e.code, message: piece.message }); // the model or the dataset field
        // the goal form submits one auto step: its fields are the goal's
        const goalField = mode.value === "goal" ? { max_accuracy_drop: "goal-drop", budget_minutes: "goal-budget" }[piece.field] : null;
        if (goalField) {
          parts.push({ message: text, input: markField(goalField, piece.message), where: "the field" });
        } else if (shared && !piece.field) {
          parts.push({ message: text, input: markField(shared, piece.message), where: shared === "job-dataset" ? "Dataset" : "Model" });
        } else if (piece.step !== null && steps[piece.step] && mode.value === "recipe" && recipeMode.value === "form") {
          const input = steps[piece.step].form.showError(piece.field, piece.message);
          parts.push({ message: `step ${piece.step + 1}: ${text}`, input, where: `step ${piece.step + 1}` });
        } else {
          parts.push({ message: text });
        }
      }
      summarise(parts);
    } finally {
      submit.disabled = false;
    }
  });
  show(h("h2", {}, "New job"), form);
}

// ------------------------------------------------------------------ jobs

const jobsState = { sort: { key: "created", dir: "descending" }, status: "" };
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

async function jobsView() {
  const box = h("div", { id: "jobs-list" });
  const filter = h("select", { id: "jobs-status" }, h("option", { value: "" }, "any"),
    STATUSES.map((st) => h("option", { value: st, selected: st === jobsState.status }, st)));
  filter.addEventListener("change", () => { jobsState.status = filter.value; render(); });
  show(h("h2", {}, "Jobs"),
    h("div", { class: "toolbar" }, h("a", { href: "#/new", class: "button" }, "New job"),
      h("div", { class: "field inline" }, h("label", { for: "jobs-status" }, "Status"), filter)),
    box);
  let modelNames = {};
  let jobs = [];
  const columns = [
    { key: "name", label: "job", value: (j) => (j.name || j.id).toLowerCase(),
      cell: (j) => h("a", { href: `#/jobs/${j.id}` }, j.name || shortId(j.id), j.name ? h("span", { class: "sub" }, " ", shortId(j.id)) : null) },
    { key: "model", label: "model", value: (j) => modelNames[j.model_id] || j.model_id, cell: (j) => modelNames[j.model_id] || shortId(j.model_id) },
    { key: "recipe", label: "recipe", value: (j) => j.recipe_summary, cell: (j) => j.recipe_summary },
    { key: "status", label: "status", value: (j) => j.status, cell: (j) => [statusBadge(j.status),
      j.status === "running" ? h("span", { class: "sub" }, ` ${Math.round((j.progress || 0) * 100)} % ${j.stage || ""}`) : null] },
    { key: "created", label: "created", value: (j) => j.created_at, cell: (j) => shortWhen(j.created_at) },
    { key: "duration", label: "duration", num: true, value: (j) => duration(j.started_at, j.finished_at), cell: (j) => seconds(duration(j.started_at, j.finished_at)) },
    { key: "speedup", label: "speedup b1", num: true, value: (j) => (j.headline ? j.headline.speedup_b1 : null), cell: (j) => (j.headline ? fixed(j.headline.speedup_b1, 2, "x") : "–") },
    { key: "size", label: "size ×", num: true, value: (j) => (j.headline ? j.headline.size_ratio : null), cell: (j) => (j.headline ? fixed(j.headline.size_ratio, 2, "x") : "–") },
    { key: "verdict", label: "verdict", value: (j) => (j.headline ? j.headline.verdict : null),
      cell: (j) => (j.headline ? h("span", { class: `badge ${j.headline.verdict}` }, j.headline.verdict.replaceAll("_", " ")) : "–") },
  ];
  const draw = () => box.replaceChildren(jobs.length ? listTable({
    id: "jobs-table", caption: "The newest 100 jobs, refreshed every 2 s. Speedup and size × are the final artifact's (succeeded jobs).", columns, rows: jobs, state: jobsState.sort,
    onSort: (state) => { jobsState.sort = state; draw(); },
  }) : h("p", { class: "help" }, jobsState.status ? `No ${jobsState.status} jobs.` : "No jobs yet."));
  let shown = null; // what the table shows now: redrawn only when that changes, so focus and reading stay put
  let asked = 0;
  async function render() {
    const ask = ++asked, status = jobsState.status;
    try {
      const page = await get(`/v1/jobs?limit=100${status ? `&status=${status}` : ""}`);
      if (ask !== asked) return; // a newer request (another filter) answers instead
      if (page.items.some((j) => !(j.model_id in modelNames))) {
        modelNames = Object.fromEntries((await listAll("/v1/models")).map((m) => [m.id, m.name]));
      }
      const now = JSON.stringify([status, page.items]);
      if (now === shown) return;
      shown = now;
      jobs = page.items;
      draw();
    } catch (e) { box.replaceChildren(errorBox(e)); shown = null; }
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
  const about = h("p", { id: "job-about", class: "help" });
  show(title, h("div", { class: "card" }, about, h("p", {}, "Status: ", status), bar, stage, cancel, error),
    results, h("details", {}, h("summary", {}, "Log"), log));

  let modelName = null;
  async function refresh() {
    let job;
    try { job = await get(`/v1/jobs/${id}`); } catch (e) { error.replaceChildren(errorBox(e)); return; }
    if (job.name) title.textContent = `Job ${job.name}`;
    const took = duration(job.started_at, job.finished_at);
    if (!modelName) modelName = await get(`/v1/models/${job.model_id}`).then((m) => m.name, () => job.model_id);
    about.textContent = `${job.recipe_summary} · model ${modelName} · created ${shortWhen(job.created_at)}` +
      (took !== null ? ` · ${TERMINAL.has(job.status) ? "took" : "running for"} ${seconds(took)}` : "");
    status.replaceChildren(statusBadge(job.status));
    bar.value = job.progress || 0;
    stage.textContent = job.stage || "";
    cancel.hidden = TERMINAL.has(job.status);
    if (job.error) error.replaceChildren(h("p", { class: "error", role: "alert" }, `${job.error.message} (${job.error.code})`));
    if (job.results && job.results.baseline) results.replaceChildren(h("h3", {}, "Results"), resultsSection(job.results, job.artifacts));
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
  if (hash === "#/new") return newJobView("goal");
  if (hash === "#/new/recipe") return newJobView("recipe");
  return uploadsView();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await send("POST", "/ui/session/delete").catch(() => {});
  location.href = "/";
});
window.addEventListener("hashchange", route);
route();
