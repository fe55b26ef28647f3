// The study browser's entry point: reads the server's settings for the page (/app/config.json), then shows the
// view the address bar names, again whenever it changes.

import { h, replace } from "./dom.js";
import { setBase } from "./fhir.js";
import { renderOverview } from "./overview.js";
import { renderPatient } from "./patient.js";
import { parseHash } from "./router.js";
import { failure } from "./status.js";
import { renderStudy } from "./study.js";
import { renderWorklist } from "./worklist.js";

const main = document.getElementById("content");
let config = { fhirBase: "/baseR4", viewerUrl: null };
let cleanup = null;

function show() {
  if (cleanup) cleanup();
  const route = parseHash(window.location.hash);
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === route.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (route.view === "study") cleanup = renderStudy(main, route.id, config);
  else if (route.view === "patient") cleanup = renderPatient(main, route.id, config);
  else if (route.view === "overview") cleanup = renderOverview(main, route.params, config);
  else cleanup = renderWorklist(main, route.params, config);
  document.title = `${main.querySelector("h1") ? main.querySelector("h1").textContent : "Studies"} — fhir-imaging`;
}

async function start() {
  try {
    const response = await fetch(new URL("config.json", window.location.href), { credentials: "same-origin" });
    if (response.ok) config = { ...config, ...(await response.json()) };
  } catch {
    // the defaults serve: this page and the API come from the same server
  }
  setBase(config.fhirBase);
  window.addEventListener("hashchange", () => {
    show();
    main.focus({ preventScroll: true });
  });
  try {
    show();
  } catch (error) {
    replace(main, h("h1", {}, "Error"), failure(error));
  }
}

start();
