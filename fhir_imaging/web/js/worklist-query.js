// The worklist's state (what the address bar holds after "#/?") and the FHIR search it stands for. Pure: the
// tests compare the page's rows with the API's answer to the same search.

import { localMidnight } from "./format.js";

export const MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "OT", "SR"];
export const STATUSES = ["registered", "available", "cancelled", "entered-in-error", "unknown"];
export const PAGE_SIZES = [25, 50, 100];
export const SORTS = {
  "-started": "Date, newest first",
  started: "Date, oldest first",
  accession: "Accession, ascending",
  "-accession": "Accession, descending",
  status: "Status, A–Z",
  "-status": "Status, Z–A",
};
export const DEFAULT_SORT = "-started";
// What a worklist row needs: the summary elements (series without their instances) keep pages small.
export const SHAPE = [["_summary", "true"]];
const TEXT_KEYS = ["name", "mrn", "from", "to", "accession", "description", "status"];
const DAY_KEYS = ["from", "to"]; // local days, YYYY-MM-DD (what <input type="date"> gives)

/** The state in a URLSearchParams (the part of the hash after "?"), normalised. */
export function readState(params) {
  const state = {};
  for (const key of TEXT_KEYS) {
    const value = (params.get(key) || "").trim();
    if (value && (!DAY_KEYS.includes(key) || /^\d{4}-\d{2}-\d{2}$/.test(value))) state[key] = value;
  }
  const modality = (params.get("modality") || "").split(",").map((m) => m.trim()).filter(Boolean);
  if (modality.length) state.modality = modality;
  const sort = params.get("sort");
  state.sort = sort && sort in SORTS ? sort : DEFAULT_SORT;
  const count = Number(params.get("count"));
  state.count = PAGE_SIZES.includes(count) ? count : PAGE_SIZES[0];
  const cursor = params.get("cursor");
  if (cursor) state.cursor = cursor;
  return state;
}

/** The state as hash parameters (defaults left out, so that plain URLs stay short). */
export function writeState(state) {
  const params = new URLSearchParams();
  for (const key of TEXT_KEYS) if (state[key]) params.set(key, state[key]);
  if (state.modality && state.modality.length) params.set("modality", state.modality.join(","));
  if (state.sort && state.sort !== DEFAULT_SORT) params.set("sort", state.sort);
  if (state.count && state.count !== PAGE_SIZES[0]) params.set("count", String(state.count));
  if (state.cursor) params.set("cursor", state.cursor);
  return params;
}

/** The search filters of a state, as FHIR parameters on ImagingStudy. Dates are the browser's local days. */
export function filterParams(state) {
  const params = [];
  if (state.name) params.push(["patient.name:contains", state.name]);
  if (state.mrn) params.push(["patient.identifier", state.mrn]);
  if (state.from) params.push(["started", `ge${localMidnight(state.from)}`]);
  if (state.to) params.push(["started", `lt${localMidnight(state.to, 1)}`]);
  if (state.modality && state.modality.length) params.push(["modality", state.modality.join(",")]);
  if (state.accession) params.push(["accession", state.accession]);
  if (state.description) params.push(["description:contains", state.description]);
  if (state.status) params.push(["status", state.status]);
  return params;
}

/** The search of one worklist page: filters, sort, page size, the patient included, rows kept small. */
export function pageParams(state) {
  const params = [...filterParams(state), ["_sort", state.sort || DEFAULT_SORT], ["_count", String(state.count)]];
  params.push(["_include", "ImagingStudy:patient"], ...SHAPE);
  if (state.cursor) params.push(["_cursor", state.cursor]);
  return params;
}

/** The search that counts the matches of the filters. */
export function countParams(state) {
  return [...filterParams(state), ["_summary", "count"]];
}

/** The quick picks of the date filter: today, the last 7 and 30 days (today included). */
export function quickRange(days, today = new Date()) {
  const from = new Date(today.getFullYear(), today.getMonth(), today.getDate() - (days - 1));
  const pad = (n) => String(n).padStart(2, "0");
  const day = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return { from: day(from), to: day(today) };
}
