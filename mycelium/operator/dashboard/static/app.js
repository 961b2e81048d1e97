// Mycelium Mesh dashboard: one EventSource, three renderers. No library, no build step.
// Every string from the mesh goes into the page as text (textContent), never as HTML.
"use strict";

const MAX_LOG = 500;
const collapsed = new Set();        // tree paths the operator folded
const knownApps = new Set();
let lastPids = new Map();           // tree path -> pid, to flash a respawn
let filter = "";
let rates = {};                     // app -> [[ts, req/s, err/s], ...], last 5 minutes

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return `${d}d${h}h`;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function clock(ts) {
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  if (isNaN(d)) return String(ts);
  return d.toISOString().slice(11, 23);
}

// ---------------------------------------------------------------- tree

function entryLine(n) {
  const now = Date.now() / 1000;
  const line = el("span", {class: `entry s-${n.state}`, "data-path": n.path, "data-state": n.state,
                           "data-pid": n.pid ?? "", "data-restarts": n.restarts});
  line.append(el("span", {class: "dot", title: n.state}),
              el("span", {class: "name", text: n.id}),
              el("span", {class: "kind", text: n.kind === "worker" ? "worker" :
                  `${n.kind === "dynamic_supervisor" ? "dynamic" : "sup"}${n.strategy ? " " + n.strategy : ""}`}),
              el("span", {class: "state", text: n.state}));
  if (n.pid) line.append(el("span", {class: "pid", text: `pid ${n.pid}`}));
  if (n.rss) line.append(el("span", {class: "muted", text: `${(n.rss / 1048576).toFixed(0)} MB`}));
  if (n.mailbox) line.append(el("span", {class: "backoff", title: "messages waiting in its inbox",
                                         text: `mailbox ${n.mailbox}`}));
  if (n.started_at) line.append(el("span", {class: "uptime muted", "data-since": n.started_at,
                                            text: `up ${duration(now - n.started_at)}`}));
  line.append(el("span", {class: "restarts" + (n.restarts ? " some" : ""), text: `restarts ${n.restarts}`}));
  if (n.backoff !== null && n.backoff !== undefined)
    line.append(el("span", {class: "backoff", text: `backoff ${n.backoff.toFixed(2)}s`}));
  if (n.last_exit)
    line.append(el("span", {class: "exit", "data-since": n.last_exit.ts,
                            title: `last exit at ${clock(n.last_exit.ts)}`,
                            text: `last exit: ${n.last_exit.reason ?? "?"}`}));
  if (n.pid && lastPids.has(n.path) && lastPids.get(n.path) !== n.pid) line.classList.add("flash");
  return line;
}

function treeNode(n) {
  const li = el("li", {"data-path": n.path});
  if (n.children && n.children.length) {
    const det = el("details", {"data-path": n.path});
    det.open = !collapsed.has(n.path);
    det.addEventListener("toggle", () => {
      if (det.open) collapsed.delete(n.path); else collapsed.add(n.path);
    });
    det.append(el("summary", {}, entryLine(n)),
               el("ul", {}, ...n.children.map(treeNode)));
    li.append(det);
  } else {
    li.append(el("div", {class: "leaf"}, entryLine(n)));
  }
  return li;
}

function collectPids(n, out) {
  if (n.pid) out.set(n.path, n.pid);
  for (const c of n.children || []) collectPids(c, out);
  return out;
}

function renderTree(tree) {
  const box = document.getElementById("tree");
  if (!tree) { box.replaceChildren(el("p", {class: "muted", text: "no tree (the mesh is busy)"})); return; }
  box.replaceChildren(el("ul", {}, treeNode(tree)));
  lastPids = collectPids(tree, new Map());
}

// ---------------------------------------------------------------- apps

