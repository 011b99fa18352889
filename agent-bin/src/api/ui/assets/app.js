// fullauto dashboard: renders the agent's cluster view from /ui/events and acts
// through the REST API's own endpoints. No framework, no build step.
"use strict";

const LAG_WINDOW_MS = 5 * 60 * 1000;  // the lag charts show the last five minutes
let snap = null;            // the last snapshot from the agent
let auth = null;            // "Basic ..." once the user typed credentials
const lagHistory = {};      // member name -> [{t, bytes, secs}], one per update

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function bytes(n) {
  if (typeof n !== "number") return String(n);
  if (n < 1024) return n + " B";
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(1) + " " + units[i];
}

function seconds(s) {
  if (typeof s !== "number") return "? s";
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// A step chart of one lag series over the last LAG_WINDOW_MS: each value holds
// until the next update (the agent sends one only when something changed).
function spark(points, key, cls, fmt) {
  const w = 110, h = 22, now = Date.now();
  // From the first value known (the page opened) or five minutes back, at least 10 s.
  const first = points.length ? points[0].t : now;
  const from = Math.max(now - LAG_WINDOW_MS, Math.min(first, now - 10000));
  const span = now - from;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark " + cls);
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const known = points.filter((p) => typeof p[key] === "number");
  const max = Math.max(0, ...known.map((p) => p[key]));
  const x = (t) => (((Math.max(t, from) - from) / span) * w).toFixed(1);
  const y = (v) => (h - 2 - (max > 0 ? v / max : 0) * (h - 4)).toFixed(1);
  const pts = [];
  known.forEach((p, i) => {
    const next = i + 1 < known.length ? known[i + 1].t : now;
    if (next < from) return;
    pts.push(`${x(p.t)},${y(p[key])}`, `${x(next)},${y(p[key])}`);
  });
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(line);
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = `lag over the last ${LAG_WINDOW_MS / 60000} minutes (since the page opened), max ${fmt(max)}`;
  svg.append(title);
  return svg;
}

function recordLag(members, at) {
  const t = at ? Date.parse(at) : Date.now();
  for (const m of members) {
    if (m.role === "leader" || m.role === "standby_leader") continue;
    const h = lagHistory[m.name] || (lagHistory[m.name] = []);
    h.push({
      t,
      bytes: typeof m.lag === "number" ? m.lag : null,
      secs: typeof m.replay_lag_seconds === "number" ? m.replay_lag_seconds : null,
    });
    // Keep the last point before the window: it is the value at the window's start.
    while (h.length > 2 && h[1].t < t - LAG_WINDOW_MS) h.shift();
  }
}

function roleBadge(role) {
  const cls = role === "leader" || role === "standby_leader" ? "ok" :
    (role === "sync_standby" || role === "quorum_standby" ? "sync" : "");
  return el("span", { class: "badge " + cls }, role.replace("_", " "));
}

function memberCard(m, upstream) {
  const tags = m.tags || {};
  const head = el("div", { class: "head" },
    el("span", { class: "name" }, m.name), roleBadge(m.role),
    el("span", { class: "badge" }, m.state || "?"),
    m.pending_restart ? el("span", { class: "badge warn" }, "pending restart") : null,
    ...Object.entries(tags).filter(([, v]) => v !== false)
      .map(([k, v]) => el("span", { class: "badge tag" }, v === true ? k : `${k}: ${v}`)));
  const details = el("div", { class: "details" },
    el("span", {}, "TL " + (m.timeline ?? "?")),
    m.host ? el("span", {}, `${m.host}:${m.port}`) : null,
    upstream ? el("span", {}, "streams from " + upstream) : null);
  if (m.role !== "leader" && m.role !== "standby_leader") {
    const h = lagHistory[m.name] || [];
    // Received but not yet replayed WAL does not count in `lag`: say so when it differs.
    const replayBehind = typeof m.replay_lag === "number" && typeof m.lag === "number" && m.replay_lag > m.lag
      ? ` (replay ${bytes(m.replay_lag)})` : "";
    details.append(el("span", { class: "lag" }, "lag ",
      el("b", { class: "lag-bytes", title: `${m.lag} bytes behind the leader's last position` }, bytes(m.lag) + replayBehind),
      spark(h, "bytes", "b", bytes),
      el("b", { class: "lag-seconds", title: "replay lag: how old the last replayed commit is while replay is behind" },
        seconds(m.replay_lag_seconds)),
      spark(h, "secs", "s", seconds)));
  }
  if (m.api_url && snap && m.name !== snap.served_by) {
    try {
      const u = new URL(m.api_url);
      details.append(el("a", { href: `${u.protocol}//${u.host}/ui` }, "its dashboard"));
    } catch (_) { /* not a URL: no link */ }
  }
  let why = null;
  if (m.electable === true) why = el("div", { class: "why yes" }, "electable: could take over now");
  if (m.electable === false) {
    const reasons = (m.not_electable_because || []).map((b) => b.reason).join("; ");
    why = el("div", { class: "why no" }, "not electable: " + reasons);
  }
  return el("div", { class: "member", "data-name": m.name, "data-role": m.role, "data-state": m.state,
    "data-lag-seconds": typeof m.replay_lag_seconds === "number" ? String(m.replay_lag_seconds) : null },
    head, details, why);
}

function renderTopology(members) {
  const byName = new Map(members.map((m) => [m.name, m]));
  const leader = members.find((m) => m.role === "leader" || m.role === "standby_leader");
  const parent = (m) => {
    if (m === leader) return null;
    const up = (m.tags || {}).replicatefrom;
    if (up && byName.has(up) && up !== m.name) return up;
    return leader ? leader.name : null;
  };
  const children = new Map();
  const roots = [];
  for (const m of members) {
    const p = parent(m);
    if (p === null) roots.push(m); else {
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(m);
    }
  }
  const seen = new Set();
  const branch = (m, upstream) => {
    seen.add(m.name);
    const li = el("li", {}, memberCard(m, upstream));
    const kids = (children.get(m.name) || []).filter((k) => !seen.has(k.name));
    if (kids.length) li.append(el("ul", {}, ...kids.map((k) => branch(k, m.name))));
    return li;
  };
  const tree = el("ul", { class: "tree" }, ...roots.map((r) => branch(r, null)));
  // Replicas in a replicatefrom cycle hang nowhere: list them too.
  for (const m of members) if (!seen.has(m.name)) tree.append(branch(m, (m.tags || {}).replicatefrom));
  $("members").replaceChildren(tree);
}

function render() {
  if (!snap) return;
  const c = snap.cluster;
  const members = c.members || [];
  $("scope").textContent = c.scope;
  $("leader-name").textContent = snap.leader || "none";
  // No history yet (timeline 0): the leader's own timeline.
  const lead = members.find((m) => m.name === snap.leader);
  $("timeline").textContent = snap.timeline || (lead && lead.timeline) || "?";
  $("served-by").textContent = snap.served_by;
  $("paused").hidden = !c.pause;
  const mode = snap.config && snap.config.synchronous_mode;
  const sync = snap.sync && snap.sync.sync_standby && snap.sync.sync_standby.length ? snap.sync : null;
  $("sync").hidden = !mode || mode === "off" || mode === false;
  $("sync").textContent = mode === "quorum"
    ? `quorum ${sync ? sync.quorum : 0} of ${sync ? sync.sync_standby.join(", ") : "none"}`
    : `sync standbys ${sync ? sync.sync_standby.join(", ") : "none"}`;
  const target = $("act-member");
  const chosen = target.value || snap.served_by;
  target.replaceChildren(...members.map((m) => el("option", { value: m.name },
    m.name + (m.name === snap.served_by ? " (serving this page)" : ""))));
  if ([...target.options].some((o) => o.value === chosen)) target.value = chosen;
  renderTopology(members);
  const sel = $("switchover-candidate");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "any electable replica"),
    ...members.filter((m) => m.role !== "leader" && m.role !== "standby_leader")
      .map((m) => el("option", { value: m.name }, m.name + (m.electable ? "" : " (not electable)"))));
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  const rows = (snap.history || []).slice().reverse().map((h) =>
    el("tr", {}, ...[0, 1, 2, 3, 4].map((i) => el("td", {}, h[i] ?? ""))));
  $("history").tBodies[0].replaceChildren(...rows);
  $("config").textContent = JSON.stringify(snap.config, null, 2);
}

