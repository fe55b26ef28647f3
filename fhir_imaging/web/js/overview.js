// The overview: studies per month by modality over twelve months (a stacked SVG chart, chart.js) and studies by
// status. Every number is a _summary=count search; they go to the server together, as the GET entries of one batch
// Bundle (which reads without taking the write lock).

import { stackedBars } from "./chart.js";
import { h, replace } from "./dom.js";
import { answerError, entries, fhirBase, fhirGet, fhirUrl, FhirError, outcomeMessage, requestHeaders } from "./fhir.js";
import { localMidnight } from "./format.js";
import { go } from "./router.js";
import { failure, loading } from "./status.js";
import { MODALITIES, STATUSES } from "./worklist-query.js";

/** Twelve months "YYYY-MM" ending with ``last``. */
export function monthsEnding(last, count = 12) {
  const [year, month] = last.split("-").map(Number);
  const out = [];
  for (let i = count - 1; i >= 0; i--) {
    const d = new Date(year, month - 1 - i, 1);
    out.push(`${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`);
  }
  return out;
}

function monthRange(month, months = 1) {
  return [["started", `ge${localMidnight(`${month}-01`)}`], ["started", `lt${nextMonths(month, months)}`]];
}

function nextMonths(month, months) {
  const [year, m] = month.split("-").map(Number);
  const d = new Date(year, m - 1 + months, 1);
  return localMidnight(`${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-01`);
}

/** The counts of several searches (each [type, params]) in one batch request; resolves to numbers, in order. */
export async function countAll(searches, signal) {
  const bundle = {
    resourceType: "Bundle",
    type: "batch",
    entry: searches.map(([type, params]) => {
      const query = new URLSearchParams([...params, ["_summary", "count"]]);
      return { request: { method: "GET", url: `${type}?${query}` } };
    }),
  };
  const response = await fetch(`${fhirBase()}/`, {
    method: "POST", signal, credentials: "same-origin",
    headers: requestHeaders({ "Content-Type": "application/fhir+json", Accept: "application/fhir+json" }),
    body: JSON.stringify(bundle),
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw answerError(response.status, outcomeMessage(answer) || response.statusText, answer);
  return (answer.entry || []).map((entry) => {
    if (!entry.resource || entry.resource.resourceType !== "Bundle") {
      throw new FhirError(Number.parseInt(entry.response && entry.response.status, 10) || 0,
        outcomeMessage(entry.resource) || "A count failed", entry.resource);
    }
    return entry.resource.total ?? 0;
  });
}

export function renderOverview(main, params) {
  const controller = new AbortController();
  replace(main, h("h1", {}, "Overview"), loading("Counting…"));
  load(main, params, controller.signal);
  return () => controller.abort();
}

async function latestMonth(signal) {
  const bundle = await fhirGet(fhirUrl("ImagingStudy", [["_sort", "-started"], ["_count", "1"], ["_elements", "started"]]),
    { signal });
  const study = entries(bundle).match[0];
  return study && study.started ? study.started.slice(0, 7) : new Date().toISOString().slice(0, 7);
}

async function load(main, params, signal) {
  try {
    const last = /^\d{4}-\d{2}$/.test(params.get("month") || "") ? params.get("month") : await latestMonth(signal);
    const months = monthsEnding(last);
    const whole = monthRange(months[0], months.length);
    const perModality = await countAll(MODALITIES.map((m) => ["ImagingStudy", [["modality", m], ...whole]]), signal);
    const present = MODALITIES.filter((_, i) => perModality[i] > 0);
    const cells = present.flatMap((m) => months.map((month) => [m, month]));
    const searches = [
      ...cells.map(([m, month]) => ["ImagingStudy", [["modality", m], ...monthRange(month)]]),
      ...STATUSES.map((s) => ["ImagingStudy", [["status", s]]]),
      ["ImagingStudy", []],
    ];
    const counts = await countAll(searches, signal);
    const series = new Map(present.map((m) => [m, new Map()]));
    cells.forEach(([m, month], i) => series.get(m).set(month, counts[i]));
    const statusCounts = counts.slice(cells.length, cells.length + STATUSES.length);
    const all = counts[counts.length - 1];
    replace(main, h("h1", {}, "Overview"),
      monthPicker(last),
      h("h2", {}, `Studies per month by modality, ${months[0]} to ${months[months.length - 1]}`),
      h("p", { class: "notice" }, "A study with several modalities counts once for each."),
      present.length ? stackedBars(months, series) : h("p", { class: "empty" }, "No studies in these months."),
      h("h2", {}, "Studies by status"),
      h("div", { class: "table-wrap" }, h("table", { class: "status-counts", "aria-label": "Studies by status" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Studies"))),
        h("tbody", {}, STATUSES.map((s, i) => h("tr", {}, h("td", {}, s), h("td", { class: "num" }, statusCounts[i].toLocaleString()))),
          h("tr", {}, h("th", { scope: "row" }, "all"), h("td", { class: "num" }, all.toLocaleString()))))));
  } catch (error) {
    if (error.name !== "AbortError") replace(main, h("h1", {}, "Overview"), failure(error));
  }
}

function monthPicker(last) {
  const input = h("input", { type: "month", name: "month", value: last });
  const form = h("form", { class: "bar", "aria-label": "Months shown" },
    h("label", {}, "Twelve months up to ", input), h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(input.value ? `#/overview?month=${encodeURIComponent(input.value)}` : "#/overview");
  });
  return form;
}
