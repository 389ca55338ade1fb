// A list table that tells rows apart: sortable columns (a button in each header, aria-sort on the sorted
// one), every cell labelled so the rows become cards on a phone (app.css, table.cards).

import { h } from "./dom.js";

// columns: [{ key, label, value: row => sortable value, cell: row => content, num, sortable = true }]
// state: { key, dir } kept by the caller, so a refresh keeps the order the person chose
export function listTable({ id, caption, columns, rows, state, onSort, rowAttrs }) {
  // a redraw replaces the header: the sort button that had focus gets it back (keyboard users stay put)
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(`#${id} button.sort`);
  const refocus = focused ? focused.dataset.key : null;
  const sorted = [...rows];
  const col = columns.find((c) => c.key === state.key);
  if (col && col.value) {
    const dir = state.dir === "ascending" ? 1 : -1;
    sorted.sort((a, b) => {
      const x = col.value(a), y = col.value(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1; // empty values last either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
  }
  const header = columns.map((c) => {
    const sorting = c.key === state.key;
    const sortable = c.sortable !== false && !!c.value;
    const th = h("th", { scope: "col", "aria-sort": sorting ? state.dir : null, class: [c.num ? "num" : "", sortable ? "" : "unsorted"].join(" ").trim() || null });
    if (!sortable) th.append(c.label);
    else {
      th.append(h("button", { type: "button", class: "sort", "data-key": c.key, onclick: () => {
        const dir = sorting && state.dir === "descending" ? "ascending" : "descending";
        onSort({ key: c.key, dir });
      } }, c.label, sorting ? h("span", { "aria-hidden": "true" }, state.dir === "ascending" ? " ▲" : " ▼") : ""));
    }
    return th;
  });
  const wrap = h("div", { class: "table-wrap" }, h("table", { id, class: "list cards" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, header)),
    h("tbody", {}, sorted.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {},
      columns.map((c, i) => h(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, "data-label": c.label || null, class: c.num ? "num" : null }, c.cell(r))))))));
  if (refocus) queueMicrotask(() => { const b = document.querySelector(`#${id} button.sort[data-key="${refocus}"]`); if (b) b.focus(); });
  return wrap;
}

export function shortId(id) {
  // ids are prefix_ + 12 hex of time + 12 random hex: the random tail tells rows apart
  const [prefix, rest] = id.split("_");
  return rest ? h("code", { title: id }, `${prefix}_…${rest.slice(-6)}`) : h("code", {}, id);
}

export function duration(startIso, endIso) {
  if (!startIso) return null;
  const ms = (endIso ? new Date(endIso) : new Date()) - new Date(startIso);
  return Math.max(0, ms / 1000);
}

export function seconds(x) {
  if (x === null || x === undefined) return "–";
  if (x < 60) return `${Math.round(x)} s`;
  if (x < 3600) return `${Math.floor(x / 60)} min ${Math.round(x % 60)} s`;
  return `${Math.floor(x / 3600)} h ${Math.round((x % 3600) / 60)} min`;
}

export function shortWhen(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "–";
}
