// taro serve dashboard: plain JS, no build step, no file from the internet.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const view = $("#view");
  let csrf = null;
  const active = new Map();      // instance_id -> run (live, from SSE)
  const ended = [];              // recently ended runs seen live (newest first)
  let rerender = null;           // re-render function of the current view on live changes
  let followCtl = null;          // AbortController of a followed output

  // -- helpers ---------------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat(Infinity)) if (k != null && k !== "") e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }
  async function api(path, opts) {
    opts = opts || {};
    const headers = { Accept: "application/json" };
    if (opts.method === "POST") { headers["Content-Type"] = "application/json"; headers["X-CSRF-Token"] = csrf || ""; }
    const r = await fetch(path, { method: opts.method || "GET", headers, credentials: "same-origin",
      body: opts.body ? JSON.stringify(opts.body) : (opts.method === "POST" ? "{}" : undefined) });
    if (r.status === 401) { location.reload(); throw new Error("signed out"); }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new Error((data && data.error) || ("HTTP " + r.status));
    return { data, headers: r.headers };
  }
  function toast(text, bad) {
    const t = $("#toast"); t.textContent = text; t.className = "toast" + (bad ? " err" : "");
    clearTimeout(toast.t); toast.t = setTimeout(() => t.classList.add("hidden"), 4000);
  }
  function ask(text, okLabel, withInput) {
    return new Promise((resolve) => {
      const m = $("#modal"), inp = $("#modal-input");
      $("#modal-text").textContent = text; $("#modal-ok").textContent = okLabel;
      inp.value = ""; inp.classList.toggle("hidden", !withInput);
      m.classList.remove("hidden");
      const done = (v) => { m.classList.add("hidden"); $("#modal-ok").onclick = $("#modal-cancel").onclick = null; resolve(v); };
      $("#modal-ok").onclick = () => done(withInput ? { reason: inp.value } : true);
      $("#modal-cancel").onclick = () => done(null);
      (withInput ? inp : $("#modal-ok")).focus();
    });
  }
  function dur(s) {
    if (s == null) return "";
    s = Math.max(0, s);
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + "s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (d) return d + "d " + (h % 24) + "h";
    if (h) return h + "h " + (m % 60) + "m";
    return m + "m " + Math.floor(s % 60) + "s";
  }
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso), now = new Date();
    return d.toDateString() === now.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }
  function elapsed(r) {
    if (r.started_at) return (Date.now() - Date.parse(r.started_at)) / 1000;
    return (Date.now() - Date.parse(r.created_at)) / 1000;
  }
  function stateOf(r) { return r.stage === "ENDED" ? (r.status || "ENDED") : (r.state || r.stage); }
  function badge(r) { const s = stateOf(r); return el("span", { class: "state s-" + s }, s); }
  // the record's detail may start with the state the badge already shows ("PENDING latch prod")
  function detailOf(r) {
    const d = r.detail || "", s = stateOf(r) + " ";
    return d.startsWith(s) ? d.slice(s.length) : d;
  }
  function bad(r) { return r.outcome === "FAULT"; }
  function gated(r) {
    const c = r.coordination || {};
    return r.stage !== "ENDED" && ((c.latch && !c.latch_passed) || (c.approval && !c.approval_passed));
  }
  function runLink(r) { return el("a", { href: "#/run/" + encodeURIComponent(r.instance_id) }, r.job_id); }
  function progressCell(r) {
    const p = r.progress;
    if (!p) return "";
    const txt = p.total ? `${p.completed ?? 0}/${p.total}${p.unit ? " " + p.unit : ""}` : (p.event || p.result || "");
    const box = el("div", {}, txt);
    if (p.total) {
      const inner = el("div"); inner.style.width = Math.min(100, 100 * (p.completed || 0) / p.total) + "%";
      box.append(el("div", { class: "bar" }, inner));
    }
    return box;
  }
  function td(label, ...kids) { return el("td", { "data-label": label }, ...kids); }

  // -- control ---------------------------------------------------------------------------------
  async function stopRun(r, interrupt) {
    const verb = interrupt ? "Interrupt" : "Stop";
    if (!(await ask(`${verb} ${r.instance_id}? ` + (interrupt ? "It ends INTERRUPTED (a failure)." : "It ends STOPPED."), verb))) return;
    try { await api(`/api/runs/${encodeURIComponent(r.instance_id)}/stop`, { method: "POST", body: { interrupt: !!interrupt } });
      toast(`${verb.toLowerCase()} sent to ${r.instance_id}`); } catch (e) { toast(e.message, true); }
  }
  async function approve(r) {
    try { await api(`/api/runs/${encodeURIComponent(r.instance_id)}/approve`, { method: "POST" }); toast(`approved ${r.instance_id}`); }
    catch (e) { toast(e.message, true); }
  }
  async function deny(r) {
    const a = await ask(`Deny ${r.instance_id}? It ends DENIED and never executes.`, "Deny", true);
    if (!a) return;
    try { await api(`/api/runs/${encodeURIComponent(r.instance_id)}/deny`, { method: "POST", body: a.reason ? { reason: a.reason } : {} });
      toast(`denied ${r.instance_id}`); } catch (e) { toast(e.message, true); }
  }
  function controls(r) {
    if (r.stage === "ENDED" || !canOperate) return "";
    const b = [];
    if (gated(r)) {
      b.push(el("button", { class: "primary", onclick: () => approve(r) }, "Approve"));
      b.push(el("button", { onclick: () => deny(r) }, "Deny"));
    }
    b.push(el("button", { onclick: () => stopRun(r, false) }, "Stop"));
    b.push(el("button", { onclick: () => stopRun(r, true) }, "Interrupt"));
    return el("div", { class: "actions" }, b);
  }
  let canOperate = false;

  // -- live events -----------------------------------------------------------------------------
  async function loadActive() {
    const { data } = await api("/api/runs?active=true&limit=1000");
    active.clear();
    for (const r of data) active.set(r.instance_id, r);
    if (rerender) rerender();
  }
  function connect() {
    const es = new EventSource("/api/events");
    es.onopen = () => { $("#conn").classList.add("live"); loadActive().catch(() => {}); };
    es.onerror = () => { $("#conn").classList.remove("live"); };
    es.addEventListener("reset", () => loadActive().catch(() => {}));
    es.onmessage = (m) => {
      const ev = JSON.parse(m.data), r = ev.run;
      if (r.stage === "ENDED") {
        active.delete(r.instance_id);
        ended.unshift(r); if (ended.length > 20) ended.pop();
      } else active.set(r.instance_id, r);
      if (rerender) rerender(ev);
    };
  }

  // -- views -----------------------------------------------------------------------------------
  function runsTable(runs, cols) {
    const heads = { job: "Job", run: "Run", host: "Host", state: "State", progress: "Progress",
      elapsed: "Elapsed", created: "Created", time: "Exec time", exit: "Exit", actions: "" };
    const t = el("table", { class: "runs" }, el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, heads[c])))));
    const body = el("tbody");
    for (const r of runs) {
      const cells = {
        job: () => td("Job", runLink(r)),
        run: () => td("Run", el("span", { class: "muted" }, r.run_id)),
        host: () => td("Host", r.host || ""),
        state: () => td("State", badge(r), detailOf(r) ? el("div", { class: "detail" }, detailOf(r)) : null,
          r.error && r.stage === "ENDED" ? el("div", { class: "detail" }, r.error) : null),
        progress: () => td("Progress", progressCell(r)),
        elapsed: () => td("Elapsed", el("span", { "data-since": r.started_at || r.created_at }, dur(elapsed(r)))),
        created: () => td("Created", when(r.created_at)),
        time: () => td("Exec time", dur(r.duration_s)),
        exit: () => td("Exit", r.exit_code == null ? "" : String(r.exit_code)),
        actions: () => td("", controls(r)),
      };
      body.append(el("tr", { class: bad(r) ? "bad" : null, "data-iid": r.instance_id }, cols.map((c) => cells[c]())));
    }
    t.append(body);
    return t;
  }
  function dashboard() {
    function render() {
      const runs = [...active.values()].sort((a, b) => a.created_at < b.created_at ? 1 : -1);
      const pending = runs.filter(gated);
      view.replaceChildren(
        el("section", { id: "approvals" },
          el("h2", {}, "Approvals ", el("span", { class: "count" }, `(${pending.length})`)),
          pending.length ? runsTable(pending, ["job", "run", "host", "state", "elapsed", "actions"])
            : el("div", { class: "empty" }, "No run is waiting at a gate.")),
        el("section", { id: "active" },
          el("h2", {}, "Active runs ", el("span", { class: "count" }, `(${runs.length})`)),
          runs.length ? runsTable(runs, ["job", "run", "host", "state", "progress", "elapsed", "actions"])
            : el("div", { class: "empty" }, "Nothing runs now.")),
        el("section", { id: "ended" },
          el("h2", {}, "Ended while you watched"),
          ended.length ? runsTable(ended, ["job", "run", "host", "state", "time", "exit"])
            : el("div", { class: "empty" }, "No run ended since this page opened.")));
    }
    rerender = render; render();
  }

  async function history(params) {
    const q = new URLSearchParams(params);
    const f = el("form", { class: "filters" },
      el("label", {}, "Pattern", el("input", { name: "pattern", value: q.get("pattern") || "", placeholder: "job, run, tag, glob" })),
      el("label", {}, "Status", el("input", { name: "status", value: q.get("status") || "", placeholder: "FAILED" })),
      el("label", {}, "Outcome", el("select", { name: "outcome" }, ["", "SUCCESS", "ABORTED", "REJECTED", "FAULT"].map(
        (o) => el("option", { value: o, selected: q.get("outcome") === o }, o || "any")))),
      el("label", {}, "Since", el("input", { name: "since", value: q.get("since") || "", placeholder: "2h, today, ISO" })),
      el("label", {}, "Until", el("input", { name: "until", value: q.get("until") || "" })),
      el("label", {}, "Last per job", el("input", { type: "checkbox", name: "last", checked: q.get("last") === "true" })),
      el("button", { class: "primary", type: "submit" }, "Filter"));
    f.onsubmit = (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      for (const [k, v] of new FormData(f)) if (v) p.set(k, k === "last" ? "true" : v);
      location.hash = "#/history?" + p.toString();
    };
    const table = el("div", {}, el("div", { class: "empty" }, "Loading…"));
    const pager = el("div", { class: "pager" });
    view.replaceChildren(el("h2", {}, "History"), f, table, pager);
    rerender = null;
    const api_q = new URLSearchParams();
    for (const k of ["pattern", "status", "outcome", "since", "until", "last", "before"]) if (q.get(k)) api_q.set(k, q.get(k));
    api_q.set("limit", "50");
    try {
      const { data, headers } = await api("/api/runs?" + api_q.toString());
      table.replaceChildren(data.length ? runsTable(data, ["job", "run", "host", "created", "time", "state", "exit"])
        : el("div", { class: "empty" }, "No run matches."));
      if (q.get("before")) {
        const p = new URLSearchParams(q); p.delete("before");
        pager.append(el("a", { href: "#/history?" + p.toString() }, el("button", {}, "← Newest")));
      }
      const next = headers.get("X-Next-Cursor");
      if (next) {
        const p = new URLSearchParams(q); p.set("before", next);
        pager.append(el("a", { href: "#/history?" + p.toString() }, el("button", {}, "Older →")));
      }
    } catch (e) { table.replaceChildren(el("div", { class: "empty" }, e.message)); }
  }

  async function runPage(iid) {
    let r;
    try { r = (await api("/api/runs/" + encodeURIComponent(iid))).data; }
    catch (e) { view.replaceChildren(el("div", { class: "empty" }, e.message)); rerender = null; return; }
    const rec = el("div");
    const out = el("pre", { class: "output", id: "output" });
    const followBtn = el("button", {}, "Follow live");
    const wholeBtn = el("button", {}, "Whole output");
    function renderRecord() {
      const rows = [["Job", el("a", { href: "#/job/" + encodeURIComponent(r.job_id) }, r.job_id)], ["Run", r.run_id],
        ["State", el("span", {}, badge(r), " ", detailOf(r))], ["Host", r.host], ["User", r.user],
        ["Command", (r.command || []).join(" ")], ["Created", when(r.created_at)], ["Started", when(r.started_at)],
        ["Ended", when(r.ended_at)], ["Exec time", dur(r.duration_s)], ["Exit code", r.exit_code],
        ["Tags", (r.tags || []).join(", ")], ["Error", r.error], ["Warnings", (r.warnings || []).join("; ")],
        ["Coordination", Object.keys(r.coordination || {}).length ? JSON.stringify(r.coordination) : ""],
        ["Actions", (r.actions || []).map((a) => `${a.action} by ${a.by || "unknown"}${a.reason ? ": " + a.reason : ""}`).join("; ")]];
      rec.replaceChildren(el("h2", {}, r.instance_id), controls(r),
        el("dl", { class: "record" }, rows.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
    }
    async function load(follow) {
      if (followCtl) followCtl.abort();
      followCtl = new AbortController();
      out.textContent = "";
      const url = `/api/runs/${encodeURIComponent(iid)}/output?stream=all` + (follow ? "&follow=true&tail=200" : "");
      try {
        const resp = await fetch(url, { credentials: "same-origin", signal: followCtl.signal });
        if (!resp.ok) { out.textContent = ((await resp.json().catch(() => null)) || {}).error || "no output"; return; }
        const reader = resp.body.getReader(), dec = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
          out.append(dec.decode(value, { stream: true }));
          if (atEnd) out.scrollTop = out.scrollHeight;
        }
      } catch (e) { if (e.name !== "AbortError") out.append("\n[" + e.message + "]"); }
    }
    followBtn.onclick = () => load(true);
    wholeBtn.onclick = () => load(false);
    view.replaceChildren(rec, el("h2", {}, "Output"), el("div", { class: "toolbar" }, followBtn, wholeBtn), out);
    renderRecord();
    rerender = (ev) => { if (ev && ev.run && ev.run.instance_id === iid) { r = ev.run; renderRecord(); } };
    load(r.stage !== "ENDED");
  }

  function chart(runs) {
    const pts = runs.filter((r) => r.duration_s != null).slice(0, 50).reverse();
    const W = 600, H = 160, max = Math.max(1e-3, ...pts.map((r) => r.duration_s));
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img"); svg.setAttribute("aria-label", "durations of the last runs");
    const bw = W / Math.max(pts.length, 1);
    pts.forEach((r, i) => {
      const h = Math.max(2, (H - 20) * r.duration_s / max);
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", i * bw + 1); rect.setAttribute("y", H - h); rect.setAttribute("width", Math.max(1, bw - 2));
      rect.setAttribute("height", h);
      rect.setAttribute("fill", r.outcome === "SUCCESS" ? "#1b7f3b" : r.outcome === "FAULT" ? "#b00020" : "#8a94a6");
      const t = document.createElementNS(ns, "title"); t.textContent = `${r.run_id}: ${dur(r.duration_s)} ${r.status || ""}`;
      rect.append(t); svg.append(rect);
    });
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 4); label.setAttribute("y", 14); label.setAttribute("font-size", 12); label.setAttribute("fill", "#5b6474");
    label.textContent = "max " + dur(max); svg.append(label);
    return el("div", { class: "chart" }, svg);
  }
  async function jobsPage() {
    rerender = null;
    view.replaceChildren(el("h2", {}, "Jobs"), el("div", { class: "empty" }, "Loading…"));
    try {
      const { data } = await api("/api/stats");
      const t = el("table", { class: "runs" }, el("thead", {}, el("tr", {}, ["Job", "Runs", "Success", "Last", "p50", "p95", "Max"].map((h) => el("th", {}, h)))));
      const b = el("tbody");
      for (const s of data) b.append(el("tr", { class: s.last_status && ["FAILED", "ERROR", "LOST"].includes(s.last_status) ? "bad" : null },
        td("Job", el("a", { href: "#/job/" + encodeURIComponent(s.job_id) }, s.job_id)), td("Runs", s.runs),
        td("Success", s.success_rate == null ? "" : Math.round(100 * s.success_rate) + "%"),
        td("Last", s.last_status ? el("span", { class: "state s-" + s.last_status }, s.last_status) : "active"),
        td("p50", dur(s.p50_s)), td("p95", dur(s.p95_s)), td("Max", dur(s.max_s))));
      t.append(b);
      view.replaceChildren(el("h2", {}, "Jobs"), data.length ? t : el("div", { class: "empty" }, "No run yet."));
    } catch (e) { view.replaceChildren(el("div", { class: "empty" }, e.message)); }
  }
  async function jobPage(job) {
    rerender = null;
    const pat = job.replace(/([*?[\]])/g, "[$1]");
    try {
      const [{ data: stats }, { data: runs }] = await Promise.all([
        api("/api/stats?pattern=" + encodeURIComponent(pat)),
        api("/api/runs?active=false&limit=50&pattern=" + encodeURIComponent(pat))]);
      const s = stats.find((x) => x.job_id === job) || {};
      const stat = (k, v) => el("div", { class: "stat" }, el("span", { class: "muted" }, k), el("b", {}, v));
      view.replaceChildren(el("h2", {}, job),
        el("div", { class: "stats" }, stat("Runs", s.runs ?? 0),
          stat("Success rate", s.success_rate == null ? "–" : Math.round(100 * s.success_rate) + "%"),
          stat("p50", dur(s.p50_s) || "–"), stat("p95", dur(s.p95_s) || "–"), stat("Max", dur(s.max_s) || "–")),
        el("h2", {}, "Durations of the last runs"), chart(runs),
        el("h2", {}, "Last runs"), runsTable(runs, ["job", "run", "host", "created", "time", "state", "exit"]));
    } catch (e) { view.replaceChildren(el("div", { class: "empty" }, e.message)); }
  }

  function route() {
    if (followCtl) { followCtl.abort(); followCtl = null; }
    const h = location.hash.replace(/^#/, "") || "/";
    const [path, query] = h.split("?");
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on",
      a.dataset.nav === (path.startsWith("/history") ? "history" : path.startsWith("/job") ? "jobs" : path === "/" ? "active" : ""));
    if (path.startsWith("/run/")) return runPage(decodeURIComponent(path.slice(5)));
    if (path.startsWith("/job/")) return jobPage(decodeURIComponent(path.slice(5)));
    if (path === "/jobs") return jobsPage();
    if (path === "/history") return history(query || "");
    return dashboard();
  }

  setInterval(() => {
    for (const s of document.querySelectorAll("[data-since]")) s.textContent = dur((Date.now() - Date.parse(s.dataset.since)) / 1000);
  }, 1000);

  async function start() {
    const { data } = await api("/api/session");
    csrf = data.csrf; canOperate = data.role === "operate";
    $("#who").textContent = `${data.name} (${data.role}) · ${data.environment || ""}`;
    $("#signout").onsubmit = async (e) => {
      e.preventDefault();
      await fetch("/signout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
      location.reload();
    };
    window.addEventListener("hashchange", route);
    connect();
    route();
  }
  start();
})();
