// The live connection: snapshot, then numbered deltas; gap -> resync; heartbeat watchdog;
// reconnect with jittered backoff (1 -> 20 s, never giving up) and backfill from the last seq.

export class WardState {
  constructor() {
    this.patients = new Map();   // patient_id -> {patient_id, vitals, news2, plan_version}
    this.alerts = new Map();     // alert_id -> alert
    this.seq = 0;
    this.epoch = null;
    this.serverOffsetUs = 0;     // server clock - local clock
    this.lastBatchUs = null;
    this.heartbeatS = 10;
    this.ingestStaleS = 30;
    this.listeners = new Set();
  }

  nowUs() { return Date.now() * 1000 + this.serverOffsetUs; }

  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  emit(change) { for (const fn of this.listeners) fn(change); }

  patient(id) {
    let p = this.patients.get(id);
    if (!p) {
      p = { patient_id: id, vitals: {}, news2: null, plan_version: null };
      this.patients.set(id, p);
    }
    return p;
  }

  clock(serverUs) { if (serverUs) this.serverOffsetUs = serverUs - Date.now() * 1000; }

  applySnapshot(msg) {
    this.patients.clear();
    this.alerts.clear();
    for (const p of msg.patients) {
      this.patients.set(p.patient_id, { patient_id: p.patient_id, vitals: p.vitals,
        news2: p.news2, plan_version: p.plan_version });
    }
    for (const a of msg.alerts) this.alerts.set(a.alert_id, a);
    this.seq = msg.seq;
    this.epoch = msg.epoch;
    this.heartbeatS = msg.heartbeat_s;
    this.ingestStaleS = msg.ingest_stale_s;
    this.lastBatchUs = msg.last_batch_us;
    this.clock(msg.server_us);
    this.emit({ type: "snapshot" });
  }

  applyDelta(msg) {
    if (msg.type === "vitals") {
      const touched = new Set();
      for (const [pid, metric, value, t, delta, trend] of msg.rows) {
        this.patient(pid).vitals[metric] = { value, t_us: t, delta, trend };
        touched.add(pid);
      }
      this.lastBatchUs = this.nowUs();
      this.emit({ type: "vitals", patients: touched, rows: msg.rows });
    } else if (msg.type === "alerts") {
      for (const a of msg.alerts) { this.alerts.set(a.alert_id, a); this.patient(a.patient_id); }
      for (const id of msg.closed) this.alerts.delete(id);
      this.emit({ type: "alerts", events: msg.events });
    } else if (msg.type === "news2") {
      for (const s of msg.scores) this.patient(s.patient_id).news2 = s;
      this.emit({ type: "news2" });
    } else if (msg.type === "plans") {
      for (const [pid, v] of Object.entries(msg.plans)) this.patient(pid).plan_version = v;
      this.emit({ type: "plans" });
    } else if (msg.type === "patients") {
      for (const pid of msg.patients) this.patient(pid);
      this.emit({ type: "patients" });
    }
    this.seq = msg.seq;
  }
}

export class LiveClient {
  constructor(state, { onStatus, onUnauthorized } = {}) {
    this.state = state;
    this.onStatus = onStatus || (() => {});
    this.onUnauthorized = onUnauthorized || (() => {});
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.watchdog = null;
    this.stopped = true;
    this.lastMessage = 0;
    this.haveSnapshot = false;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
    window.addEventListener("online", () => this.reconnectNow());
  }

  start() {
    this.stopped = false;
    this.connect();
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => this.checkAlive(), 1000);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) this.ws.close();
    this.ws = null;
  }

  url() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    let q = "";
    if (this.haveSnapshot && this.state.epoch) q = `?since=${this.state.seq}&epoch=${this.state.epoch}`;
    return `${proto}://${location.host}/api/live${q}`;
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    let ws;
    try { ws = new WebSocket(this.url()); } catch { this.scheduleReconnect(); return; }
    this.ws = ws;
    this.setStatus("connecting");
    ws.onopen = () => {
      this.lastMessage = Date.now();
      this.live();            // accepted: the server authenticated us
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 4401) { this.stopped = true; this.onUnauthorized(); return; }
      this.setStatus("down");
      this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const base = Math.min(20, 2 ** this.attempt);
    const delay = base * (0.5 + Math.random() * 0.5);
    this.attempt += 1;
    this.nextRetry = Date.now() + delay * 1000;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay * 1000);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= 1)) return;
    this.attempt = 0;
    this.connect();
  }

  checkAlive() {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    if (Date.now() - this.lastMessage > this.state.heartbeatS * 2500) {
      ws.close();               // silent for 2.5 heartbeats: treat as dead
      this.ws = null;
      this.setStatus("down");
      this.scheduleReconnect();
    }
  }

  send(obj) { if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(obj)); }

  receive(text) {
    this.lastMessage = Date.now();
    const msg = JSON.parse(text);
    const state = this.state;
    if (msg.type === "snapshot") {
      state.applySnapshot(msg);
      this.haveSnapshot = true;
      this.live();
      return;
    }
    if (msg.type === "resync" || msg.type === "pong") return;
    if (msg.type === "heartbeat") {
      state.clock(msg.server_us);
      state.lastBatchUs = msg.last_batch_us;
      if (msg.epoch !== state.epoch || msg.seq > state.seq) this.send({ type: "resync" });
      state.emit({ type: "heartbeat" });
      this.live();
      return;
    }
    if (!this.haveSnapshot || msg.seq <= state.seq) return;       // old or duplicate
    if (msg.seq !== state.seq + 1) { this.send({ type: "resync" }); return; }  // gap
    state.applyDelta(msg);
    this.live();
  }

  setStatus(status) {
    this.status = status;
    this.onStatus(status);
  }

  live() {
    this.attempt = 0;
    if (this.status !== "live") this.setStatus("live");
  }
}
