// A real OpenID provider (oidc-provider 9) for the end-to-end tests of SMART-on-FHIR authorization.
//
//   node provider.mjs --clients clients.json [--users users.json] [--port 0] [--token-ttl 300]
//
// Listens on 127.0.0.1 only. The issuer is http://127.0.0.1:PORT (discovery at /.well-known/openid-configuration,
// keys at /jwks). With --port 0 (the default) the system picks the port. Once listening it prints one JSON line on
// stdout: {"ready": true, "issuer": ..., "port": ..., "token_endpoint": ..., "jwks_uri": ...,
// "introspection_endpoint": ..., "revocation_endpoint": ..., "kids": {...}}.
// oidc-provider may print notices of its own on stdout and stderr: a reader looks for the line with "ready".
//
// Grants: client_credentials (the default of a client), and authorization_code with PKCE for a public client that
// asks for it (see "Sign-in" below). Every token request must name the resource server with `resource` (RFC 8707):
// the access token is then a JWT (typ at+jwt) whose `aud` is exactly that resource string, e.g. the FHIR base URL
// http://127.0.0.1:8080/baseR4. A request without `resource` is refused (invalid_target). A client with
// "access_token_format": "opaque" gets opaque tokens instead (random strings, stored in the provider's memory), with
// the same audience, scope, lifetime and extra claims, which only the introspection endpoint can tell.
//
// Token introspection (RFC 7662) at /token/introspection and revocation (RFC 7009) at /token/revocation, both with
// client authentication (client_secret_basic). Any client that authenticates may introspect any opaque token, as a
// resource server does; the answer is {"active": true, "client_id", "exp", "iat", "iss", "aud", "scope",
// "token_type": "Bearer", "patient"/"fhirUser" when the client has them} or {"active": false} (unknown, expired or
// revoked). A client may revoke its own tokens. JWT access tokens can be neither introspected nor revoked (the
// endpoints answer 400 unsupported_token_type): they are checked against the JWKS.
//
// Clients (--clients: a JSON file, or the JSON text itself when it starts with "["): a list of oidc-provider client
// metadata objects, e.g.
//   {"client_id": "app", "client_secret": "s3cret", "scope": "system/*.rs patient/*.read",
//    "patient": "p-1", "fhirUser": "Practitioner/dr-1", "access_token_alg": "ES256"}
// - client_secret: client_secret_basic authentication (the default; any other oidc-provider client metadata, such
//   as token_endpoint_auth_method "private_key_jwt" with "jwks", is passed through as given);
// - scope: the scopes the client may ask for (space-separated; SMART scopes such as system/*.rs, user/*.cruds,
//   patient/ImagingStudy.rs). Asking for any other scope is refused with invalid_scope. The token's `scope` is the
//   requested scopes (none requested: no `scope` claim);
// - patient, fhirUser (optional): copied into every access token of that client as the claims of the same names;
// - access_token_alg (optional): "RS256" (the default) or "ES256", the algorithm that signs the client's tokens;
// - access_token_format (optional): "jwt" (the default) or "opaque".
//
// Sign-in (authorization code with PKCE, e.g. a browser app's SMART standalone launch): a client such as
//   {"client_id": "browser", "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
//    "response_types": ["code"], "redirect_uris": ["http://127.0.0.1:8080/app/"],
//    "scope": "openid fhirUser user/*.rs"}
// is public (no secret; PKCE with S256 required; the token endpoint answers CORS requests from its redirect URIs'
// origins). The authorization request names the FHIR server with `resource` (and so must the token request): the
// access token is then a JWT for that audience whose scope is the requested SMART scopes (openid, fhirUser and
// profile are the ID token's business) and whose sub is the user's. The users (--users: a JSON file, or the JSON
// text itself when it starts with "["), e.g.
//   {"login": "alice", "password": "wonderland", "sub": "alice", "name": "Alice Liddell",
//    "fhirUser": "Practitioner/alice"}
// sign in at a plain login form (/interaction/UID: fields "login" and "password", button "Sign in"), then allow the
// client on a consent page (button "Allow"). The ID token carries sub, name (scope profile or fhirUser) and fhirUser
// (scope fhirUser). Nothing on these pages loads from anywhere but the provider.
//
// Keys: one RS256 (RSA 2048) and one ES256 (P-256) signing key, generated at start, each with a fresh random kid.
// Admin endpoints on the same port (loopback only, no authentication; this is a test fixture):
//   POST /admin/rotate            new RS256 and ES256 keys with new kids sign every token from now on; the JWKS
//                                 publishes the new keys only (the old ones are gone: tokens they signed no
//                                 longer verify against the published JWKS)
//   POST /admin/rotate?keep_old=1 the same, but the previous keys stay published (not used for signing), as in a
//                                 graceful rotation
//   GET  /admin/keys              the kids in use and the kids published
// Both answer {"kids": {"RS256": kid, "ES256": kid}, "published": [kid, ...]}.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const ALGORITHMS = ['RS256', 'ES256'];
const FORMATS = ['jwt', 'opaque'];
const EXTRA_CLIENT_PROPERTIES = ['patient', 'fhirUser', 'access_token_alg', 'access_token_format'];

