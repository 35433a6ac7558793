// Ward grid: one tile per patient, ordered by active alert priority, NEWS2 band, staleness.
import { BAND_RANK, PRIORITY_RANK, TILE_METRICS, age, alertText, arrow, el, fmt, label } from "./util.js";

export function alertsOf(state, pid) {
  return [...state.alerts.values()].filter((a) => a.patient_id === pid)
    .sort((a, b) => PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority]);
}

function lastUs(p) {
  const ts = Object.values(p.vitals).map((v) => v.t_us);
  return ts.length ? Math.max(...ts) : null;
}

export function wardOrder(state) {
  const now = state.nowUs();
  const key = (p) => {
    const alerts = alertsOf(state, p.patient_id);
    const prio = alerts.length ? PRIORITY_RANK[alerts[0].priority] : 4;
    const band = p.news2 ? BAND_RANK[p.news2.risk_band] ?? 4 : 4;
    const last = lastUs(p);
    return [prio, band, last === null ? -Infinity : -(now - last), p.patient_id];
  };
  return [...state.patients.values()].map((p) => [key(p), p]).sort((a, b) => {
    for (let i = 0; i < 4; i++) if (a[0][i] !== b[0][i]) return a[0][i] < b[0][i] ? -1 : 1;
    return 0;
  }).map((x) => x[1]);
}

function ageClass(seconds) {
  if (seconds === null || seconds > 300) return "age dead";
  return seconds > 60 ? "age stale" : "age";
}

export function tile(state, p, onOpen) {
  const alerts = alertsOf(state, p.patient_id);
  const top = alerts[0];
  const last = lastUs(p);
  const seconds = last === null ? null : (state.nowUs() - last) / 1e6;
  const vitals = TILE_METRICS.filter((m) => p.vitals[m]).slice(0, 6).map((m) => {
    const v = p.vitals[m];
    const text = m === "systolic_bp" && p.vitals.diastolic_bp
      ? `${fmt(v.value)}/${fmt(p.vitals.diastolic_bp.value)}` : fmt(v.value);
    return el("div", { class: "vital", "data-metric": m },
      el("span", { class: "name" }, m === "systolic_bp" ? "BP" : label(m)),
      el("span", {}, el("span", { class: "val" }, text),
        el("span", { class: "arrow", title: `change ${fmt(v.delta)}` }, arrow(v.trend))));
  });
  const news2 = p.news2
    ? el("span", { class: `news2 band-${p.news2.risk_band}`,
        title: p.news2.complete ? "all parameters fresh" : `missing: ${p.news2.missing.join(", ")}` },
      `NEWS2 ${p.news2.aggregate}${p.news2.complete ? "" : "+"} ${p.news2.risk_band}`)
    : null;
  const unacked = alerts.filter((a) => a.state !== "acknowledged");
  const alarm = unacked.length ? `alarm-${unacked[0].priority}` : "";
  return el("article", { class: `tile ${alarm}`, "data-patient": p.patient_id,
      onclick: () => onOpen(p.patient_id) },
    el("div", { class: "head" }, el("span", { class: "pid" }, p.patient_id), news2,
      p.plan_version ? el("span", { class: "plan" }, `plan v${p.plan_version}`) : null,
      el("span", { class: ageClass(seconds), "data-age": "" }, age(seconds))),
    el("div", { class: "vitals" }, vitals.length ? vitals : el("span", { class: "muted" }, "no readings")),
    top ? el("div", { class: `alert-line prio-${top.priority} ${top.state}`, "data-alert": top.alert_id },
      el("span", {}, top.priority === "high" ? "***" : top.priority === "medium" ? "**" : "*"),
      el("span", { class: "text" }, alertText(top)),
      el("span", { class: "state" },
        top.state === "acknowledged" ? `ack ${top.acknowledged_by}` : top.state,
        top.plan_version ? ` · v${top.plan_version}` : "",
        alerts.length > 1 ? ` · +${alerts.length - 1}` : "")) : null);
}

export function render(main, ctx) {
  const grid = el("div", { class: "grid", id: "ward-grid" });
  main.replaceChildren(el("h2", {}, "Ward"), grid);
  const draw = () => {
    grid.replaceChildren(...wardOrder(ctx.state).map((p) =>
      tile(ctx.state, p, (pid) => ctx.navigate(`#/patient/${encodeURIComponent(pid)}`))));
  };
  draw();
  const off = ctx.state.subscribe(draw);
  const timer = setInterval(draw, 1000);   // ages tick even when nothing arrives
  return () => { off(); clearInterval(timer); };
}
