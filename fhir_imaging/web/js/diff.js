// What changed between two versions of a resource: a flat list of paths added, removed or changed, from the leaves
// of both JSON documents. Simple on purpose: an array whose items moved shows as changed items.

const IGNORED = new Set(["meta.versionId", "meta.lastUpdated"]);

/** {path: leaf value} of a JSON document ("series[0].modality.code": "CT"). */
export function flatten(value, path = "", out = new Map()) {
  if (Array.isArray(value)) {
    if (value.length === 0) out.set(path, []);
    value.forEach((item, index) => flatten(item, `${path}[${index}]`, out));
  } else if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0 && path) out.set(path, {});
    for (const key of keys) flatten(value[key], path ? `${path}.${key}` : key, out);
  } else {
    out.set(path, value);
  }
  return out;
}

/** [{op: "add" | "remove" | "change", path, before, after}] from ``older`` to ``newer``, in path order. */
export function jsonDiff(older, newer) {
  const before = flatten(older || {});
  const after = flatten(newer || {});
  const changes = [];
  for (const [path, value] of after) {
    if (IGNORED.has(path)) continue;
    if (!before.has(path)) changes.push({ op: "add", path, after: value });
    else if (JSON.stringify(before.get(path)) !== JSON.stringify(value)) {
      changes.push({ op: "change", path, before: before.get(path), after: value });
    }
  }
  for (const [path, value] of before) {
    if (!IGNORED.has(path) && !after.has(path)) changes.push({ op: "remove", path, before: value });
  }
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** One line of text per change: "+ path: value", "- path: value", "~ path: before → after". */
export function diffLines(changes) {
  const show = (value) => JSON.stringify(value);
  return changes.map((c) => {
    if (c.op === "add") return `+ ${c.path}: ${show(c.after)}`;
    if (c.op === "remove") return `- ${c.path}: ${show(c.before)}`;
    return `~ ${c.path}: ${show(c.before)} → ${show(c.after)}`;
  });
}
