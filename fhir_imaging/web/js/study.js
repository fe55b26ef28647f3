// A study's page: its patient, its fields, its series (and their instances), what it points at and what points
// back (one search: _include and _revinclude), its raw JSON, and its version history.

import { copyable, fields, patientCard } from "./cards.js";
import { h, replace } from "./dom.js";
import { entries, fhirGet, fhirUrl } from "./fhir.js";
import * as fmt from "./format.js";
import { historySection } from "./history.js";
import { seriesTable } from "./series.js";
import { empty, failure, loading } from "./status.js";
import { viewerUrl, wadoAddress } from "./viewer.js";

const INCLUDES = ["patient", "basedon", "encounter", "referrer", "interpreter", "endpoint"];

/** The search of a study's page: the study by id, what it points at, and the reports that point at it. */
export function studyParams(id) {
  return [["_id", id], ...INCLUDES.map((p) => ["_include", `ImagingStudy:${p}`]),
    ["_revinclude", "DiagnosticReport:study"]];
}

export function renderStudy(main, id, config) {
  const controller = new AbortController();
  replace(main, h("h1", {}, "Study"), loading("Loading the study…"));
  load(main, id, config, controller.signal);
  return () => controller.abort();
}

async function load(main, id, config, signal) {
  let study;
  let related;
  try {
    const bundle = await fhirGet(fhirUrl("ImagingStudy", studyParams(id)), { signal });
    const found = entries(bundle);
    study = found.match[0];
    related = found.include;
    if (!study) study = await fhirGet(fhirUrl(`ImagingStudy/${encodeURIComponent(id)}`), { signal }); // 404/410
  } catch (error) {
    if (error.name !== "AbortError") replace(main, h("h1", {}, "Study"), failure(error));
    return;
  }
  const byRef = new Map(related.map((r) => [`${r.resourceType}/${r.id}`, r]));
  const patientId = fmt.referenceId(study.subject, "Patient");
  const patient = patientId ? byRef.get(`Patient/${patientId}`) : null;
  const endpoints = (study.endpoint || []).map((ref) => byRef.get(`Endpoint/${fmt.referenceId(ref, "Endpoint")}`))
    .filter(Boolean);
  const uid = fmt.studyUid(study);
  replace(main,
    h("h1", {}, study.description || "Study", " ", h("span", { class: "badge" }, study.status || "")),
    h("div", { class: "cards" }, patientCard(patient, { reference: study.subject }), studyCard(study, uid),
      accessCard(config, uid, endpoints)),
    h("h2", {}, "Series"), seriesTable(study),
    relatedSection(study, related),
    h("details", { class: "raw" }, h("summary", {}, "Raw JSON"),
      h("pre", { class: "json", "aria-label": "Raw JSON" }, JSON.stringify(study, null, 2))),
    historySection("ImagingStudy", study.id, signal));
}

function studyCard(study, uid) {
  return h("section", { class: "card", "aria-label": "Study" }, h("h2", {}, "Study"), fields([
    ["Started", fmt.dateTime(study.started)],
    ["Accession", fmt.accession(study)],
    ["Modalities", fmt.modalities(study).join(", ")],
    ["Series", study.numberOfSeries ?? (study.series || []).length],
    ["Instances", study.numberOfInstances],
    ["Procedure", (study.procedureCode || []).map(fmt.codingText).join("; ")],
    ["Reason", (study.reasonCode || []).map(fmt.codingText).join("; ")],
    ["Note", (study.note || []).map((n) => n.text).join("\n")],
    ["Study UID", uid ? h("span", { class: "mono" }, uid) : ""],
    ["Id", study.id],
    ["Version", study.meta && study.meta.versionId],
  ]));
}

function accessCard(config, uid, endpoints) {
  const viewer = viewerUrl(config.viewerUrl, uid);
  const items = [];
  if (viewer) {
    items.push(h("p", {}, h("a", { href: viewer, target: "_blank", rel: "noopener noreferrer", class: "viewer" },
      "Open in viewer")));
  }
  for (const endpoint of endpoints) {
    const address = wadoAddress(endpoint, uid);
    items.push(h("p", {}, h("span", { class: "notice" }, `WADO-RS (${endpoint.name || endpoint.id}): `),
      copyable(address, "WADO-RS address")));
  }
  if (!items.length) items.push(empty("No viewer configured and no Endpoint for this study."));
  return h("section", { class: "card", "aria-label": "Images" }, h("h2", {}, "Images"), items);
}

function summary(resource) {
  switch (resource.resourceType) {
    case "ServiceRequest":
      return [fmt.codingText(resource.code), fmt.identifierOfType(resource.identifier, "PLAC"), resource.status];
    case "Encounter":
      return [fmt.codingText(resource.class), resource.status, fmt.dateTime(resource.period && resource.period.start)];
    case "Practitioner":
    case "Patient":
      return [fmt.humanName(resource.name)];
    case "Endpoint":
      return [resource.name, resource.address];
    case "DiagnosticReport":
      return [fmt.codingText(resource.code), resource.status, fmt.dateTime(resource.issued), resource.conclusion];
    default:
      return [resource.status];
  }
}

function relatedTable(label, resources) {
  if (!resources.length) return empty(`Nothing ${label.toLowerCase()}.`);
  return h("div", { class: "table-wrap" }, h("table", { class: "related", "aria-label": label },
    h("thead", {}, h("tr", {}, ["Role", "Resource", "Summary"].map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, resources.map(({ role, resource }) => h("tr", {},
      h("td", {}, role),
      h("td", { class: "mono" }, `${resource.resourceType}/${resource.id}`),
      h("td", {}, summary(resource).filter(Boolean).join(" · ")))))));
}

function relatedSection(study, related) {
  const byRef = new Map(related.map((r) => [`${r.resourceType}/${r.id}`, r]));
  const find = (ref, type) => byRef.get(`${type}/${fmt.referenceId(ref, type)}`);
  const out = [];
  const add = (role, refs, types) => {
    for (const ref of refs || []) {
      for (const type of types) {
        const resource = find(ref, type);
        if (resource) out.push({ role, resource });
      }
    }
  };
  add("Based on", study.basedOn, ["ServiceRequest"]);
  add("Encounter", [study.encounter].filter(Boolean), ["Encounter"]);
  add("Referrer", [study.referrer].filter(Boolean), ["Practitioner", "PractitionerRole"]);
  add("Interpreter", study.interpreter, ["Practitioner", "PractitionerRole"]);
  add("Endpoint", study.endpoint, ["Endpoint"]);
  const reports = related.filter((r) => r.resourceType === "DiagnosticReport")
    .map((resource) => ({ role: "Report", resource }));
  return h("section", { "aria-label": "Related" },
    h("h2", {}, "What this study points at"), relatedTable("Pointed at", out),
    h("h2", {}, "What points at this study"), relatedTable("Pointing here", reports));
}
