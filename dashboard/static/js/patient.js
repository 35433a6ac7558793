// Patient detail: trend charts with the care plan's bands, open alerts, alert timeline.
import { api } from "./api.js";
import { actions } from "./alerts.js";
import { drawChart } from "./chart.js";
import { alertText, el, label, when } from "./util.js";
import { alertsOf, tile } from "./ward.js";

const CHART_METRICS = ["heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp",
  "body_temperature", "cgm_glucose", "glucose", "body_weight", "steps", "hrv_sdnn", "mean_bp"];
const HOUR_US = 3600e6;

export function bandsFor(plan, metric) {
  if (!plan) return null;
  const rule = plan.rule.find((r) => r.kind === "threshold" && r.metric === metric && !r.unit);
  if (!rule) return null;
  return { low: rule.low ?? null, high: rule.high ?? null,
    critical_low: rule.critical_low ?? null, critical_high: rule.critical_high ?? null };
}

export function render(main, ctx, pid) {
  const state = ctx.state;
  const summary = el("div", { id: "patient-summary" });
  const open = el("div", { id: "patient-alerts" });
  const charts = el("div", { class: "charts", id: "charts" });
  const timeline = el("ul", { class: "timeline", id: "timeline" });
  const range = el("select", { id: "range" }, ...[1, 6, 24].map((h) => el("option", { value: h }, `${h} h`)));
  const error = el("p", { class: "error" });
  main.replaceChildren(
    el("div", { class: "toolbar" }, el("a", { href: "#/ward" }, "← Ward"),
      el("h2", {}, `Patient ${pid}`), el("a", { href: `#/plans/${encodeURIComponent(pid)}`, id: "plan-link" }, "Care plan"),
      el("span", { class: "spacer" }), "Range ", range),
    summary, error, el("h3", {}, "Open alerts"), open, el("h3", {}, "Trends"), charts,
    el("h3", {}, "Timeline: alerts, acknowledgements, escalations, plan changes"), timeline);
  let plan = null;
  const data = new Map();

  const drawSummary = () => {
    const p = state.patients.get(pid);
    summary.replaceChildren(p ? tile(state, p, () => {}) : el("p", { class: "muted" }, "no data yet"));
    const alerts = alertsOf(state, pid);
    open.replaceChildren(...(alerts.length ? alerts.map((a) => el("div", { class: "panel", "data-alert": a.alert_id },
      el("div", { class: `alert-line prio-${a.priority}` }, alertText(a), el("span", { class: "state" }, a.state)),
      el("div", { class: "muted" }, `opened ${when(a.opened_at_us)} · rule ${a.rule_id} · plan v${a.plan_version}`,
        a.sustain ? ` · sustained ${a.sustain}` : "", a.escalation_level ? ` · escalated ×${a.escalation_level}` : ""),
      actions(ctx, a))) : [el("p", { class: "muted" }, "none")]));
  };
  const drawCharts = () => {
    const now = state.nowUs();
    const start = now - Number(range.value) * HOUR_US;
    charts.replaceChildren(...[...data.entries()].map(([metric, d]) => {
      const box = el("div", { class: "chart", "data-metric": metric },
        el("h4", {}, `${label(metric)} (${d.unit})`));
      const area = el("div");
      box.append(area);
      drawChart(area, { points: d.points.filter((p) => p[0] >= start), startUs: start, endUs: now,
        bands: bandsFor(plan, metric), unit: d.unit });
      return box;
    }));
  };
  const loadTimeline = async () => {
    const items = (await api("GET", `/api/patients/${encodeURIComponent(pid)}/timeline`)).items;
    timeline.replaceChildren(...(items.length ? items.map((i) => el("li", { "data-kind": i.kind },
      el("span", { class: "muted" }, when(i.at_us)), " ", el("span", { class: "kind" }, i.kind), " ",
      i.source === "alert" ? `${i.rule_id}/${i.side} (${i.priority})` : i.target, " by ", i.actor,
      i.role ? ` [${i.role}]` : "", i.detail ? `: ${i.detail}` : "")) : [el("li", { class: "muted" }, "nothing yet")]));
  };
  const load = async () => {
    error.textContent = "";
    try {
      plan = await api("GET", `/api/patients/${encodeURIComponent(pid)}/care-plan`);
    } catch (e) { plan = null; }
    const p = state.patients.get(pid);
    const metrics = CHART_METRICS.filter((m) => p && p.vitals[m]);
    const end = state.nowUs();
    const start = end - Number(range.value) * HOUR_US;
    data.clear();
    try {
      for (const m of metrics) {
        const h = await api("GET", `/api/patients/${encodeURIComponent(pid)}/readings?metric=${m}` +
          `&start_us=${Math.floor(start)}&end_us=${Math.floor(end)}`);
        data.set(m, { unit: h.unit, points: h.points });
      }
      drawCharts();
      await loadTimeline();
    } catch (e) { error.textContent = e.message; }
  };
  range.addEventListener("change", load);
  drawSummary();
  load();
  const off = state.subscribe((c) => {
    if (c.type === "vitals" && c.patients.has(pid)) {
      for (const [p, metric, value, t] of c.rows) {
        if (p !== pid) continue;
        if (!data.has(metric)) { load(); return; }
        data.get(metric).points.push([t, value, value, value, 1]);
      }
      drawCharts();
    }
    if (c.type === "snapshot") load();
    if (c.type === "alerts" || c.type === "plans") { load(); }
    drawSummary();
  });
  return off;
}
