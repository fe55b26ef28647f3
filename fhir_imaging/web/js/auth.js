// Sign-in for a server that requires access tokens: SMART App Launch, standalone launch, authorization code with
// PKCE (S256), as a public client (https://hl7.org/fhir/smart-app-launch/app-launch.html).
//
// 1. The server's SMART configuration ([base]/.well-known/smart-configuration) names the authorization and token
//    endpoints and must offer S256; when it names only the issuer, the issuer's OpenID discovery document does.
// 2. The page sends the browser to the authorization endpoint with response_type=code, client_id, redirect_uri (the
//    page's own address, /app/), scope, state and a PKCE code_challenge (SHA-256 of a random verifier, Web Crypto),
//    aud = the FHIR server (and resource, RFC 8707, the same: providers that mint audience-bound tokens read it).
//    State, verifier and the view to come back to wait in sessionStorage.
// 3. Back with ?code=…&state=…, the address is replaced at once (the code never stays in the address bar or the
//    history), the state must be the one this tab sent, and the code is exchanged at the token endpoint with the
//    verifier. The access token is kept in sessionStorage (this tab only, gone when it closes; never localStorage,
//    never the address) and sent as "Authorization: Bearer" with every FHIR request (fhir.js).
// The name shown comes from the ID token's claims (name, fhirUser, sub), for display only: the server checks the
// access token. Sign-out forgets the token; the provider's own session is the provider's.

const SESSION = "fhir-imaging.session";
const PENDING = "fhir-imaging.sign-in";
const SIGNED_OUT = "fhir-imaging.signed-out";
const FRESH_MS = 10_000; // a 401 this soon after signing in is shown, not answered by another sign-in (no loop)

/** A sign-in that could not happen; its message says why, for the person at the screen. */
export class SignInError extends Error {}

let settings = null; // config.json's signIn: {clientId, scope, audience}

export function configureSignIn(signIn) {
  settings = signIn || null;
}

export function signInRequired() {
  return settings !== null;
}

function readJson(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

/** The signed-in session {accessToken, expiresAt, obtainedAt, user}, or null (none, or expired). */
export function currentSession() {
  const session = readJson(SESSION);
  if (!session || typeof session.accessToken !== "string" || !(session.expiresAt > Date.now())) return null;
  return session;
}

/** The access token to send, or null. */
export function accessToken() {
  const session = currentSession();
  return session ? session.accessToken : null;
}

/** True when the token was obtained so recently that a 401 means the server refuses it, not that it expired. */
export function justSignedIn() {
  const session = readJson(SESSION);
  return Boolean(session && Date.now() - session.obtainedAt < FRESH_MS);
}

export function signedOut() {
  return sessionStorage.getItem(SIGNED_OUT) === "1";
}

export function signOut() {
  sessionStorage.removeItem(SESSION);
  sessionStorage.removeItem(PENDING);
  sessionStorage.setItem(SIGNED_OUT, "1");
}

export function forgetToken() {
  sessionStorage.removeItem(SESSION);
}

/** The page's own address without query or fragment: the redirect_uri (the provider must know it exactly). */
export function appAddress() {
  return new URL(".", window.location.href).href;
}

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function codeChallenge(verifier) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}

