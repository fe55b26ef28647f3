// Small blocks shared by the pages: the patient card, a list of fields, a copyable text.

import { h } from "./dom.js";
import * as fmt from "./format.js";
import { patientHash } from "./router.js";

const SEX = { male: "male", female: "female", other: "other", unknown: "unknown" };

/** A definition list of [label, value] pairs; empty values are left out. */
export function fields(pairs) {
  const items = pairs.filter(([, value]) => value !== undefined && value !== null && value !== "");
  return h("dl", { class: "fields" }, items.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** The patient card: name, MRN, birth date, sex; a link to the patient's page unless ``link`` is false. */
export function patientCard(patient, { link = true, reference = null } = {}) {
  if (!patient) {
    const text = reference ? `${reference.reference || ""} (not on this server)` : "No patient";
    return h("section", { class: "card patient", "aria-label": "Patient" }, h("h2", {}, "Patient"), h("p", { class: "empty" }, text));
  }
  const name = fmt.humanName(patient.name) || patient.id;
  return h("section", { class: "card patient", "aria-label": "Patient" },
    h("h2", {}, link ? h("a", { href: patientHash(patient.id) }, name) : name),
    fields([
      ["MRN", fmt.identifierOfType(patient.identifier, fmt.MRN_TYPE)],
      ["Birth date", fmt.date(patient.birthDate)],
      ["Sex", SEX[patient.gender] || ""],
      ["Id", patient.id],
    ]));
}

/** A text with a "Copy" button (the Clipboard API; the text stays selectable where it is refused). */
export function copyable(text, label) {
  const status = h("span", { class: "notice", "aria-live": "polite" });
  const button = h("button", {
    type: "button",
    "aria-label": `Copy ${label}`,
    on: {
      click: async () => {
        try {
          await navigator.clipboard.writeText(text);
          status.textContent = "Copied";
        } catch {
          status.textContent = "Select the text to copy it";
        }
      },
    },
  }, "Copy");
  return h("span", { class: "copy" }, h("span", { class: "mono", dataset: { copy: label } }, text), button, status);
}
