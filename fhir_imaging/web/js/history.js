// A resource's version history, newest first, each version with what changed since the one before (diff.js).

import { h, replace } from "./dom.js";
import { diffLines, jsonDiff } from "./diff.js";
import { fhirGet, fhirUrl } from "./fhir.js";
import * as fmt from "./format.js";
import { failure, loading } from "./status.js";

export function historySection(type, id, signal) {
  const body = h("div", {}, loading("Loading the history…"));
  load();
  return h("section", { "aria-label": "History" }, h("h2", {}, "Version history"), body);

  async function load() {
    let bundle;
    try {
      bundle = await fhirGet(fhirUrl(`${type}/${id}/_history`, [["_count", "50"]]), { signal });
    } catch (error) {
      if (error.name !== "AbortError") replace(body, failure(error));
      return;
    }
    const versions = (bundle.entry || []).map((entry) => ({
      resource: entry.resource || null,
      method: (entry.request && entry.request.method) || "",
      version: (entry.resource && entry.resource.meta && entry.resource.meta.versionId)
        || (entry.response && (entry.response.etag || "").replace(/^W\/"(.*)"$/, "$1")) || "",
      when: (entry.resource && entry.resource.meta && entry.resource.meta.lastUpdated)
        || (entry.response && entry.response.lastModified) || "",
    }));
    replace(body, h("ol", { class: "history", reversed: true }, versions.map((v, index) => {
      const older = versions[index + 1];
      const title = `Version ${v.version} — ${fmt.dateTime(v.when)}${v.method === "DELETE" ? " (deleted)" : ""}`;
      let changes;
      if (!older) changes = h("p", { class: "notice" }, "First version");
      else if (!v.resource) changes = h("p", { class: "notice" }, "Deleted");
      else {
        const lines = diffLines(jsonDiff(older.resource, v.resource));
        changes = lines.length
          ? h("pre", { class: "json diff" }, lines.map((line) => h("span", {
            class: line.startsWith("+") ? "diff-add" : line.startsWith("-") ? "diff-del" : "" }, `${line}\n`)))
          : h("p", { class: "notice" }, "No change in content");
      }
      return h("li", { dataset: { version: String(v.version) } }, h("strong", {}, title), changes);
    })));
  }
}
