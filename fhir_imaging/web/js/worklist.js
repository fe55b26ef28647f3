// The worklist: the studies matching the filters in the address bar, one server-sorted page at a time, with the
// total counted by a second search (_summary=count) so that the rows do not wait for it.

import { append, h, replace } from "./dom.js";
import { bundleLink, entries, fhirGet, fhirUrl } from "./fhir.js";
import * as fmt from "./format.js";
import { go, patientHash, studyHash, worklistHash } from "./router.js";
import { empty, failure, loading } from "./status.js";
import { viewerUrl } from "./viewer.js";
import * as query from "./worklist-query.js";

const SEX = { male: "M", female: "F", other: "O", unknown: "U" };

export function renderWorklist(main, params, config) {
  const state = query.readState(params);
  const controller = new AbortController();
  const results = h("div", { class: "results" });
  const total = h("span", { class: "total", "aria-live": "polite" });
  const paging = h("div", { class: "paging bar" });
  replace(main, h("h1", {}, "Studies"), filterForm(state), toolbar(state, total), results, paging);
  loadPage(state, results, paging, config, controller.signal);
  loadTotal(state, total, controller.signal);
  return () => controller.abort();
}

function navigate(state) {
  go(worklistHash(query.writeState(state)));
}

// -- filters --------------------------------------------------------------------------------------------------------

function field(label, input) {
  return h("label", {}, label, input);
}

