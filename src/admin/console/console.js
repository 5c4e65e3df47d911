// sosrouter console. Plain JavaScript, no dependencies. Data: GET /status, GET /console/state,
// GET /console/whatif, live over GET /events (read with fetch, token and Last-Event-ID). Actions (POST) carry the admin token
// from sessionStorage as `Authorization: Bearer`. Every value from the proxy is put in the page
// with textContent: caller numbers and headers come from the network.
"use strict";

const STALE_AFTER_MS = 3000;   // the stream down this long: STALE banner
const REFRESH_MS = 10000;      // traffic and undelivered poll
const TOKEN_KEY = "sosrouter-admin-token";
const EVENTS_KEPT = 100;

const model = { targets: new Map(), routes: [], rules: null, systemic: null };
let live = false;
let downSince = Date.now();
let refreshTimer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "title" || k === "type") e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function clock(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(method, path) {
  const headers = { "Accept": "application/json" };
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5000);
  try {
    const r = await fetch(path, { method, headers, signal: ctl.signal, cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    return { ok: r.ok, status: r.status, body };
  } finally {
    clearTimeout(timer);
  }
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind || "info";
  m.hidden = false;
}

// ---------------------------------------------------------------- targets

function displayState(t) { return t.enabled === false ? "disabled" : t.state; }

function renderTargets() {
  const body = $("target-rows");
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.target : null;
  const rows = new Map([...body.children].map((r) => [r.dataset.targetId, r]));
  for (const t of model.targets.values()) {
    let row = rows.get(t.id);
    rows.delete(t.id);
    if (!row) {
      row = el("tr", { "data-target-id": t.id });
      body.append(row);
    }
    const state = displayState(t);
    row.dataset.state = state;
    row.dataset.health = t.state;
    row.dataset.enabled = String(t.enabled !== false);
    const action = t.enabled === false ? "enable" : "disable";
    const btn = el("button", {
      type: "button", class: "switch", "data-action": action, "data-target": t.id,
      text: t.enabled === false ? "Enable…" : "Disable…",
      "aria-label": `${t.enabled === false ? "Enable" : "Disable"} ${t.id}`,
    });
    btn.addEventListener("click", () => switchTarget(t.id, action));
    const stateText = t.enabled === false ? `disabled (health: ${t.state})` : t.state;
    row.replaceChildren(
      el("th", { scope: "row", text: t.id }),
      el("td", {}, el("span", { class: "state", "data-state": state, text: stateText })),
      el("td", { title: t.since_unix_ms ? new Date(t.since_unix_ms).toISOString() : null,
                 text: `${ago(t.since_unix_ms)} (${clock(t.since_unix_ms)})` }),
      el("td", { class: "reason", text: t.last_reason || "" }),
      el("td", {}, btn),
    );
  }
  for (const r of rows.values()) r.remove();
  if (focused) {
    const b = body.querySelector(`button[data-target="${CSS.escape(focused)}"]`);
    if (b) b.focus();
  }
  renderRoutes();
}

// ---------------------------------------------------------------- routes

function readyNow(id) {
  const t = model.targets.get(id);
  return !t || (t.enabled !== false && (t.state === "up" || t.state === "suspect"));
}

function renderRoutes() {
  const list = $("route-list");
  list.replaceChildren(...model.routes.map((r) => {
    const chain = el("ol", { class: "chain", "aria-label": `chain of ${r.id}` });
    r.chain.forEach((id, i) => {
      const t = model.targets.get(id);
      const state = t ? displayState(t) : "unknown";
      chain.append(el("li", {
        "data-chain-target": id, "data-state": state,
        class: i === r.chain.length - 1 ? "last" : null,
        text: id, title: `${id}: ${state}`,
      }));
    });
    const first = r.chain.find(readyNow);
    let warn = null;
    if (!first) warn = el("span", { class: "warn", text: " no target ready: every call will be tried anyway and may go undelivered" });
    else if (r.chain.length > 1 && first === r.last_resort) warn = el("span", { class: "warn", text: ` calls now go to the last resort (${first})` });
    return el("li", { "data-route-id": r.id },
      el("span", { class: "rid", text: r.default ? `${r.id} (default)` : r.id }),
      r.description ? el("span", { class: "desc", text: ` — ${r.description}` }) : null,
      warn, chain);
  }));
}

// ---------------------------------------------------------------- rules, systemic, traffic, undelivered

function renderRules() {
  const r = model.rules;
  if (!r) return;
  $("rules-source").textContent = r.source || "–";
  $("rules-version").textContent = String(r.version ?? "–");
  $("rules-hash").textContent = r.hash || "–";
  $("rules-loaded").textContent = `${clock(r.loaded_unix_ms)} (${ago(r.loaded_unix_ms)})`;
  const err = r.last_reload_error;
  $("reload-error").hidden = !err;
  $("reload-error-text").textContent = err ? err.join("\n") : "";
}

// `rules.cluster` of /status (cluster mode only): {node, etcd: {connected, endpoint, since_unix_ms},
// current, nodes: [{node, self, version, hash, running_current, refused, refused_errors, unix_ms}],
// peer_reports: [{node, target, state}]}. Each node's row carries data-node-id, data-node-version,
// data-node-hash and data-node-current ("true", "false", or "unknown" while current is unknown).
// Live: a peer joining or changing version is a `cluster` event, and every event reads /status again.
function renderCluster() {
  const c = model.rules && model.rules.cluster;
  $("cluster").hidden = !c;
  document.body.dataset.cluster = String(Boolean(c));
  if (!c) return;
  const etcd = c.etcd || {};
  const cur = c.current ?? null;
  const line = $("cluster-etcd");
  line.dataset.etcdConnected = String(Boolean(etcd.connected));
  line.textContent = `This node: ${c.node}. etcd ${etcd.connected ? "connected" : "UNREACHABLE"} `
    + `(${etcd.endpoint || "–"}) since ${clock(etcd.since_unix_ms)}. Current rules version: ${cur ?? "unknown"}.`;
  const nodes = c.nodes || [];
  const flag = (n) => (n.running_current === true ? "true" : n.running_current === false ? "false" : "unknown");
  $("node-rows").replaceChildren(...nodes.map((n) => {
    const current = flag(n);
    const text = current === "true" ? "current" : current === "false" ? `NOT current (current is ${cur})` : "unknown";
    const refused = n.refused === null || n.refused === undefined ? null
      : el("div", { class: "reason", text: `refused version ${n.refused}: ${(n.refused_errors || []).join("; ")}` });
    return el("tr", { "data-node-id": n.node, "data-node-version": n.version, "data-node-hash": n.hash,
                      "data-node-current": current, "data-node-self": String(Boolean(n.self)) },
      el("th", { scope: "row", text: n.self ? `${n.node} (this node)` : n.node }),
      el("td", { text: String(n.version) }),
      el("td", { class: "mono hash", text: n.hash || "–" }),
      el("td", {}, el("span", { class: "current-flag", "data-current": current, text }), refused),
      el("td", { text: n.unix_ms ? `${ago(n.unix_ms)} (${clock(n.unix_ms)})` : "–" }));
  }));
  const off = nodes.filter((n) => n.running_current === false).map((n) => `${n.node} (version ${n.version})`);
  $("cluster-warn").hidden = off.length === 0;
  $("cluster-warn").textContent = off.length
    ? `Not running the current rules version ${cur}: ${off.join(", ")}.` : "";
  $("peer-reports").replaceChildren(...(c.peer_reports || []).map((r) => el("li", {
    "data-peer-report": r.target, text: `node ${r.node} reports ${r.target} ${r.state}`,
  })));
}

// `systemic` of /status: {suspect_domains: [{domain, since_unix_ms, ...}], share_alarm_since_unix_ms}.
// The plain sentence comes with the `systemic` event (kept in model.sentence).
function renderSystemic() {
  const s = model.systemic || {};
  const domains = s.suspect_domains || [];
  const share = s.share_alarm_since_unix_ms;
  const active = domains.length > 0 || (share !== null && share !== undefined);
  $("systemic").hidden = !active;
  document.body.dataset.systemic = String(active);
  if (!active) { model.sentence = null; return; }
  const parts = domains.map((d) => `failure domain ${d.domain} suspect since ${clock(d.since_unix_ms)}`);
  if (share !== null && share !== undefined) parts.push(`too many targets down or suspect since ${clock(share)}`);
  $("systemic-text").textContent = model.sentence || parts.join("; ");
}

function renderTraffic(tr) {
  const rows = $("traffic-rows");
  const buckets = (tr && tr.buckets) || [];
  const sum = (k) => buckets.reduce((a, b) => a + (b[k] || 0), 0);
  const minutes = Math.round((buckets.length * ((tr && tr.bucket_ms) || 10000)) / 60000 * 10) / 10;
  const n = (k, word) => { const v = sum(k); return `${v} ${word}${v === 1 || word === "undelivered" ? "" : "s"}`; };
  $("traffic-sum").textContent =
    `${n("calls", "call")}, ${n("failovers", "failover")}, ${n("undelivered", "undelivered")} in the last ${minutes} min`;
  const max = Math.max(1, ...buckets.map((b) => b.calls));
  rows.replaceChildren(...buckets.slice().reverse().map((b) => {
    const bar = el("span", {});
    bar.style.width = `${Math.round((b.calls / max) * 100)}%`;
    return el("tr", {},
      el("td", { text: clock(b.end_unix_ms) }),
      el("td", { class: "bar" }, el("div", { text: String(b.calls) }), bar),
      el("td", { text: String(b.failovers) }),
      el("td", { text: String(b.undelivered) }));
  }));
}

function renderUndelivered(list) {
  const rows = $("undelivered-rows");
  if (!list || list.length === 0) {
    rows.replaceChildren(el("tr", {}, el("td", { colSpan: 6, class: "hint", text: "none" })));
    return;
  }
  rows.replaceChildren(...list.map((u) => {
    const attempts = (u.attempts || []).map((a) => `${a.target}: ${a.reason}`).join("; ");
    return el("tr", { "data-call-id": u.call_id },
      el("td", { text: clock(u.time_unix_ms) }),
      el("td", { class: "mono", text: u.p_asserted_identity || u.from || "–" }),
      el("td", { class: "mono", text: u.contact || "–" }),
      el("td", { class: "mono", text: u.geolocation || "–" }),
      el("td", { text: u.route || "–" }),
      el("td", { class: "reason", text: attempts }));
  }));
}

// ---------------------------------------------------------------- loading

async function loadStatus() {
  const r = await api("GET", "/status");
  if (!r.ok || !r.body) throw new Error(`/status answered ${r.status}`);
  model.targets = new Map((r.body.targets || []).map((t) => [t.id, t]));
  if (r.body.rules) model.rules = r.body.rules;
  if (r.body.systemic) model.systemic = r.body.systemic;
  renderTargets();
  renderRules();
  renderCluster();
  renderSystemic();
}

async function loadState() {
  const r = await api("GET", "/console/state");
  if (!r.ok || !r.body) throw new Error(`/console/state answered ${r.status}`);
  model.routes = r.body.routes || [];
  if (r.body.systemic) model.systemic = r.body.systemic;
  renderRoutes();
  renderSystemic();
  renderTraffic(r.body.traffic);
  renderUndelivered(r.body.undelivered);
}

async function loadAll() {
  try {
    await Promise.all([loadStatus(), loadState()]);
    document.body.dataset.loaded = "true";
  } catch (e) {
    say(`Cannot read the proxy: ${e.message}`, "error");
  }
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(loadAll, 300);
}

// ---------------------------------------------------------------- live events

function logEvent(ev) {
  const list = $("event-list");
  const what = [ev.kind, ev.target, ev.route, ev.old && ev.new ? `${ev.old} → ${ev.new}` : ev.new]
    .filter(Boolean).join(" ");
  list.prepend(el("li", { "data-kind": ev.kind, text: `${clock(ev.unix_ms)} ${what}: ${ev.reason || ""}` }));
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
}

function onEvent(ev) {
  logEvent(ev);
  const t = ev.target && model.targets.get(ev.target);
  if (ev.kind === "health" && t) {
    t.state = ev.new;
    t.since_unix_ms = ev.unix_ms;
    t.last_reason = ev.reason;
    renderTargets();
  } else if (ev.kind === "systemic") {
    model.sentence = ev.new === "raised" ? ev.reason : null;
    if (ev.new === "raised") {
      $("systemic").hidden = false;
      $("systemic-text").textContent = ev.reason;
    }
  } else if (ev.kind === "operator" && t) {
    t.enabled = ev.new === "enabled";
    renderTargets();
  }
  refreshSoon();
}

function setLive(on) {
  if (on === live) return;
  live = on;
  if (!on) downSince = Date.now();
  const c = $("conn");
  c.dataset.live = String(on);
  c.textContent = on ? "live" : "reconnecting…";
  checkStale();
}

function checkStale() {
  const stale = !live && Date.now() - downSince > STALE_AFTER_MS;
  const b = $("stale");
  if (b.hidden === stale) {
    b.hidden = !stale;
    document.body.dataset.stale = String(stale);
    $("stale-since").textContent = clock(downSince);
    if (stale) $("conn").textContent = "STALE";
  }
}

// The event stream is read with fetch, not EventSource: EventSource cannot send the admin token,
// and with `admin_token_for_reads` (the default when a token is set) /events needs it. The last
// event id is sent back as Last-Event-ID on reconnect, so a blink of the stream misses nothing
// (an `event: lost` from the server means the ring no longer had them: read everything again).
let streamCtl = null;
let lastEventId = null;
// The pending reconnect after a stream ended. A new connect() cancels it: left pending, it fired up
// to a second later and replaced the healthy stream the token had just opened, with whatever token
// the tab held by then (none, once the operator forgot it: a 401 and a dead stream).
let retryTimer = null;

async function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (streamCtl) streamCtl.abort();
  const ctl = new AbortController();
  streamCtl = ctl;
  const headers = { "Accept": "text/event-stream" };
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
  try {
    const r = await fetch("/events", { headers, signal: ctl.signal, cache: "no-store" });
    if (r.status === 401) say("The live event stream needs the admin token: enter it above.", "error");
    if (!r.ok || !r.body) throw new Error(`events: ${r.status}`);
    const wasDown = !live;
    setLive(true);
    // Events may have been missed while the stream was down: read the whole state again.
    if (wasDown) loadAll();
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        onBlock(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
  } catch (_) {
    /* aborted, refused, or the proxy went away */
  }
  if (streamCtl !== ctl) return; // a newer connection replaced this one
  setLive(false);
  retryTimer = setTimeout(connect, 1000);
}

function onBlock(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // keep-alive comment
    const k = line.indexOf(":");
    const field = k < 0 ? line : line.slice(0, k);
    let v = k < 0 ? "" : line.slice(k + 1);
    if (v.startsWith(" ")) v = v.slice(1);
    if (field === "data") data.push(v);
    else if (field === "event") event = v;
    else if (field === "id") id = v;
  }
  if (id !== null) lastEventId = id;
  if (event === "lost") { loadAll(); return; }
  if (!data.length) return;
  try { onEvent(JSON.parse(data.join("\n"))); } catch (_) { /* a bad line */ }
}

// ---------------------------------------------------------------- actions

function confirmAction(text) {
  const d = $("confirm");
  $("confirm-text").textContent = text;
  d.returnValue = "cancel";
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
    $("confirm-cancel").focus();
  });
}