async function getJson(url, what) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "omit" });
  } catch (error) {
    throw new SignInError(`${what} could not be read (${error.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || typeof body !== "object") {
    throw new SignInError(`${what} could not be read (${response.status} ${response.statusText})`);
  }
  return body;
}

/** {authorizationEndpoint, tokenEndpoint} of the server's authorization, from its SMART configuration. */
export async function discover(fhirBase) {
  const smart = await getJson(`${fhirBase}/.well-known/smart-configuration`, "The server's SMART configuration");
  let { authorization_endpoint: authorize, token_endpoint: token } = smart;
  let methods = smart.code_challenge_methods_supported;
  if ((!authorize || !token) && typeof smart.issuer === "string") {
    const issuer = smart.issuer.replace(/\/$/, "");
    const oidc = await getJson(`${issuer}/.well-known/openid-configuration`, "The issuer's OpenID configuration");
    authorize = authorize || oidc.authorization_endpoint;
    token = token || oidc.token_endpoint;
    methods = methods || oidc.code_challenge_methods_supported;
  }
  if (typeof authorize !== "string" || typeof token !== "string") {
    throw new SignInError("The server's SMART configuration names no authorization and token endpoint");
  }
  if (!Array.isArray(methods) || !methods.includes("S256")) {
    throw new SignInError("The server's authorization does not offer PKCE with S256 (code_challenge_methods_supported)");
  }
  return { authorizationEndpoint: authorize, tokenEndpoint: token };
}

/** Send the browser to the provider to sign in; ``returnTo``: the view (a "#/…" hash) to show once back. */
export async function beginSignIn(fhirBase, returnTo) {
  const { authorizationEndpoint, tokenEndpoint } = await discover(fhirBase);
  const state = randomText(24);
  const verifier = randomText(48); // 64 characters of [A-Za-z0-9_-] (RFC 7636: 43 to 128)
  sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier, tokenEndpoint, returnTo: returnTo || "#/" }));
  sessionStorage.removeItem(SIGNED_OUT);
  const url = new URL(authorizationEndpoint);
  const params = {
    response_type: "code",
    client_id: settings.clientId,
    redirect_uri: appAddress(),
    scope: settings.scope,
    state,
    aud: settings.audience,
    resource: settings.audience,
    code_challenge: await codeChallenge(verifier),
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  window.location.assign(url.href);
}

/** True when the address is the provider's answer (?code, ?error or ?state). */
export function isSignInAnswer(url) {
  return ["code", "error", "state"].some((name) => url.searchParams.has(name));
}

function idTokenClaims(idToken) {
  if (typeof idToken !== "string") return {};
  try {
    const part = idToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0))));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

function userName(claims) {
  for (const name of ["name", "preferred_username", "fhirUser", "sub"]) {
    if (typeof claims[name] === "string" && claims[name]) return claims[name];
  }
  return "unknown user";
}

/** Finish a sign-in from the provider's answer at ``url``: the view to show (a hash); SignInError when refused. */
export async function finishSignIn(url) {
  const pending = readJson(PENDING);
  sessionStorage.removeItem(PENDING); // one answer per sign-in
  const params = url.searchParams;
  window.history.replaceState(null, "", appAddress() + ((pending && pending.returnTo) || "#/"));
  if (!pending) throw new SignInError("This tab started no sign-in: the answer was ignored.");
  if (params.get("state") !== pending.state) {
    throw new SignInError("The sign-in answer does not belong to the sign-in this tab started (state differs): refused.");
  }
  if (params.get("error")) {
    const description = params.get("error_description");
    throw new SignInError(`The sign-in was refused: ${params.get("error")}${description ? ` (${description})` : ""}`);
  }
  const code = params.get("code");
  if (!code) throw new SignInError("The sign-in answer carries no code.");
  const form = new URLSearchParams({
    grant_type: "authorization_code",
    code,
    redirect_uri: appAddress(),
    client_id: settings.clientId,
    code_verifier: pending.verifier,
    resource: settings.audience,
  });
  let response;
  try {
    response = await fetch(pending.tokenEndpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: form,
      credentials: "omit",
    });
  } catch (error) {
    throw new SignInError(`The token endpoint could not be reached (${error.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || typeof body.access_token !== "string") {
    const reason = (body && (body.error_description || body.error)) || `${response.status} ${response.statusText}`;
    throw new SignInError(`The token endpoint refused the sign-in: ${reason}`);
  }
  if (body.token_type && String(body.token_type).toLowerCase() !== "bearer") {
    throw new SignInError(`The token endpoint answered a ${body.token_type} token, not a bearer token`);
  }
  const lifetime = Number(body.expires_in) > 0 ? Number(body.expires_in) : 300;
  const now = Date.now();
  const session = {
    accessToken: body.access_token,
    expiresAt: now + lifetime * 1000,
    obtainedAt: now,
    scope: typeof body.scope === "string" ? body.scope : settings.scope,
    user: userName(idTokenClaims(body.id_token)),
  };
  sessionStorage.setItem(SESSION, JSON.stringify(session));
  return pending.returnTo;
}
