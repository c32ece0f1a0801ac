// floorgate status page: polls the agent's JSON API and draws it. No framework, nothing
// loaded from elsewhere; read-only. Data is put in the page with textContent only.
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "floorgate-health-token";
const $ = (id) => document.getElementById(id);
const page = document.body.dataset.page;
let timer = null;

// -- formatting ---------------------------------------------------------------------

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function clock(when) {
  if (when === null || when === undefined) return "–";
  const date = typeof when === "number" ? new Date(when * 1000) : new Date(when);
  const today = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour12: false });
  return today ? time : `${date.toLocaleDateString()} ${time}`;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function value(v, unit) {
  if (v === null || v === undefined) return "–";
  const text = typeof v === "number" && !Number.isInteger(v) ? String(+v.toFixed(4)) : String(v);
  return unit ? `${text} ${unit}` : text;
}

// A chart's figure: whole numbers from 10 up, one decimal below (5.7 events/s).
function rounded(v) {
  return v >= 10 ? String(Math.round(v)) : String(+v.toFixed(1));
}

// -- DOM ----------------------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function pill(state) {
  return el("span", state || "–", `pill state-${state || "none"}`);
}

// rows: list of arrays of cells; a cell is text, a Node, or [text, className].
function fill(table, rows, keyOf) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map((cells, index) => {
    const tr = el("tr");
    if (keyOf) tr.dataset.key = keyOf(index);
    for (const cell of cells) {
      const td = el("td");
      if (cell instanceof Node) td.append(cell);
      else if (Array.isArray(cell)) { td.textContent = cell[0]; td.className = cell[1]; }
      else td.textContent = cell === null || cell === undefined ? "–" : String(cell);
      tr.append(td);
    }
    return tr;
  }));
}

function banner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

// -- the API and the token ----------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok && response.status !== 503) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

function askForToken(message) {
  clearTimeout(timer);
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function start() {
  let auth;
  try {
    auth = await api("/api/auth");
  } catch (error) {
    banner(`No answer from the agent (${error.message}); trying again.`);
    timer = setTimeout(start, REFRESH_MS);
    return;
  }
  banner("");
  if (auth.token_required && !auth.valid) {
    const tried = sessionStorage.getItem(TOKEN_KEY);
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(tried ? "Wrong token: the agent refused it." : "");
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  refresh();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});

async function refresh() {
  clearTimeout(timer);
  try {
    if (page === "status") drawStatus(await api("/api/status"));
    else drawSignals(await api(`/api/signals?${filterQuery()}`));
    banner("");
    $("updated").textContent = `updated ${clock(Date.now() / 1000)}`;
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken("The agent no longer accepts this token: enter it again.");
      return;
    }
    banner(`No answer from the agent (${error.message}); the figures below are old.`);
  }
  clearTimeout(timer); // a filter change may have started another round meanwhile
  timer = setTimeout(refresh, REFRESH_MS);
}

// -- the status page ----------------------------------------------------------------

// One line over the last hour (now at the right edge), scaled to its highest value.
function chart(name, points, now) {
  const width = 300, height = 80, span = 3600;
  const values = points.filter((p) => p[1] !== null);
  const top = Math.max(1, ...values.map((p) => p[1]));
  const x = (t) => Math.max(0, width - ((now - t) / span) * width).toFixed(1);
  const y = (v) => (height - 4 - (v / top) * (height - 8)).toFixed(1);
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", values.map((p) => `${x(p[0])},${y(p[1])}`).join(" "));
  const grid = [0.25, 0.5, 0.75].map((f) => {
    const tick = document.createElementNS(ns, "line");
    for (const [k, v] of Object.entries({ x1: width * f, x2: width * f, y1: 0, y2: height })) {
      tick.setAttribute(k, v);
    }
    return tick;
  });
  $(`chart-${name}`).replaceChildren(...grid, line);
  $(`chart-${name}-label`).textContent = values.length
    ? `now ${rounded(values.at(-1)[1])}, highest ${rounded(top)} (lines every 15 min)`
    : "no data yet";
}

