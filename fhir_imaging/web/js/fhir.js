// The page's only way to the server: GET requests to the FHIR API (relative to the configured base), answers
// parsed as JSON, and failures turned into errors that carry the OperationOutcome's own message. When signed in
// (auth.js), every request carries the access token; a 401 goes to the handler main.js sets (a new sign-in).

import { accessToken } from "./auth.js";

let base = "../baseR4";
let onUnauthorized = null;

/** The function called with the FhirError of every 401 answer. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** The headers of a FHIR request: ``extra`` and, when signed in, the bearer token. */
export function requestHeaders(extra = {}) {
  const token = accessToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/** The error of a failed answer (after the 401 handler has seen it). */
export function answerError(status, message, outcome) {
  const error = new FhirError(status, message, outcome);
  if (status === 401 && onUnauthorized) onUnauthorized(error);
  return error;
}

export function setBase(path) {
  base = new URL(path, window.location.href).href.replace(/\/$/, "");
}

export function fhirBase() {
  return base;
}

/** An error from the server: status, and the OperationOutcome's diagnostics (or details) as the message. */
export class FhirError extends Error {
  constructor(status, message, outcome) {
    super(message);
    this.status = status;
    this.outcome = outcome;
  }
}

/** The text of an OperationOutcome's issues, one line each. */
export function outcomeMessage(outcome) {
  const issues = (outcome && outcome.issue) || [];
  const lines = issues.map((issue) => issue.diagnostics || (issue.details && issue.details.text) || issue.code);
  return lines.filter(Boolean).join("\n");
}

/** The URL of a search or read: path relative to the base ("ImagingStudy", "Patient/1") and parameters (an array of
 * [name, value] pairs, a URLSearchParams, or nothing). */
export function fhirUrl(path, params) {
  const url = new URL(`${base}/${path}`);
  const pairs = params instanceof URLSearchParams ? [...params] : params || [];
  for (const [name, value] of pairs) url.searchParams.append(name, value);
  return url.href;
}

/** GET a FHIR URL on this server (absolute, e.g. a Bundle link, or made by fhirUrl); resolves to the JSON body. */
export async function fhirGet(url, { signal } = {}) {
  const target = new URL(url, window.location.href);
  if (target.origin !== window.location.origin) {
    // Bundle links carry --public-url's origin: the same server, reached the way this page was.
    const path = target.pathname.slice(target.pathname.indexOf("/baseR4"));
    url = new URL(path + target.search, window.location.href).href;
  }
  let response;
  try {
    const headers = requestHeaders({ Accept: "application/fhir+json" });
    response = await fetch(url, { headers, signal, credentials: "same-origin" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new FhirError(0, `The server could not be reached (${error.message})`, null);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = outcomeMessage(body) || `${response.status} ${response.statusText}`;
    throw answerError(response.status, message, body);
  }
  return body;
}

/** A Bundle's link of the given relation (next, previous, self), or null. */
export function bundleLink(bundle, relation) {
  const link = ((bundle && bundle.link) || []).find((item) => item.relation === relation);
  return link ? link.url : null;
}

/** Bundle entries by search mode: {match: [...], include: [...]}. */
export function entries(bundle) {
  const out = { match: [], include: [], outcome: [] };
  for (const entry of (bundle && bundle.entry) || []) {
    const mode = (entry.search && entry.search.mode) || "match";
    (out[mode] || out.match).push(entry.resource);
  }
  return out;
}
