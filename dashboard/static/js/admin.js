// Audit log; devices, assignments and users (changes for admins).
import { api } from "./api.js";
import { el, when } from "./util.js";

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "none"))])));
}

export function renderAudit(main) {
  const box = el("div", { id: "audit" });
  const error = el("p", { class: "error" });
  main.replaceChildren(el("h2", {}, "Audit log"), error, box);
  api("GET", "/api/audit?limit=200").then((data) => {
    box.replaceChildren(table(["When", "User", "Role", "Action", "Patient", "Target", "Detail"],
      data.entries.map((e) => el("tr", { "data-action": e.action },
        el("td", {}, when(e.at_us)), el("td", {}, e.username), el("td", {}, e.role),
        el("td", {}, e.action), el("td", {}, e.patient_id || ""), el("td", {}, e.target),
        el("td", {}, e.detail)))));
  }).catch((e) => { error.textContent = e.message; });
  return () => {};
}

export function renderAdmin(main, ctx) {
  const isAdmin = ctx.user.permissions.includes("admin");
  const devices = el("div", { id: "devices" });
  const users = el("div", { id: "users" });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { class: "toolbar", id: "user-form" },
    el("input", { name: "username", placeholder: "user name", required: true }),
    el("select", { name: "role" }, ...["clinician", "coordinator", "admin"].map((r) => el("option", { value: r }, r))),
    el("input", { name: "password", type: "password", placeholder: "password (8+)", required: true,
      autocomplete: "new-password" }),
    el("button", { type: "submit" }, "Add user"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const f = new FormData(form);
    try {
      await api("POST", "/api/users", { username: f.get("username"), role: f.get("role"), password: f.get("password") });
      form.reset();
      load();
    } catch (e) { error.textContent = e.message; }
  });
  main.replaceChildren(el("h2", {}, "Devices and assignments"), devices,
    el("h2", {}, "Users"), isAdmin ? el("div", {}, form, users) : el("p", { class: "muted" }, "Admins manage users."), error);
  const load = async () => {
    try {
      const d = await api("GET", "/api/devices");
      devices.replaceChildren(table(["Device", "Kind", "Label", "Patient now", "Registered"],
        d.devices.map((x) => el("tr", {}, el("td", {}, x.device_id), el("td", {}, x.kind), el("td", {}, x.label),
          el("td", {}, x.patient_id || "–"), el("td", {}, when(x.registered_at))))));
      if (isAdmin) {
        const u = await api("GET", "/api/users");
        users.replaceChildren(table(["User", "Role", "Created"], u.users.map((x) =>
          el("tr", {}, el("td", {}, x.username), el("td", {}, x.role), el("td", {}, when(x.created_us))))));
      }
    } catch (e) { error.textContent = e.message; }
  };
  load();
  return () => {};
}
