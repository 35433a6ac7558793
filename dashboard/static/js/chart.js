// A small SVG trend chart: the care plan's bands behind, min-max range and the line on top.

const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 180, L = 40, R = 8, T = 8, B = 20;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// bands: {low, high, critical_low, critical_high} in the metric's canonical unit (any may be null)
export function drawChart(container, { points, startUs, endUs, bands, unit }) {
  const values = points.flatMap((p) => [p[2], p[3]]).filter((v) => v !== null);
  const limits = bands ? Object.values(bands).filter((v) => v !== null && v !== undefined) : [];
  let lo = Math.min(...values, ...limits);
  let hi = Math.max(...values, ...limits);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad; hi += pad;
  const x = (t) => L + ((t - startUs) / Math.max(endUs - startUs, 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    role: "img", "aria-label": `trend ${unit || ""}` });
  const band = (from, to, cls) => {
    const a = Math.max(Math.min(from, to), lo), b = Math.min(Math.max(from, to), hi);
    if (b <= a) return;
    root.append(svg("rect", { x: L, width: W - L - R, y: y(b), height: y(a) - y(b), class: cls }));
  };
  if (bands) {
    const { low, high, critical_low: cl, critical_high: ch } = bands;
    const okLo = low ?? cl ?? lo, okHi = high ?? ch ?? hi;
    band(okLo, okHi, "band-ok");
    if (low !== null && low !== undefined) band(cl ?? lo, low, "band-warn");
    if (cl !== null && cl !== undefined) band(lo, cl, "band-crit");
    if (high !== null && high !== undefined) band(high, ch ?? hi, "band-warn");
    if (ch !== null && ch !== undefined) band(ch, hi, "band-crit");
    for (const [v, cls] of [[low, "warn"], [high, "warn"], [cl, "crit"], [ch, "crit"]]) {
      if (v === null || v === undefined) continue;
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: `limit ${cls}` }));
    }
  }
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    const t = svg("text", { x: 2, y: y(v) + 3, class: "tick" });
    t.textContent = Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1);
    root.append(t);
  }
  for (const frac of [0, 0.5, 1]) {
    const t = svg("text", { x: L + frac * (W - L - R) - (frac === 1 ? 34 : 0), y: H - 5, class: "tick" });
    t.textContent = new Date((startUs + frac * (endUs - startUs)) / 1000)
      .toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    root.append(t);
  }
  if (points.length) {
    const ranged = points.filter((p) => p[4] > 1);
    if (ranged.length) {
      const top = ranged.map((p) => `${x(p[0])},${y(p[3])}`);
      const bottom = ranged.slice().reverse().map((p) => `${x(p[0])},${y(p[2])}`);
      root.append(svg("polygon", { points: top.concat(bottom).join(" "), class: "range" }));
    }
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    root.append(svg("path", { d: d.join(""), class: "line" }));
  }
  container.replaceChildren(root);
}
