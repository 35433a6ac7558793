// Page wiring: login, the live connection, banners, sound cues and the hash router.
import { api, setCsrf, setUnauthorizedHandler } from "./api.js";
import { renderAdmin, renderAudit } from "./admin.js";
import { render as renderAlerts } from "./alerts.js";
import { LiveClient, WardState } from "./live.js";
import { render as renderPatient } from "./patient.js";
import { render as renderPlans } from "./plans.js";
import * as sound from "./sound.js";
import { age } from "./util.js";
import { render as renderWard } from "./ward.js";

const $ = (id) => document.getElementById(id);
const state = new WardState();
const ctx = { state, user: null, live: null, navigate: (h) => { location.hash = h; } };
let cleanup = () => {};
let linkStatus = "connecting";

function showLogin(message = "") {
  if (ctx.live) ctx.live.stop();
  ctx.user = null;
  $("app").hidden = true;
  $("banner-link").hidden = true;
  $("banner-ingest").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-user").focus();
}

function route() {
  if (!ctx.user) return;
  cleanup();
  const [, view, arg] = (location.hash || "#/ward").split("/");
  const main = $("view");
  const id = arg ? decodeURIComponent(arg) : null;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === view);
  if (view === "patient" && id) cleanup = renderPatient(main, ctx, id);
  else if (view === "plans" && id) cleanup = renderPlans(main, ctx, id);
  else if (view === "alerts") cleanup = renderAlerts(main, ctx);
  else if (view === "audit") cleanup = renderAudit(main, ctx);
  else if (view === "admin") cleanup = renderAdmin(main, ctx);
  else cleanup = renderWard(main, ctx);
}

function banners() {
  const down = linkStatus !== "live";
  $("banner-link").hidden = !down || !ctx.user;
  const retry = ctx.live && ctx.live.nextRetry ? Math.max(0, Math.ceil((ctx.live.nextRetry - Date.now()) / 1000)) : null;
  $("banner-retry").textContent = down && retry !== null ? ` (next try in ${retry} s)…` : "…";
  const last = state.lastBatchUs;
  const ingestAge = last ? (state.nowUs() - last) / 1e6 : null;
  const stale = !down && ctx.user && (ingestAge === null || ingestAge > state.ingestStaleS);
  $("banner-ingest").hidden = !stale;
  $("banner-ingest-age").textContent = ingestAge === null ? "a while (none yet)" : age(ingestAge).replace(" ago", "");
  const s = $("link-state");
  s.textContent = down ? "offline" : "live";
  s.className = `link-state ${down ? "down" : "live"}`;
  const open = [...state.alerts.values()].filter((a) => a.state !== "acknowledged").length;
  $("alert-count").textContent = open ? String(open) : "";
}

function cue(change) {
  if (change.type !== "alerts") return;
  const loud = change.events.filter((e) => e.notify && ["opened", "worsened", "reopened",
    "escalated", "renotified", "snooze_broken"].includes(e.kind));
  if (!loud.length) return;
  const top = loud.some((e) => e.priority === "high") ? "high" : loud.some((e) => e.priority === "medium") ? "medium" : "low";
  sound.beep(top);
  if (top === "high") {
    document.title = "*** ALARM: vitalwire ward";
    setTimeout(() => { document.title = "vitalwire ward"; }, 10000);
  }
}

async function enter(me) {
  ctx.user = me.user;
  setCsrf(me.csrf_token);
  $("login").hidden = true;
  $("app").hidden = false;
  $("whoami").textContent = `${me.user.username} (${me.user.role})`;
  if (!ctx.live) {
    ctx.live = new LiveClient(state, {
      onStatus: (s) => { linkStatus = s; banners(); },
      onUnauthorized: () => showLogin("Session ended: log in again."),
    });
  }
  ctx.live.start();
  route();
}

async function boot() {
  setUnauthorizedHandler(() => showLogin("Session ended: log in again."));
  state.subscribe(cue);
  state.subscribe(banners);
  setInterval(banners, 1000);
  window.addEventListener("hashchange", route);
  $("sound-button").addEventListener("click", () => sound.arm());
  sound.render();
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/auth/logout"); } catch { /* already gone */ }
    showLogin("Logged out.");
  });
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const me = await api("POST", "/api/auth/login", {
        username: $("login-user").value, password: $("login-password").value });
      $("login-password").value = "";
      await enter(me);
    } catch (e) { $("login-error").textContent = e.message; }
  });
  try { await enter(await api("GET", "/api/auth/me")); } catch { showLogin(); }
}

boot();