function refusal(r) {
  const why = (r.body && (r.body.error || (r.body.errors && r.body.errors.join("; ")))) || "";
  if (r.status === 401) return `Refused (401): ${why || "the admin token is missing or wrong"}. Enter the admin token below.`;
  return `Failed (${r.status}): ${why}`;
}

async function switchTarget(id, action) {
  const sure = await confirmAction(action === "disable"
    ? `Disable ${id}? No call will be sent to it until it is enabled again.`
    : `Enable ${id}? Calls will be sent to it again when its health allows.`);
  if (!sure) return;
  try {
    const r = await api("POST", `/targets/${encodeURIComponent(id)}/${action}`);
    if (!r.ok) { say(refusal(r), "error"); return; }
    if (r.body && r.body.id) model.targets.set(r.body.id, r.body);
    renderTargets();
    say(`${id} ${action}d.`, "info");
  } catch (e) {
    say(`Failed: ${e.message}`, "error");
  }
}

async function reloadRules() {
  if (!(await confirmAction("Reload the rules file now? A file with errors is refused whole and the running rules keep serving."))) return;
  try {
    const r = await api("POST", "/reload");
    if (r.ok) say(`Rules reloaded: version ${r.body.version}, hash ${r.body.hash}.`, "info");
    else say(refusal(r), "error");
  } catch (e) {
    say(`Failed: ${e.message}`, "error");
  }
  loadAll();
}