function log(line, at) {
  const t = new Date(at || Date.now()).toLocaleTimeString();
  const li = el("li", {}, el("span", { class: "t" }, t), line);
  const ol = $("log");
  ol.prepend(li);
  while (ol.children.length > 200) ol.lastChild.remove();
}

function connect() {
  const es = new EventSource("/ui/events");
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "badge ok"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").className = "badge bad"; });
  es.addEventListener("update", (ev) => {
    const u = JSON.parse(ev.data);
    for (const line of u.changes || []) log(line, u.at);
    if (u.snapshot) { snap = u.snapshot; recordLag(snap.cluster.members || [], u.at); render(); }
  });
}

// --- acting through the REST API ---------------------------------------------

function show(status, text) {
  const r = $("result");
  r.textContent = `${status} ${text}`;
  r.className = "result " + (status >= 200 && status < 300 ? "ok" : "bad");
}

async function call(method, path, body) {
  const headers = { "X-Requested-With": "fullauto-ui" };
  if (auth) headers["Authorization"] = auth;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  $("result").textContent = `${method} ${path} …`;
  $("result").className = "result";
  try {
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await resp.text();
    show(resp.status, text);
    const what = body && body.member ? `${method} ${path} (${body.member})` : `${method} ${path}`;
    if (resp.status === 401) log(`${what} refused: ${text.includes("refused this agent's credentials") ? text : "wrong or missing credentials"}`);
    else log(`${what}: ${resp.status}`);
    return resp.status;
  } catch (e) {
    show(0, "request failed: " + e);
    return 0;
  }
}

