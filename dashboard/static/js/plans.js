// Care-plan editor (coordinators): apply templates, edit rule limits, see the version history.
import { api } from "./api.js";
import { el, label, when } from "./util.js";

const FIELDS = ["critical_low", "low", "high", "critical_high"];
const PRIORITIES = ["info", "low", "medium", "high"];

function ruleRow(rule, editable) {
  const cells = FIELDS.map((f) => el("td", {}, rule.kind === "threshold"
    ? el("input", { type: "number", step: "any", value: rule[f] ?? "", disabled: !editable,
        "data-rule": rule.id, "data-field": f, "aria-label": `${rule.id} ${f}` })
    : el("span", { class: "muted" }, rule[f] ?? "")));
  const prio = rule.kind === "news2" ? el("span", { class: "muted" }, "fixed")
    : el("select", { disabled: !editable, "data-rule": rule.id, "data-field": "priority" },
      ...PRIORITIES.map((p) => el("option", { value: p, selected: (rule.priority || "medium") === p }, p)));
  return el("tr", { "data-rule-row": rule.id }, el("td", {}, rule.id), el("td", {}, rule.kind),
    el("td", {}, rule.metric ? label(rule.metric) : rule.signal || ""), ...cells, el("td", {}, prio),
    el("td", {}, rule.for ?? ""));
}

export function render(main, ctx, pid) {
  const editable = ctx.user.permissions.includes("plans");
  const head = el("div", { id: "plan-head" });
  const rules = el("tbody", { id: "plan-rules" });
  const doc = el("textarea", { class: "doc", id: "plan-json", disabled: !editable, spellcheck: "false" });
  const reason = el("input", { id: "plan-reason", placeholder: "why this change (required)", size: 40, disabled: !editable });
  const error = el("p", { class: "error", id: "plan-error", role: "alert" });
  const okMsg = el("p", { class: "muted", id: "plan-ok" });
  const history = el("tbody", { id: "plan-history" });
  const templates = el("select", { id: "template", disabled: !editable });
  let current = null;

  const collect = () => {
    const d = JSON.parse(doc.value);
    for (const input of rules.querySelectorAll("[data-field]")) {
      const rule = d.rule.find((r) => r.id === input.dataset.rule);
      if (!rule) continue;
      const f = input.dataset.field;
      if (f === "priority") { rule.priority = input.value; continue; }
      if (input.value === "") delete rule[f]; else rule[f] = Number(input.value);
    }
    return d;
  };
  const save = async () => {
    error.textContent = ""; okMsg.textContent = "";
    let d;
    try { d = collect(); } catch (e) { error.textContent = `document: not valid JSON (${e.message})`; return; }
    try {
      const made = await api("PUT", `/api/patients/${encodeURIComponent(pid)}/care-plan`, { document: d, reason: reason.value });
      okMsg.textContent = `saved as version ${made.version}`;
      reason.value = "";
      await load();
    } catch (e) { error.textContent = e.message; }
  };
  const applyTemplate = async () => {
    error.textContent = ""; okMsg.textContent = "";
    try {
      const made = await api("POST", `/api/patients/${encodeURIComponent(pid)}/care-plan/template`,
        { templates: [templates.value], reason: reason.value || `template ${templates.value}` });
      okMsg.textContent = `template applied: version ${made.version}`;
      await load();
    } catch (e) { error.textContent = e.message; }
  };
  main.replaceChildren(
    el("div", { class: "toolbar" }, el("a", { href: `#/patient/${encodeURIComponent(pid)}` }, `← Patient ${pid}`),
      el("h2", {}, `Care plan of ${pid}`)),
    editable ? null : el("p", { class: "muted" }, "Read only: coordinators and admins edit care plans."),
    head,
    el("div", { class: "panel" }, el("div", { class: "toolbar" }, "Template ", templates,
      el("button", { id: "apply-template", onclick: applyTemplate, disabled: !editable }, "Apply template"))),
    el("div", { class: "panel" }, el("table", { class: "rules" },
      el("thead", {}, el("tr", {}, ...["Rule", "Kind", "Watches", "Critical low", "Low", "High",
        "Critical high", "Priority", "For"].map((h) => el("th", {}, h)))), rules),
    el("details", {}, el("summary", {}, "Whole document (JSON)"), doc),
    el("div", { class: "toolbar" }, reason,
      el("button", { class: "primary", id: "plan-save", onclick: save, disabled: !editable }, "Save new version")),
    error, okMsg),
    el("h3", {}, "Version history"),
    el("table", {}, el("thead", {}, el("tr", {}, ...["Version", "When", "Author", "Reason", "Template"]
      .map((h) => el("th", {}, h)))), history));

  const load = async () => {
    try {
      const list = (await api("GET", "/api/care-plans/templates")).templates;
      templates.replaceChildren(...list.map((t) => el("option", { value: t.name, title: t.description }, t.name)));
    } catch (e) { error.textContent = e.message; }
    try {
      current = await api("GET", `/api/patients/${encodeURIComponent(pid)}/care-plan`);
      head.replaceChildren(el("p", {}, `Version ${current.version}, ${current.created_at || when(current.created_at_us)} by ${current.author}: ${current.reason}`,
        current.template ? ` (template ${current.template})` : ""));
      rules.replaceChildren(...current.rule.map((r) => ruleRow(r, editable)));
      doc.value = JSON.stringify({ plan: current.plan, rule: current.rule }, null, 2);
    } catch (e) {
      current = null;
      head.replaceChildren(el("p", { class: "muted" }, "No care plan yet: apply a template."));
      rules.replaceChildren();
      doc.value = JSON.stringify({ plan: {}, rule: [] }, null, 2);
    }
    try {
      const versions = (await api("GET", `/api/patients/${encodeURIComponent(pid)}/care-plan/history`)).versions;
      history.replaceChildren(...versions.slice().reverse().map((v) => el("tr", { "data-version": v.version },
        el("td", {}, `v${v.version}`), el("td", {}, v.created_at), el("td", {}, v.author),
        el("td", {}, v.reason), el("td", {}, v.template))));
    } catch (e) { error.textContent = e.message; }
  };
  load();
  return () => {};
}