async function whatIf(ev) {
  ev.preventDefault();
  const caller = $("wi-caller").value.trim();
  const target = $("wi-target").value.trim();
  const q = new URLSearchParams();
  if (caller) q.set("caller", caller);
  q.set(/^[0-9*#+]+$/.test(target) ? "dialled" : "uri", target);
  const out = $("whatif-answer");
  out.dataset.state = "asking";
  try {
    const r = await api("GET", `/console/whatif?${q}`);
    if (!r.ok) {
      out.replaceChildren(el("p", { class: "message", "data-kind": "error", text: refusal(r) }));
      out.dataset.state = "error";
      return;
    }
    const w = r.body;
    const steps = el("ol", { class: "plan" }, ...(w.plan || []).map((s) => el("li", {
      "data-target-step": s.id, "data-readiness": s.readiness,
      text: `${s.id} — ${s.request_uri} via ${s.transport} ${s.next_hop} (${s.readiness})${s.last_resort ? " — last resort" : ""}`,
    })));
    out.replaceChildren(
      el("p", {}, el("strong", { text: `Route ${w.route}` }), ` (${w.emergency ? "EMERGENCY" : "not emergency"}): ${w.reason}`),
      steps,
      el("details", {}, el("summary", { text: "as `sosrouter route` prints it" }), el("pre", { text: w.text || "" })));
    out.dataset.state = "answered";
  } catch (e) {
    out.replaceChildren(el("p", { text: `Failed: ${e.message}` }));
    out.dataset.state = "error";
  }
}

function showTokenState() {
  $("token-state").textContent = token() ? "a token is set for this tab" : "no token set";
}

function init() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("token").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    $("token").value = "";
    showTokenState();
    loadAll();
    connect(); // the stream may have been refused without it
  });
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); });
  $("reload-rules").addEventListener("click", reloadRules);
  $("whatif-form").addEventListener("submit", whatIf);
  showTokenState();
  loadAll();
  connect();
  setInterval(checkStale, 500);
  setInterval(() => { if (live) loadState().catch(() => {}); }, REFRESH_MS);
  setInterval(() => { if (model.targets.size) renderTargets(); renderCluster(); }, 15000);
}

document.addEventListener("DOMContentLoaded", init);