const { values: options } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    clients: { type: 'string', default: '[]' },
    users: { type: 'string', default: '[]' },
    'token-ttl': { type: 'string', default: '300' },
  },
});

const port = Number(options.port);
const tokenTtl = Number(options['token-ttl']);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: not a port: ${options.port}`);
if (!Number.isSafeInteger(tokenTtl) || tokenTtl <= 0) throw new Error(`--token-ttl: not a positive integer`);

function jsonList(option) {
  return JSON.parse(option.trimStart().startsWith('[') ? option : readFileSync(option, 'utf8'));
}

const users = jsonList(options.users);
if (!Array.isArray(users)) throw new Error('--users: expected a JSON list of user objects');

const clients = (() => {
  const list = jsonList(options.clients);
  if (!Array.isArray(list)) throw new Error('--clients: expected a JSON list of client objects');
  for (const client of list) {
    if (client.access_token_alg !== undefined && !ALGORITHMS.includes(client.access_token_alg)) {
      throw new Error(`client ${client.client_id}: access_token_alg must be one of ${ALGORITHMS.join(', ')}`);
    }
    if (client.access_token_format !== undefined && !FORMATS.includes(client.access_token_format)) {
      throw new Error(`client ${client.client_id}: access_token_format must be one of ${FORMATS.join(', ')}`);
    }
  }
  return list.map((client) => ({
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    ...client,
  }));
})();

// Every scope some client may ask for: oidc-provider only accepts a client's `scope` made of provider scopes.
const OIDC_SCOPES = new Set(['openid', 'profile', 'fhirUser', 'offline_access']);
const scopes = new Set(['openid', 'profile', 'fhirUser']);
for (const client of clients) {
  for (const scope of (client.scope || '').split(' ').filter(Boolean)) scopes.add(scope);
}

function newKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = {
  current: Object.fromEntries(ALGORITHMS.map((alg) => [alg, newKey(alg)])),
  retired: [], // previous keys still published after a rotation with keep_old
};

function publishedKeys() {
  return [...Object.values(keys.current), ...keys.retired];
}

function keyReport() {
  return {
    kids: Object.fromEntries(Object.entries(keys.current).map(([alg, key]) => [alg, key.kid])),
    published: publishedKeys().map((key) => key.kid),
  };
}

// A new Provider on the current keys: oidc-provider reads its keys once, so a rotation builds a new instance and the
// HTTP server hands every later request to it. Clients are static configuration; JWT access tokens are stored nowhere,
// opaque ones in oidc-provider's memory adapter, which every instance shares (they survive a rotation).
function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients,
    claims: { openid: ['sub'], profile: ['name'], fhirUser: ['fhirUser', 'name'] },
    conformIdTokenClaims: false, // the ID token carries the claims of its scopes (the app shows who signed in)
    async findAccount(_ctx, sub) {
      const user = users.find((candidate) => candidate.sub === sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, name: user.name, fhirUser: user.fhirUser };
        },
      };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    jwks: { keys: publishedKeys() },
    scopes: [...scopes],
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    extraClientMetadata: {
      properties: EXTRA_CLIENT_PROPERTIES,
      validator(_ctx, key, value) {
        if (value !== undefined && typeof value !== 'string') {
          throw new errors.InvalidClientMetadata(`${key} must be a string`);
        }
      },
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // A resource server introspects tokens issued to other clients: any authenticated client may.
        async allowedPolicy(_ctx, client) {
          return client.clientAuthMethod !== 'none';
        },
      },
      revocation: {
        enabled: true,
        async allowedPolicy(_ctx, client, token) {
          return token.clientId === client.clientId;
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, _client, oneOf) {
          if (oneOf) return oneOf;
          throw new errors.InvalidTarget('the resource parameter (the FHIR base URL) is required');
        },
        async getResourceServerInfo(ctx, resource, client) {
          const allowed = new Set((client.scope || '').split(' ').filter(Boolean));
          const requested = (ctx.oidc.params.scope || '').split(' ').filter(Boolean);
          const refused = requested.filter((scope) => !allowed.has(scope));
          if (refused.length) {
            throw new errors.InvalidScope('requested scope is not allowed for this client', refused.join(' '));
          }
          const alg = client.access_token_alg || 'RS256';
          return {
            audience: resource,
            scope: [...allowed].filter((scope) => !OIDC_SCOPES.has(scope)).join(' '),
            accessTokenFormat: client.access_token_format || 'jwt',
            accessTokenTTL: tokenTtl,
            jwt: { sign: { alg, kid: keys.current[alg].kid } },
          };
        },
      },
    },
    async extraTokenClaims(ctx, _token) {
      const client = ctx.oidc.client;
      const claims = {};
      if (client?.patient) claims.patient = client.patient;
      if (client?.fhirUser) claims.fhirUser = client.fhirUser;
      return Object.keys(claims).length ? claims : undefined;
    },
    ttl: { ClientCredentials: tokenTtl, AccessToken: tokenTtl },
  });
  return provider;
}

let current; // the current provider
let handler; // its request handler

function use(provider) {
  current = provider;
  handler = provider.callback();
}

// -- sign-in pages (the provider's interactions): a login form and a consent page, plain HTML, nothing external ----

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, title, body) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>`
    + `<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`);
}

