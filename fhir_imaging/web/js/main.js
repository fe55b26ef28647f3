// The study browser's entry point: reads the server's settings for the page (/app/config.json), signs the user in
// when the server requires it (auth.js), then shows the view the address bar names, again whenever it changes.

import {
  beginSignIn, configureSignIn, currentSession, finishSignIn, forgetToken, isSignInAnswer, justSignedIn, signedOut,
  signOut,
} from "./auth.js";
import { h, replace } from "./dom.js";
import { fhirBase, setBase, setUnauthorizedHandler } from "./fhir.js";
import { renderOverview } from "./overview.js";
import { renderPatient } from "./patient.js";
import { parseHash } from "./router.js";
import { failure } from "./status.js";
import { renderStudy } from "./study.js";
import { renderWorklist } from "./worklist.js";

const main = document.getElementById("content");
const session = document.getElementById("session");
let config = { fhirBase: "/baseR4", viewerUrl: null, signIn: null };
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
  configureSignIn(config.signIn);
  if (config.signIn && !(await signedIn())) return;
  window.addEventListener("hashchange", () => {
    if (config.signIn && !currentSession()) {
      if (signedOut()) showSignIn("Signed out", "You have signed out of the study browser.");
      else redirectToSignIn();
      return;
    }
    show();
    main.focus({ preventScroll: true });
  });
  try {
    show();
  } catch (error) {
    replace(main, h("h1", {}, "Error"), failure(error));
  }
}

// -- signing in -------------------------------------------------------------------------------------------------

/** True when a token is at hand (after finishing a sign-in if the address is the provider's answer); otherwise the
 * page is on its way to the provider, or shows why not. */
async function signedIn() {
  const here = new URL(window.location.href);
  if (isSignInAnswer(here)) {
    try {
      await finishSignIn(here);
    } catch (error) {
      showSignIn("Sign-in failed", error.message);
      return false;
    }
  }
  if (currentSession()) {
    showUser();
    setUnauthorizedHandler(unauthorized);
    return true;
  }
  if (signedOut()) {
    showSignIn("Signed out", "You have signed out of the study browser.");
    return false;
  }
  await redirectToSignIn();
  return false;
}

async function redirectToSignIn() {
  replace(main, h("h1", {}, "Signing in…"), h("p", { class: "notice", role: "status" }, "Going to the sign-in page…"));
  try {
    await beginSignIn(fhirBase(), window.location.hash || "#/");
  } catch (error) {
    showSignIn("Sign-in failed", error.message);
  }
}

/** A 401 from the server: the token expired or was revoked; sign in again (unless it is brand new: then say so). */
function unauthorized(error) {
  setUnauthorizedHandler(null);
  if (justSignedIn()) {
    if (cleanup) cleanup();
    showSignIn("Sign-in failed", `The server refused the new access token: ${error.message}`);
    return;
  }
  forgetToken();
  if (cleanup) cleanup();
  redirectToSignIn();
}

function showSignIn(title, message) {
  replace(session);
  session.hidden = true;
  replace(main, h("h1", {}, title), h("p", { class: title === "Signed out" ? "notice" : "error", role: "alert" }, message),
    h("p", {}, h("button", { type: "button", class: "primary", on: { click: () => redirectToSignIn() } }, "Sign in")));
  document.title = `${title} — fhir-imaging`;
}

function showUser() {
  const user = currentSession().user;
  replace(session, h("span", { class: "user" }, "Signed in as ", h("strong", {}, user)), " ",
    h("button", { type: "button", on: { click: leave } }, "Sign out"));
  session.hidden = false;
}

function leave() {
  if (cleanup) cleanup();
  cleanup = null;
  signOut();
  showSignIn("Signed out", "You have signed out of the study browser.");
}

start();