function drawStatus(s) {
  const now = Date.now() / 1000;
  $("agent").textContent = s.agent;
  $("identity").textContent = `agent ${s.agent} · site ${s.site} · version ${s.version} · up ${age(s.uptime_s)}`;
  $("status").replaceChildren(document.createTextNode(s.status));
  $("status").className = `pill state-${s.status}`;
  $("reasons").replaceChildren(...s.reasons.map((r) => el("li", r)));
  $("shift-start").textContent = clock(s.shift_start);
  fill($("machines"), s.machines.map((m) => [
    m.name,
    pill(m.state),
    m.since ? `${clock(m.since)}${m.reason ? ` (${m.reason})` : ""}` : "–",
    [m.good ?? "–", "num"],
    [m.scrap ?? "–", "num"],
    m.alarms.length ? [m.alarms.join(", "), "alarm"] : "–",
  ]), (i) => s.machines[i].name);
  fill($("sources"), s.sources.map((src) => [
    `${src.name}${src.type ? ` (${src.type})` : ""}`,
    pill(src.state),
    src.last_data_age_s === null ? "never" : `${age(src.last_data_age_s)} ago`,
    [src.reads, "num"],
    [src.read_errors, "num"],
    Object.keys(src.bad_signals).length ? Object.keys(src.bad_signals).join(", ") : "–",
    [src.last_error || "–", "wrap"],
  ]), (i) => s.sources[i].name);
  fill($("destinations"), s.destinations.map((d) => [
    `${d.name} (${d.type})`,
    pill(d.state),
    [d.pending, "num"],
    d.oldest_pending_age_s === null ? "–" : age(d.oldest_pending_age_s),
    [d.dead_letters, "num"],
    [d.delivered, "num"],
    [d.last_error || "–", "wrap"],
  ]), (i) => s.destinations[i].name);
  const b = s.buffer;
  $("buffer").textContent = `${b.events} events stored (${bytes(b.size_bytes)} of ${bytes(b.max_size)}${b.full ? ", FULL" : ""}), `
    + `${b.pending} pending, ${b.dead_letters} dead letters · free disk ${bytes(s.disk.free_bytes)}`
    + ` · ${b.writable ? "writable" : "NOT WRITABLE"} · ${b.path}`;
  chart("backlog", s.history.map((p) => [p[0], p[1]]), now);
  chart("rate", s.history.map((p) => [p[0], p[2]]), now);
  drawDeadLetters(s.dead_letters);
}

function drawDeadLetters(dead) {
  $("dead").hidden = dead.total === 0;
  $("dead-commands").replaceChildren(...Object.entries(dead.commands).map(([name, c]) => {
    const box = el("div", null, "commands");
    box.append(el("p", `${name}: send all again`), el("code", c.requeue),
      el("p", `${name}: give them up (deleted)`), el("code", c.purge));
    return box;
  }));
  fill($("dead-letters"), dead.shown.map((d) => [
    `${d.type} ${d.id}`, d.destination, [d.reason, "wrap"], clock(d.dead_at), el("code", d.requeue),
  ]));
  $("dead-more").hidden = dead.shown.length >= dead.total;
  $("dead-more").textContent = `${dead.total - dead.shown.length} more: floorgate buffer dead-letters lists them all.`;
}

// -- the signal view ----------------------------------------------------------------

function filterQuery() {
  const query = new URLSearchParams();
  if ($("machine").value) query.set("machine", $("machine").value);
  if ($("name").value.trim()) query.set("name", $("name").value.trim());
  return query.toString();
}

function drawSignals(s) {
  $("agent").textContent = s.agent;
  const select = $("machine");
  if (!select.dataset.filled) {
    const chosen = select.value;
    select.replaceChildren(new Option("all", ""), ...s.machines.map((m) => new Option(m, m)));
    select.value = chosen;
    select.dataset.filled = "yes";
  }
  $("count").textContent = s.signals.length < s.matched
    ? `${s.signals.length} of ${s.matched} shown: narrow the filter`
    : `${s.matched} signal${s.matched === 1 ? "" : "s"}`;
  fill($("signals"), s.signals.map((g) => [
    g.signal,
    g.source,
    [g.address, "mono"],
    g.data_type || "(server's)",
    g.swap || "–",
    [g.raw ?? "–", "mono"],
    [value(g.value, g.unit), "num"],
    g.quality ? [g.error ? `${g.quality}: ${g.error}` : g.quality, `q-${g.quality} wrap`] : "–",
    clock(g.source_time),
    clock(g.changed),
  ]), (i) => s.signals[i].signal);
}

if (page === "signals") {
  const params = new URLSearchParams(location.search);
  $("name").value = params.get("name") || "";
  const machine = params.get("machine");
  if (machine) { $("machine").append(new Option(machine, machine)); $("machine").value = machine; }
  let typing = null;
  const changed = () => {
    const query = filterQuery();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
    clearTimeout(typing);
    typing = setTimeout(refresh, 250);
  };
  $("filter").addEventListener("input", changed);
  $("filter").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
}

start();
