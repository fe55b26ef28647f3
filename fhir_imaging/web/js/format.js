// FHIR values as text for people: names, dates in the browser's time zone (with the zone shown), codings,
// identifiers. Pure functions of their arguments.

export const ACCESSION_TYPE = "ACSN";
export const MRN_TYPE = "MR";

/** "Family, Given Middle" of the official (else first) HumanName; "" when none. */
export function humanName(names) {
  if (!Array.isArray(names) || names.length === 0) return "";
  const name = names.find((n) => n.use === "official") || names[0];
  if (name.text && !name.family && !name.given) return name.text;
  const given = (name.given || []).join(" ");
  const family = name.family || "";
  return family && given ? `${family}, ${given}` : family || given || name.text || "";
}

/** The identifier typed ``code`` (v2-0203 MR, ACSN), else the first with a value. */
export function identifierOfType(identifiers, code, { fallback = true } = {}) {
  const list = Array.isArray(identifiers) ? identifiers : [];
  const typed = list.find((id) => ((id.type && id.type.coding) || []).some((c) => c.code === code));
  if (typed) return typed.value || "";
  if (!fallback) return "";
  const first = list.find((id) => id.value);
  return first ? first.value : "";
}

/** The study's accession number: the ACSN-typed identifier (never the Study Instance UID). */
export function accession(study) {
  return identifierOfType(study.identifier, ACCESSION_TYPE, { fallback: false });
}

/** The Study Instance UID: the urn:dicom:uid identifier without its "urn:oid:" prefix. */
export function studyUid(study) {
  const id = (study.identifier || []).find((i) => i.system === "urn:dicom:uid");
  return id && id.value ? id.value.replace(/^urn:oid:/, "") : "";
}

/** A coding's or CodeableConcept's text: display, else code. */
export function codingText(value) {
  if (!value) return "";
  if (value.coding || value.text) {
    return value.text || (value.coding || []).map(codingText).filter(Boolean).join(", ");
  }
  return value.display || value.code || "";
}

/** The time zone the browser shows times in, e.g. "Europe/Paris" (or the UTC offset). */
export function timeZoneName() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const dateFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "2-digit", day: "2-digit" });

/** A FHIR dateTime in the browser's zone, the zone named ("2024-06-15, 12:30 CEST"); a date alone stays a date. */
export function dateTime(text) {
  if (!text) return "";
  if (!text.includes("T")) return date(text);
  const moment = new Date(text);
  return Number.isNaN(moment.getTime()) ? text : dateTimeFormat.format(moment);
}

/** A FHIR date (YYYY, YYYY-MM, YYYY-MM-DD) as the browser writes dates; partial dates as they are. */
export function date(text) {
  if (!text) return "";
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  if (!match) return text;
  return dateFormat.format(new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3])));
}

/** The local calendar day "YYYY-MM-DD" of a Date. */
export function localDay(moment) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())}`;
}

/** Local midnight at the start of day "YYYY-MM-DD" (plus ``days``) as a FHIR instant with the browser's offset. */
export function localMidnight(day, days = 0) {
  const [year, month, dayOfMonth] = day.split("-").map(Number);
  const moment = new Date(year, month - 1, dayOfMonth + days);
  const offset = -moment.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const pad = (n) => String(Math.trunc(Math.abs(n))).padStart(2, "0");
  return `${localDay(moment)}T00:00:00${sign}${pad(offset / 60)}:${pad(offset % 60)}`;
}

/** "Patient/123" → "123" when the reference names a resource of ``type``, else null. */
export function referenceId(reference, type) {
  if (!reference || !reference.reference) return null;
  const match = /(?:^|\/)([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(reference.reference);
  return match && match[1] === type ? match[2] : null;
}

/** Distinct modality codes of a study: its own, then its series'. */
export function modalities(study) {
  const codes = [...(study.modality || []), ...(study.series || []).map((s) => s.modality)]
    .filter(Boolean)
    .map((coding) => coding.code)
    .filter(Boolean);
  return [...new Set(codes)];
}
