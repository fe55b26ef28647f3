// A study's series table; a series' instances are listed when asked for (a CT series holds hundreds), with the
// SOP class shown by name (sop.js).

import { h } from "./dom.js";
import * as fmt from "./format.js";
import { loadSopClasses, sopClassName } from "./sop.js";

export function seriesTable(study) {
  const series = study.series || [];
  if (series.length === 0) return h("p", { class: "empty" }, "This study lists no series.");
  const rows = series.map((item, index) => seriesRows(item, index)).flat();
  return h("div", { class: "table-wrap" },
    h("table", { class: "series", "aria-label": "Series" },
      h("thead", {}, h("tr", {}, ["Number", "Modality", "Description", "Body site", "Laterality", "Instances",
        `Started (${fmt.timeZoneName()})`, ""].map((label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, rows)));
}

function seriesRows(item, index) {
  const instances = item.instance || [];
  const detail = h("tr", { class: "instances", hidden: true }, h("td", { colspan: "8" }));
  const toggle = h("button", {
    type: "button",
    "aria-expanded": "false",
    disabled: instances.length === 0,
    dataset: { series: String(index) },
    on: { click: () => showInstances(toggle, detail, instances) },
  }, instances.length ? `Instances (${instances.length})` : "No instances listed");
  const row = h("tr", { dataset: { uid: item.uid || "" } },
    h("td", { class: "num" }, item.number ?? ""),
    h("td", {}, (item.modality && item.modality.code) || ""),
    h("td", {}, item.description || ""),
    h("td", {}, fmt.codingText(item.bodySite)),
    h("td", {}, fmt.codingText(item.laterality)),
    h("td", { class: "num" }, item.numberOfInstances ?? instances.length),
    h("td", { class: "nowrap" }, fmt.dateTime(item.started)),
    h("td", {}, toggle));
  return [row, detail];
}

async function showInstances(toggle, detail, instances) {
  const open = toggle.getAttribute("aria-expanded") === "true";
  toggle.setAttribute("aria-expanded", String(!open));
  detail.hidden = open;
  if (open || detail.dataset.filled) return;
  const classes = await loadSopClasses();
  detail.dataset.filled = "1";
  detail.firstChild.replaceChildren(h("table", { class: "instance-list", "aria-label": "Instances" },
    h("thead", {}, h("tr", {}, ["Number", "SOP class", "SOP Instance UID"].map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, instances.map((instance) => h("tr", {},
      h("td", { class: "num" }, instance.number ?? ""),
      h("td", { title: (instance.sopClass && instance.sopClass.code) || "" },
        sopClassName(classes, instance.sopClass && instance.sopClass.code)),
      h("td", { class: "mono" }, instance.uid || ""))))));
}