function loginPage(res, uid, clientId, problem) {
  page(res, 'Sign in', `<p>to ${escapeHtml(clientId)}</p>${problem ? `<p role="alert">${escapeHtml(problem)}</p>` : ''}`
    + `<form method="post" action="/interaction/${escapeHtml(uid)}">`
    + '<label>Login <input name="login" autocomplete="username" required></label> '
    + '<label>Password <input name="password" type="password" autocomplete="current-password" required></label> '
    + '<button type="submit">Sign in</button></form>');
}

function consentPage(res, uid, clientId, scope) {
  page(res, 'Allow access', `<p>${escapeHtml(clientId)} asks for: <code>${escapeHtml(scope || '')}</code></p>`
    + `<form method="post" action="/interaction/${escapeHtml(uid)}"><button type="submit">Allow</button></form>`);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      text += chunk;
      if (text.length > 16384) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(text)));
    req.on('error', reject);
  });
}

async function interaction(req, res) {
  const provider = current;
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'GET') {
    if (prompt.name === 'login') return loginPage(res, uid, params.client_id);
    return consentPage(res, uid, params.client_id, params.scope);
  }
  if (req.method !== 'POST') return answer(res, 405, { error: 'use GET or POST' });
  const form = await readForm(req);
  if (prompt.name === 'login') {
    const user = users.find((candidate) => candidate.login === form.get('login')
      && candidate.password === form.get('password'));
    if (!user) return loginPage(res, uid, params.client_id, 'Unknown login or wrong password.');
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, {
      mergeWithLastSubmission: false,
    });
  }
  const missing = prompt.details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, {
    mergeWithLastSubmission: true,
  });
}

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function admin(req, res, issuer) {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/admin/rotate') {
    if (req.method !== 'POST') return answer(res, 405, { error: 'use POST' });
    const keepOld = ['1', 'true', 'yes'].includes(url.searchParams.get('keep_old') || '');
    const previous = Object.values(keys.current);
    keys.current = Object.fromEntries(ALGORITHMS.map((alg) => [alg, newKey(alg)]));
    keys.retired = keepOld ? [...previous, ...keys.retired] : [];
    use(buildProvider(issuer));
    return answer(res, 200, keyReport());
  }
  if (url.pathname === '/admin/keys') {
    if (req.method !== 'GET') return answer(res, 405, { error: 'use GET' });
    return answer(res, 200, keyReport());
  }
  return answer(res, 404, { error: 'unknown admin endpoint' });
}

const server = http.createServer((req, res) => {
  const issuer = `http://${HOST}:${server.address().port}`;
  if (req.url.startsWith('/admin/')) {
    // Drain any request body before answering.
    req.resume();
    req.on('end', () => {
      try {
        admin(req, res, issuer);
      } catch (error) {
        answer(res, 500, { error: String(error) });
      }
    });
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => answer(res, 400, { error: String(error.message || error) }));
    return;
  }
  handler(req, res);
});

server.listen(port, HOST, () => {
  const actual = server.address().port;
  const issuer = `http://${HOST}:${actual}`;
  use(buildProvider(issuer));
  process.stdout.write(`${JSON.stringify({
    ready: true,
    issuer,
    port: actual,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    introspection_endpoint: `${issuer}/token/introspection`,
    revocation_endpoint: `${issuer}/token/revocation`,
    ...keyReport(),
  })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
