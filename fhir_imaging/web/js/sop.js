// Names of the DICOM storage SOP classes (sop-classes.json, derived from pydicom's UID dictionary by
// tools/derive_sop_classes.py), loaded once when a series' instances are first shown.

let table = null;

export async function loadSopClasses() {
  if (!table) {
    table = fetch(new URL("../sop-classes.json", import.meta.url))
      .then((response) => (response.ok ? response.json() : { classes: {} }))
      .then((data) => data.classes || {})
      .catch(() => ({}));
  }
  return table;
}

/** "CT Image Storage" for "urn:oid:1.2.840.10008.5.1.4.1.1.2" (or the bare UID); the UID itself when unknown. */
export function sopClassName(classes, code) {
  const uid = (code || "").replace(/^urn:oid:/, "");
  return classes[uid] || uid;
}
