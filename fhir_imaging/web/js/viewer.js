// Links out of the page: the configured viewer (serve --viewer-url, its {study_uid} replaced) and the WADO-RS
// address of a study's Endpoint.

/** The viewer address for a study, or null without a template or a UID. Only http(s) addresses are made. */
export function viewerUrl(template, uid) {
  if (!template || !uid) return null;
  const url = template.split("{study_uid}").join(encodeURIComponent(uid));
  return /^https?:\/\//i.test(url) ? url : null;
}

/** The WADO-RS address of a study: its Endpoint's address (a DICOMweb root) + "/studies/UID". */
export function wadoAddress(endpoint, uid) {
  if (!endpoint || !endpoint.address) return null;
  const root = endpoint.address.replace(/\/+$/, "");
  return uid ? `${root}/studies/${uid}` : root;
}
