// The admin page: asks for an API key (kept for this tab only), then shows
// GET /api/v1/admin/status every 2 seconds. Text goes in with textContent only.
"use strict";

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("switchboard-admin-key");
let timer = null;

function setState(state, text) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = text;
}

function fill(tableId, rows, empty) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = $(tableId).querySelectorAll("th").length;
    td.className = "empty";
    td.textContent = empty;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.append(td);
    }
    body.append(tr);
  }
}

function render(status) {
  $("node-id").textContent = status.node_id;
  const broker = status.broker;
  $("broker").textContent = broker.kind === broker.state ? broker.kind : `${broker.kind}: ${broker.state}`;
  $("sessions-total").textContent = status.sessions.total;
  $("nodes").textContent = status.nodes ? status.nodes.join(", ") : "unknown (broker down)";
  $("draining").textContent = status.draining ? "draining" : "serving";
  fill("sessions", status.sessions.by_endpoint.map((e) => [e.endpoint, e.transport, e.profile, e.sessions]), "no sessions");
  fill("plugins", status.plugins.plugins.map((p) => [
    p.name, p.version, p.message_types.join(", "), p.calls, p.errors, p.faults,
    p.calls > 0 ? `${p.mean_call_ms.toFixed(2)} ms` : "-", p.last_error,
  ]), "no plugins loaded");
  fill("failed", status.plugins.failed.map((f) => [f.file, f.error, f.at, f.serving_previous_version ? "yes" : "no"]), "none");
  fill("warnings", status.warnings.slice().reverse().map((w) => [w.at, w.level, w.target, w.message]), "none");
  $("updated").textContent = new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const r = await fetch("/api/v1/admin/status", { headers: { Authorization: `Bearer ${key}` } });
    if (r.status === 401) {
      lock("That API key was refused.");
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
    setState("live", "Live");
  } catch (e) {
    setState("stale", `Not answering (${e.message})`);
  }
}

function unlock() {
  $("unlock").hidden = true;
  $("unlock-error").hidden = true;
  $("view").hidden = false;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function lock(message) {
  clearInterval(timer);
  key = null;
  sessionStorage.removeItem("switchboard-admin-key");
  $("view").hidden = true;
  $("unlock").hidden = false;
  $("unlock-error").hidden = !message;
  $("unlock-error").textContent = message || "";
  setState("locked", "Locked");
}

$("unlock").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("switchboard-admin-key", key);
  unlock();
});

if (key) unlock();
