// A stacked bar chart in SVG, drawn here (no library): one bar per month, one colour per modality.

import { h, svg } from "./dom.js";

const COLOURS = ["#0b5cad", "#e07b00", "#2a9d4b", "#b83280", "#6b4fbb", "#c2a000", "#1f9fb5", "#8a5a44", "#7a8794",
  "#d1495b", "#00798c", "#52489c"];

/** ``months``: ["2024-01", …]; ``series``: Map modality → Map month → count. */
export function stackedBars(months, series, { width = 960, height = 280 } = {}) {
  const left = 44;
  const bottom = 40;
  const top = 10;
  const plotHeight = height - top - bottom;
  const keys = [...series.keys()];
  const totals = months.map((m) => keys.reduce((sum, k) => sum + (series.get(k).get(m) || 0), 0));
  const max = Math.max(1, ...totals);
  const step = (width - left - 10) / Math.max(1, months.length);
  const barWidth = Math.max(2, step * 0.75);
  const scale = (n) => (n / max) * plotHeight;
  const parts = [];
  for (const tick of new Set([0, Math.round(max / 2), max])) {
    const y = top + plotHeight - scale(tick);
    parts.push(svg("line", { x1: left, x2: width - 10, y1: y, y2: y, stroke: "#d5dbe0" }),
      svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, tick.toLocaleString()));
  }
  months.forEach((month, i) => {
    let y = top + plotHeight;
    const x = left + i * step + (step - barWidth) / 2;
    keys.forEach((key, k) => {
      const n = series.get(key).get(month) || 0;
      if (!n) return;
      const barHeight = scale(n);
      y -= barHeight;
      parts.push(svg("rect", { x, y, width: barWidth, height: barHeight, fill: COLOURS[k % COLOURS.length] },
        svg("title", {}, `${month} ${key}: ${n}`)));
    });
    if (months.length <= 13 || i % Math.ceil(months.length / 12) === 0) {
      parts.push(svg("text", { x: x + barWidth / 2, y: height - bottom + 14, "text-anchor": "middle" }, month));
    }
  });
  const figure = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", width, height,
    "aria-label": "Studies per month by modality" }, parts);
  const legend = h("div", { class: "legend" }, keys.map((key, k) => h("span", {},
    h("span", { class: "swatch", dataset: { colour: String(k) } }), key)));
  // Colours of the legend swatches are SVG too, so that no inline style is needed (the CSP forbids it).
  legend.querySelectorAll(".swatch").forEach((el) => {
    const k = Number(el.dataset.colour);
    el.replaceWith(svg("svg", { width: 10, height: 10, class: "swatch" },
      svg("rect", { width: 10, height: 10, fill: COLOURS[k % COLOURS.length] })));
  });
  return h("div", { class: "chart" }, figure, legend);
}