$("cred-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const u = $("cred-user").value, p = $("cred-pass").value;
  auth = u || p ? "Basic " + btoa(unescape(encodeURIComponent(u + ":" + p))) : null;
  $("cred-state").textContent = auth ? `acting as ${u}` : "no credentials";
});

$("switchover-go").addEventListener("click", () => {
  if (!snap || !snap.leader) { show(0, "there is no leader to switch over from"); return; }
  const candidate = $("switchover-candidate").value;
  const at = $("switchover-at").value.trim();
  const scope = snap.cluster.scope;
  const what = candidate ? ` to ${candidate}` : "";
  const when = at ? ` at ${at}` : "";
  // The questions fullautoctl asks, answered by the form; this is its last one.
  if (!confirm(`Are you sure you want to switchover cluster ${scope}, demoting current leader ${snap.leader}${what}${when}?`)) {
    show(0, "switchover cancelled");
    return;
  }
  const body = { leader: snap.leader };
  if (candidate) body.candidate = candidate;
  if (at) body.scheduled_at = at;
  call("POST", "/switchover", body);
});

$("pause-go").addEventListener("click", () => {
  if (confirm("Pause the cluster? No automatic failover happens while paused.")) call("PATCH", "/config", { pause: true });
});
$("resume-go").addEventListener("click", () => call("PATCH", "/config", { pause: null }));
// Any member: the serving agent acts itself or forwards to that member's API.
$("restart-go").addEventListener("click", () => {
  const m = $("act-member").value;
  if (m && confirm(`Are you sure you want to restart members ${m}?`)) call("POST", "/ui/restart", { member: m });
});
$("reinit-go").addEventListener("click", () => {
  const m = $("act-member").value;
  if (m && confirm(`Are you sure you want to reinitialize members ${m}? Its data directory is replaced by a fresh copy from the leader.`)) {
    call("POST", "/ui/reinitialize", { member: m });
  }
});
$("config-go").addEventListener("click", () => {
  let patch;
  try { patch = JSON.parse($("config-patch").value); } catch (e) { show(0, "not JSON: " + e.message); return; }
  if (confirm("Apply this change to the dynamic configuration?\n" + JSON.stringify(patch, null, 2))) call("PATCH", "/config", patch);
});

// Redraw the lag charts' time axis now and then; this reads nothing from the agent.
setInterval(() => { if (snap && !document.hidden) renderTopology(snap.cluster.members || []); }, 5000);
connect();
