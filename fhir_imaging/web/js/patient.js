// A patient's page: the patient, and every study of theirs (the Patient compartment), newest first, page by page.

import { patientCard } from "./cards.js";
import { h, replace } from "./dom.js";
import { bundleLink, entries, fhirGet, fhirUrl } from "./fhir.js";
import * as fmt from "./format.js";
import { go, studyHash } from "./router.js";
import { empty, failure, loading } from "./status.js";

export function patientStudiesParams() {
  return [["_sort", "-started"], ["_count", "50"], ["_summary", "true"]];
}

export function renderPatient(main, id, config) {
  const controller = new AbortController();
  replace(main, h("h1", {}, "Patient"), loading("Loading the patient…"));
  load(main, id, controller.signal);
  return () => controller.abort();
}

async function load(main, id, signal) {
  let patient;
  try {
    patient = await fhirGet(fhirUrl(`Patient/${encodeURIComponent(id)}`), { signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error.status !== 404) {
      replace(main, h("h1", {}, "Patient"), failure(error));
      return;
    }
    patient = null; // studies may name a patient this server does not hold
  }
  const list = h("div", {});
  const more = h("div", { class: "bar" });
  replace(main, h("h1", {}, patient ? fmt.humanName(patient.name) || id : `Patient ${id}`),
    patientCard(patient, { link: false, reference: { reference: `Patient/${id}` } }),
    h("h2", {}, "Studies"), list, more);
  await loadStudies(fhirUrl(`Patient/${encodeURIComponent(id)}/ImagingStudy`, patientStudiesParams()), list, more, signal);
}

async function loadStudies(url, list, more, signal) {
  if (!list.firstChild) list.append(loading("Loading the studies…"));
  let bundle;
  try {
    bundle = await fhirGet(url, { signal });
  } catch (error) {
    if (error.name !== "AbortError") replace(list, failure(error));
    return;
  }
  const studies = entries(bundle).match;
  let body = list.querySelector("tbody");
  if (!body) {
    if (!studies.length) {
      replace(list, empty("No studies for this patient."));
      return;
    }
    body = h("tbody", {});
    replace(list, h("div", { class: "table-wrap" }, h("table", { class: "patient-studies", "aria-label": "Studies" },
      h("thead", {}, h("tr", {}, [`Date (${fmt.timeZoneName()})`, "Modalities", "Description", "Accession", "Series",
        "Instances", "Status"].map((l) => h("th", { scope: "col" }, l)))), body)));
  }
  for (const study of studies) {
    const open = () => go(studyHash(study.id));
    body.append(h("tr", {
      class: "row", tabindex: "0", dataset: { id: study.id },
      on: { click: open, keydown: (e) => { if (e.key === "Enter") open(); } },
    },
    h("td", { class: "nowrap" }, fmt.dateTime(study.started)),
    h("td", {}, fmt.modalities(study).join(", ")),
    h("td", {}, study.description || ""),
    h("td", {}, fmt.accession(study)),
    h("td", { class: "num" }, study.numberOfSeries ?? ""),
    h("td", { class: "num" }, study.numberOfInstances ?? ""),
    h("td", {}, study.status || "")));
  }
  const next = bundleLink(bundle, "next");
  replace(more, next ? h("button", { type: "button", on: { click: () => loadStudies(next, list, more, signal) } },
    "More studies") : null);
}