function renderApps(apps) {
  const box = document.getElementById("apps");
  for (const a of apps) addApp(a.app);
  if (!apps.length) { box.replaceChildren(el("p", {class: "muted", text: "no app deployed"})); return; }
  const nodes = apps[0].nodes.map(n => n.node);
  const head = el("tr", {}, el("th", {text: "app"}), el("th", {text: "state"}),
                  el("th", {text: "digest"}), el("th", {text: "min/max"}), el("th", {text: "Ready"}),
                  ...apps[0].nodes.map(n => el("th", {text: n.node, title: n.capacity ?? ""},
                    ...(n.capacity ? [el("div", {class: "muted", text: n.capacity})] : []))));
  const rows = apps.map(a => {
    const updating = a.previous && a.previous !== a.digest;
    const c = a.canary;
    const progress = c ? ` (canary ${c.ready}/${c.count}, ${c.weight}% of requests, 5xx ` +
                         `${c.error_rate}% vs ${c.old_error_rate}%)`
                   : updating ? ` (green ${a.green_ready}/${a.desired})` : "";
    return el("tr", {"data-app": a.app},
      el("td", {class: "name", text: a.app},
        ...(a.hosts && a.hosts.length
          ? [el("div", {class: "hosts muted", title: "host names routed to this app",
                        text: a.hosts.join(" ")})] : [])),
      el("td", {}, el("span", {class: `badge a-${a.state}`, text: a.state, title: a.reason ?? ""})),
      el("td", {class: "digest", title: a.digest ?? "",
                text: (a.digest ?? "").slice(0, 12) + (updating ? ` ← ${a.previous.slice(0, 12)}` : "")}),
      el("td", {text: `${a.min}/${a.max}`}),
      el("td", {class: "ready", title: a.desired_reason ?? "",
                text: `${a.ready}/${a.desired}${progress}`}),
      ...a.nodes.map(n => el("td", {"data-node": n.node},
        ...n.instances.map(i => el("div", {class: "inst-box", "data-instance": i.id ?? ""},
          el("span", {class: `inst ${i.colour} i-${i.state}${i.unready ? " unready" : ""}`,
            title: `${i.id} ${i.digest ?? ""} pid ${i.pid ?? "-"} restarts ${i.restarts}` +
                   (i.check ? `\nlast check ${i.check}` : "") +
                   (i.status_text ? `\nstatus ${i.status_text}` : ""),
            text: `${i.colour === "blue" ? "blue" : "green"} ${i.unready ? "unready" : i.state}`}),
          ...(i.output && i.output.length
            ? [el("pre", {class: "out", title: `last lines of ${i.id}`, text: i.output.join("\n")})] : []),
          ...(i.last_exit
            ? [el("div", {class: "last-exit", title: `${i.last_exit.instance} at ${i.last_exit.at}`,
                          text: `last exit: ${i.last_exit.reason}`}),
               ...((i.last_exit.output_tail || []).length
                 ? [el("pre", {class: "out exit-tail", text: i.last_exit.output_tail.join("\n")})] : [])]
            : []))))));
  });
  box.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

// ---------------------------------------------------------------- rates

const W = 260, H = 54;

function polyline(points, idx, max, t0, span, cls) {
  const pts = points.map(p => `${((p[0] - t0) / span * W).toFixed(1)},${(H - p[idx] / max * (H - 4) - 2).toFixed(1)}`);
  const svgNS = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(svgNS, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("stroke-width", "1.5");
  line.setAttribute("class", cls);
  return line;
}

function renderRates(series) {
  const box = document.getElementById("rates");
  const apps = Object.keys(series);
  if (!apps.length) { box.replaceChildren(el("p", {class: "muted", text: "no traffic yet"})); return; }
  const svgNS = "http://www.w3.org/2000/svg";
  box.replaceChildren(...apps.map(app => {
    const pts = series[app];
    const last = pts[pts.length - 1] || [0, 0, 0];
    const max = Math.max(1, ...pts.map(p => p[1]));
    // the x axis spans the data (at least a minute, at most the 5 minutes kept)
    const t1 = last[0] || Date.now() / 1000;
    const span = Math.min(300, Math.max(60, t1 - (pts[0] ? pts[0][0] : t1)));
    const t0 = t1 - span;
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${app} requests and errors per second`);
    const base = document.createElementNS(svgNS, "line");
    base.setAttribute("x1", 0); base.setAttribute("x2", W);
    base.setAttribute("y1", H - 1); base.setAttribute("y2", H - 1);
    base.setAttribute("stroke", "#ddd");
    svg.append(base);
    const shown = pts.filter(p => p[0] >= t0);
    if (shown.length === 1) {  // one sample so far: a dot, a line needs two
      const dot = document.createElementNS(svgNS, "circle");
      dot.setAttribute("cx", W - 2);
      dot.setAttribute("cy", (H - shown[0][1] / max * (H - 4) - 2).toFixed(1));
      dot.setAttribute("r", 2);
      dot.setAttribute("class", "req");
      dot.setAttribute("fill", "currentColor");
      svg.append(dot);
    } else if (shown.length) {
      const g1 = document.createElementNS(svgNS, "g"); g1.setAttribute("class", "req");
      g1.append(polyline(shown, 1, max, t0, span, "req-line"));
      const g2 = document.createElementNS(svgNS, "g"); g2.setAttribute("class", "err");
      g2.append(polyline(shown, 2, max, t0, span, "err-line"));
      svg.append(g1, g2);
    }
    return el("div", {class: "chart", "data-app": app},
      el("div", {class: "title"}, el("span", {class: "name", text: app}),
         el("span", {class: "req", text: `${last[1].toFixed(1)} req/s`}),
         el("span", {class: "err", text: `${last[2].toFixed(1)} err/s`}),
         el("span", {class: "muted", text: `peak ${max.toFixed(1)}`})),
      svg);
  }));
}

// ---------------------------------------------------------------- log

function addApp(app) {
  if (!app || knownApps.has(app)) return;
  knownApps.add(app);
  document.getElementById("app-filter").append(el("option", {value: app, text: app}));
}

function visible(li) {
  return filter === "" || (filter === "-" ? li.dataset.app === "" : li.dataset.app === filter);
}

function logLine(r, fresh) {
  const app = r.app ?? "";
  addApp(app);
  const extra = [];
  if (r.reason) extra.push(`reason=${r.reason}`);
  if (r.delay !== null && r.delay !== undefined) extra.push(`delay=${Number(r.delay).toFixed(2)}s`);
  if (r.pid) extra.push(`pid=${r.pid}`);
  if (r.restarts !== undefined && r.restarts !== null) extra.push(`restarts=${r.restarts}`);
  const li = el("li", {class: `e-${r.event}` + (fresh ? " new" : ""), "data-app": app,
                       "data-event": r.event, "data-child": r.child ?? "",
                       title: JSON.stringify(r)},
    el("span", {class: "muted", text: clock(r.ts) + " "}),
    el("span", {class: "ev", text: r.event}), " ",
    el("span", {text: `${r.supervisor ?? ""}${r.child ? " " + r.child : ""} `}),
    el("span", {class: "muted", text: extra.join(" ")}));
  li.hidden = !visible(li);
  return li;
}

function prependLog(records, fresh) {
  const list = document.getElementById("log");
  const frag = document.createDocumentFragment();
  for (let i = records.length - 1; i >= 0; i--) frag.append(logLine(records[i], fresh));
  list.prepend(frag);
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function applyFilter() {
  filter = document.getElementById("app-filter").value;
  for (const li of document.getElementById("log").children) li.hidden = !visible(li);
}

// ---------------------------------------------------------------- wiring

function setConn(live) {
  const c = document.getElementById("conn");
  c.textContent = live ? "live" : "reconnecting…";
  c.className = "conn " + (live ? "live" : "connecting");
}

function tick() {
  const now = Date.now() / 1000;
  for (const span of document.querySelectorAll(".uptime[data-since]"))
    span.textContent = `up ${duration(now - Number(span.dataset.since))}`;
}

function connect() {
  const es = new EventSource("/api/events");
  es.onopen = () => setConn(true);
  es.onerror = () => setConn(false);
  es.addEventListener("history", ev => {
    document.getElementById("log").replaceChildren();
    prependLog(JSON.parse(ev.data), false);
  });
  es.addEventListener("log", ev => prependLog([JSON.parse(ev.data)], true));
  es.addEventListener("state", ev => {
    const s = JSON.parse(ev.data);
    renderTree(s.tree);
    renderApps(s.apps);
    const err = document.getElementById("error");
    err.hidden = !s.error;
    err.textContent = s.error ?? "";
    const up = s.nodes.filter(n => n.state === "up").length;
    document.getElementById("summary").textContent =
      `${s.nodes.length} nodes (${up} up) · ${s.apps.length} apps · updated ${clock(Date.now() / 1000)}`;
    document.body.dataset.updated = String(Date.now());
  });
  es.addEventListener("rates", ev => { rates = JSON.parse(ev.data); renderRates(rates); });
  es.addEventListener("rate", ev => {
    const points = JSON.parse(ev.data);
    for (const [app, p] of Object.entries(points)) {
      const series = rates[app] || (rates[app] = []);
      series.push(p);
      while (series.length && series[0][0] < p[0] - 300) series.shift();
    }
    renderRates(rates);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("app-filter").addEventListener("change", applyFilter);
  document.getElementById("expand").addEventListener("click", () => {
    collapsed.clear();
    for (const d of document.querySelectorAll("#tree details")) d.open = true;
  });
  document.getElementById("collapse").addEventListener("click", () => {
    for (const d of document.querySelectorAll("#tree details")) {
      if (/\/apps\/[^/]+$/.test(d.dataset.path)) { d.open = false; collapsed.add(d.dataset.path); }
    }
  });
  setInterval(tick, 1000);
  connect();
});
