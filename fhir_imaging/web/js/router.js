// The address bar holds all of the page's state, after the "#": "#/?modality=CT" (the worklist and its filters),
// "#/study/ID", "#/patient/ID", "#/overview". Bookmarks and the back button work because nothing else does.

/** {view, id, params} of a hash such as "#/study/abc?series=1.2.3". */
export function parseHash(hash) {
  const text = (hash || "").replace(/^#/, "");
  const [path, query = ""] = text.split(/\?(.*)/s, 2);
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "study" && parts[1]) return { view: "study", id: parts[1], params };
  if (parts[0] === "patient" && parts[1]) return { view: "patient", id: parts[1], params };
  if (parts[0] === "overview") return { view: "overview", params };
  return { view: "worklist", params };
}

export function worklistHash(params) {
  const query = params.toString();
  return query ? `#/?${query}` : "#/";
}

export function studyHash(id) {
  return `#/study/${encodeURIComponent(id)}`;
}

export function patientHash(id) {
  return `#/patient/${encodeURIComponent(id)}`;
}

/** Go to a hash (a new history entry, so that Back returns). */
export function go(hash) {
  if (window.location.hash !== hash) window.location.hash = hash;
}
