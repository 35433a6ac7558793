// Alert list: open alerts live, resolved ones on request; acknowledge, snooze, resolve.
import { api } from "./api.js";
import { PRIORITY_RANK, alertText, el, when } from "./util.js";

export function actions(ctx, a, onDone) {
  const can = ctx.user.permissions.includes("act");
  const error = el("span", { class: "error" });
  const run = async (fn) => {
    error.textContent = "";
    try { await fn(); onDone && onDone(); } catch (e) { error.textContent = e.message; }
  };
  const duration = el("select", { "aria-label": "snooze duration" },
    ...[5, 15, 30, 60].map((m) => el("option", { value: m * 60 }, `${m} min`)));
  const reason = el("input", { placeholder: "reason", "aria-label": "snooze reason", size: 10 });
  if (!can || a.state === "resolved") return el("span", { class: "muted" }, a.acknowledged_by ? `ack ${a.acknowledged_by}` : "");
  return el("div", { class: "actions" },
    a.state === "active" || a.state === "latched"
      ? el("button", { class: "primary", "data-action": "ack",
          onclick: (ev) => { ev.stopPropagation(); run(() => api("POST", "/api/alerts/acknowledge", { alert_id: a.alert_id })); } },
        a.state === "latched" ? "Acknowledge (resolves)" : "Acknowledge")
      : el("span", { class: "muted" }, `ack ${a.acknowledged_by || ""}`),
    a.state === "latched" ? el("button", { "data-action": "resolve",
      onclick: () => run(() => api("POST", "/api/alerts/resolve", { alert_id: a.alert_id })) }, "Resolve") : null,
    duration, reason,
    el("button", { "data-action": "snooze", onclick: () => run(() => api("POST", "/api/alerts/snooze", {
      alert_id: a.alert_id, duration_s: Number(duration.value), reason: reason.value })) }, "Snooze"),
    error);
}

function row(ctx, a) {
  return el("tr", { "data-alert": a.alert_id },
    el("td", {}, el("span", { class: `alert-line prio-${a.priority}` }, a.priority)),
    el("td", {}, el("a", { href: `#/patient/${encodeURIComponent(a.patient_id)}` }, a.patient_id)),
    el("td", {}, alertText(a), a.predicted ? " (predicted)" : "",
      a.sustain ? el("div", { class: "muted" }, `sustained ${a.sustain}`) : null),
    el("td", {}, a.state), el("td", {}, when(a.opened_at_us)),
    el("td", {}, a.plan_version ? `v${a.plan_version}` : ""),
    el("td", {}, actions(ctx, a)));
}

export function render(main, ctx) {
  const filter = el("select", { id: "alert-filter" },
    el("option", { value: "open" }, "open"), el("option", { value: "resolved" }, "resolved"),
    el("option", { value: "all" }, "all"));
  const body = el("tbody", { id: "alert-rows" });
  const error = el("p", { class: "error" });
  main.replaceChildren(el("h2", {}, "Alerts"), el("div", { class: "toolbar" }, "Show ", filter),
    error, el("table", {}, el("thead", {}, el("tr", {}, ...["Priority", "Patient", "Alert", "State",
      "Opened", "Plan", ""].map((h) => el("th", {}, h)))), body));
  let closed = [];
  const draw = () => {
    const open = filter.value === "resolved" ? [] : [...ctx.state.alerts.values()]
      .sort((a, b) => PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority] || b.opened_at_us - a.opened_at_us);
    const rows = open.concat(filter.value === "open" ? [] : closed);
    body.replaceChildren(...(rows.length ? rows.map((a) => row(ctx, a))
      : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no alerts"))]));
  };
  const load = async () => {
    closed = [];
    if (filter.value !== "open") {
      try { closed = (await api("GET", "/api/alerts?state=resolved&limit=200")).alerts; }
      catch (e) { error.textContent = e.message; }
    }
    draw();
  };
  filter.addEventListener("change", load);
  load();
  const off = ctx.state.subscribe((c) => { if (c.type !== "vitals" && c.type !== "heartbeat") draw(); });
  return off;
}