function filterForm(state) {
  const text = (name, value, extra = {}) => h("input", { name, value: value || "", autocomplete: "off", ...extra });
  const modalities = h("fieldset", { class: "modalities" }, h("legend", {}, "Modality"),
    query.MODALITIES.map((code) => h("label", {},
      h("input", { type: "checkbox", name: "modality", value: code, checked: (state.modality || []).includes(code) }),
      code)));
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    query.STATUSES.map((code) => h("option", { value: code, selected: state.status === code }, code)));
  const from = text("from", state.from, { type: "date" });
  const to = text("to", state.to, { type: "date" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filters" },
    field("Patient name contains", text("name", state.name)),
    field("MRN", text("mrn", state.mrn)),
    field("From", from),
    field("To", to),
    h("div", { class: "quick", role: "group", "aria-label": "Date quick picks" },
      quickPick("Today", 1), quickPick("7 days", 7), quickPick("30 days", 30)),
    modalities,
    field("Accession", text("accession", state.accession)),
    field("Description contains", text("description", state.description)),
    field("Status", status),
    h("div", { class: "quick" },
      h("button", { type: "submit", class: "primary" }, "Search"),
      h("button", { type: "button", on: { click: () => navigate({ sort: state.sort, count: state.count }) } },
        "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(formState(form, state));
  });
  return form;

  function quickPick(label, days) {
    return h("button", {
      type: "button",
      on: {
        click: () => {
          const range = query.quickRange(days);
          from.value = range.from;
          to.value = range.to;
          navigate(formState(form, state));
        },
      },
    }, label);
  }
}

/** The state the form shows (a new search: back to the first page). */
function formState(form, previous) {
  const data = new FormData(form);
  const state = { sort: previous.sort, count: previous.count };
  for (const key of ["name", "mrn", "from", "to", "accession", "description", "status"]) {
    const value = String(data.get(key) || "").trim();
    if (value) state[key] = value;
  }
  const modality = data.getAll("modality").map(String);
  if (modality.length) state.modality = modality;
  return state;
}

// -- sort, page size, total -----------------------------------------------------------------------------------------

function toolbar(state, total) {
  const sort = h("select", { name: "sort", on: { change: (e) => navigate({ ...state, sort: e.target.value, cursor: undefined }) } },
    Object.entries(query.SORTS).map(([value, label]) => h("option", { value, selected: state.sort === value }, label)));
  const size = h("select", { name: "count", on: { change: (e) => navigate({ ...state, count: Number(e.target.value), cursor: undefined }) } },
    query.PAGE_SIZES.map((n) => h("option", { value: String(n), selected: state.count === n }, String(n))));
  return h("div", { class: "bar" }, total, field("Sort", sort), field("Per page", size));
}

async function loadTotal(state, total, signal) {
  replace(total, "Counting…");
  try {
    const bundle = await fhirGet(fhirUrl("ImagingStudy", query.countParams(state)), { signal });
    const n = bundle.total ?? 0;
    replace(total, `${n.toLocaleString()} ${n === 1 ? "study" : "studies"}`);
  } catch (error) {
    if (error.name !== "AbortError") replace(total, "");
  }
}

// -- the page of rows -----------------------------------------------------------------------------------------------

async function loadPage(state, results, paging, config, signal) {
  replace(results, loading("Searching…"));
  let bundle;
  try {
    bundle = await fhirGet(fhirUrl("ImagingStudy", query.pageParams(state)), { signal });
  } catch (error) {
    if (error.name !== "AbortError") replace(results, failure(error));
    return;
  }
  const { match, include } = entries(bundle);
  const patients = new Map(include.filter((r) => r.resourceType === "Patient").map((p) => [p.id, p]));
  if (match.length === 0) {
    replace(results, empty(state.cursor ? "No more studies." : "No study matches these filters."));
  } else {
    replace(results, table(state, match, patients, config));
  }
  replace(paging, pagingButtons(state, bundle));
}

function sortHeader(label, key, state) {
  const active = state.sort === key || state.sort === `-${key}`;
  const next = state.sort === key ? `-${key}` : key;
  const arrow = !active ? "" : state.sort.startsWith("-") ? " ▼" : " ▲";
  const sorted = !active ? "none" : state.sort.startsWith("-") ? "descending" : "ascending";
  return h("th", { scope: "col", "aria-sort": sorted },
    h("button", { type: "button", class: "sort", on: { click: () => navigate({ ...state, sort: next, cursor: undefined }) } },
      label + arrow));
}

function table(state, studies, patients, config) {
  const zone = fmt.timeZoneName();
  const head = h("tr", {},
    h("th", { scope: "col" }, "Patient"), h("th", { scope: "col" }, "MRN"), h("th", { scope: "col" }, "Birth date"),
    h("th", { scope: "col" }, "Sex"), sortHeader(`Study date (${zone})`, "started", state),
    h("th", { scope: "col" }, "Modalities"), h("th", { scope: "col" }, "Description"),
    sortHeader("Accession", "accession", state), h("th", { scope: "col" }, "Series"),
    h("th", { scope: "col" }, "Instances"), sortHeader("Status", "status", state),
    config.viewerUrl ? h("th", { scope: "col" }, "Viewer") : null);
  const body = h("tbody", {}, studies.map((study) => row(study, patients, config)));
  return h("div", { class: "table-wrap" },
    h("table", { class: "worklist", "aria-label": "Studies" }, h("thead", {}, head), body));
}

function cell(label, value, cls) {
  return h("td", { dataset: { label }, class: cls }, value);
}

function row(study, patients, config) {
  const patientId = fmt.referenceId(study.subject, "Patient");
  const patient = (patientId && patients.get(patientId)) || {};
  const name = fmt.humanName(patient.name) || (study.subject && study.subject.display) || "";
  const open = () => go(studyHash(study.id));
  const viewer = viewerUrl(config.viewerUrl, fmt.studyUid(study));
  const tr = h("tr", {
    class: "row", tabindex: "0", dataset: { id: study.id }, "aria-label": `Study ${study.description || study.id}`,
    on: {
      click: (event) => { if (!event.target.closest("a")) open(); },
      keydown: (event) => { if (event.key === "Enter" && event.target === event.currentTarget) open(); },
    },
  },
  cell("Patient", patientId ? h("a", { href: patientHash(patientId) }, name || patientId) : name, "patient-name"),
  cell("MRN", fmt.identifierOfType(patient.identifier, fmt.MRN_TYPE)),
  cell("Birth date", fmt.date(patient.birthDate), "nowrap"),
  cell("Sex", SEX[patient.gender] || ""),
  cell("Study date", fmt.dateTime(study.started), "nowrap"),
  cell("Modalities", fmt.modalities(study).join(", ")),
  cell("Description", study.description || ""),
  cell("Accession", fmt.accession(study), "nowrap"),
  cell("Series", study.numberOfSeries ?? (study.series || []).length, "num"),
  cell("Instances", study.numberOfInstances ?? "", "num"),
  cell("Status", study.status || ""),
  config.viewerUrl
    ? cell("Viewer", viewer ? h("a", { href: viewer, target: "_blank", rel: "noopener noreferrer", class: "viewer" }, "Open in viewer") : "", "viewer")
    : null);
  return tr;
}

function cursorOf(link) {
  return link ? new URL(link).searchParams.get("_cursor") : null;
}

function pagingButtons(state, bundle) {
  const previous = cursorOf(bundleLink(bundle, "previous"));
  const next = cursorOf(bundleLink(bundle, "next"));
  const bar = [];
  bar.push(h("button", { type: "button", disabled: !state.cursor, on: { click: () => navigate({ ...state, cursor: undefined }) } }, "First"));
  bar.push(h("button", { type: "button", disabled: !previous, rel: "prev",
    on: { click: () => navigate({ ...state, cursor: previous || undefined }) } }, "‹ Previous"));
  bar.push(h("button", { type: "button", disabled: !next, rel: "next", on: { click: () => navigate({ ...state, cursor: next }) } }, "Next ›"));
  return append(h("div", { class: "bar", role: "navigation", "aria-label": "Pages" }), bar);
}
