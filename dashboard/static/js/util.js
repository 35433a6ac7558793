// Small DOM and formatting helpers. Server data only ever goes into textContent.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const SHORT = {
  heart_rate: "HR", spo2: "SpO2", respiratory_rate: "RR", systolic_bp: "SBP",
  diastolic_bp: "DBP", mean_bp: "MAP", body_temperature: "Temp", body_weight: "Weight",
  glucose: "Glucose", cgm_glucose: "CGM", steps: "Steps", hrv_sdnn: "HRV",
};
export const TILE_METRICS = ["heart_rate", "spo2", "respiratory_rate", "systolic_bp",
  "body_temperature", "cgm_glucose", "glucose"];
export const PRIORITY_RANK = { high: 0, medium: 1, low: 2, info: 3 };
export const BAND_RANK = { high: 0, medium: 1, "low-medium": 2, low: 3 };

export function label(metric) { return SHORT[metric] || metric || ""; }

export function fmt(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return (Math.round(value * 10) / 10).toString();
  return (Math.round(value * 100) / 100).toString();
}

export function age(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "no data";
  if (seconds < 0) seconds = 0;
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function when(us) {
  if (!us) return "–";
  return new Date(us / 1000).toLocaleString();
}

export function arrow(trend) { return trend > 0 ? "↑" : trend < 0 ? "↓" : "→"; }

export function alertText(a) {
  if (a.rule_kind === "threshold" && a.metric && a.trigger_value !== null) {
    const op = a.side === "low" ? "≤" : "≥";
    return `${label(a.metric)} ${fmt(a.trigger_value)} ${op} ${fmt(a.trigger_limit)}`;
  }
  return a.message || `${a.rule_id} ${a.side}`;
}
