// What a view shows while it waits, when it fails and when there is nothing: one place, so that every view says it
// the same way. Server errors carry the OperationOutcome's message (fhir.js).

import { h } from "./dom.js";

export function loading(what = "Loading…") {
  return h("p", { class: "notice", role: "status", "aria-live": "polite" }, what);
}

export function failure(error) {
  const status = error && error.status ? ` (${error.status})` : "";
  return h("p", { class: "error", role: "alert" }, `The server answered with an error${status}: `,
    h("span", { class: "message" }, (error && error.message) || String(error)));
}

export function empty(what) {
  return h("p", { class: "empty", role: "status" }, what);
}
