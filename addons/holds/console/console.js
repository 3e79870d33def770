// phigate reviewer console. Everything is rendered with textContent: request summaries and
// justifications are text written by other people and must never become markup or script.
"use strict";
(function () {
  const KEY = "phigate-admin-token";
  const $ = (id) => document.getElementById(id);
  let holds = [];
  let serverSkew = 0;

  function token() { return sessionStorage.getItem(KEY) || ""; }

  function showError(text) { $("error").textContent = text || ""; }

  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                     cache: "no-store", credentials: "omit" });
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {}; }
    if (!resp.ok) throw new Error((data.detail || data.error || ("HTTP " + resp.status)));
    return data;
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function fmtTime(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : ""; }

  function secondsLeft(h) { return Math.max(0, Math.round(h.expires_at - (Date.now() / 1000 + serverSkew))); }

  function fmtLeft(s) { const m = Math.floor(s / 60); return m + ":" + String(s % 60).padStart(2, "0"); }

  async function decide(hold, action, textarea, row) {
    const justification = textarea.value.trim();
    if (!justification) { showError("A justification is required to " + action + "."); textarea.focus(); return; }
    row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      const data = await api("POST", "/api/holds/" + encodeURIComponent(hold.hold_id) + "/" + action,
                             { justification });
      showError("");
      row.dataset.state = data.hold.state;
      await refresh();
    } catch (e) {
      showError(action + " " + hold.hold_id + ": " + e.message);
      row.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  }

  function renderPending() {
    const body = $("pending").querySelector("tbody");
    // Keep what a reviewer is typing: rebuild only rows that are new, drop rows that are gone.
    const keep = new Set(holds.map((h) => h.hold_id));
    body.querySelectorAll("tr").forEach((tr) => { if (!keep.has(tr.dataset.holdId)) tr.remove(); });
    for (const h of holds) {
      let tr = body.querySelector('tr[data-hold-id="' + CSS.escape(h.hold_id) + '"]');
      if (!tr) {
        tr = el("tr");
        tr.dataset.holdId = h.hold_id;
        const who = el("td"); who.append(el("div", h.requester_name || h.requester), el("div", h.requester, "muted"));
        const op = el("td"); op.append(el("div", h.operation), el("div", h.method + " " + h.path, "muted"));
        const summary = el("td", JSON.stringify(h.summary, null, 1), "summary");
        const rule = el("td"); rule.append(el("div", h.rule_id), el("div", h.reason || "", "muted"));
        const decision = el("td");
        const ta = el("textarea"); ta.className = "justification"; ta.placeholder = "justification (required)";
        const approve = el("button", "Approve", "approve"); approve.type = "button";
        const deny = el("button", "Deny", "deny"); deny.type = "button";
        approve.addEventListener("click", () => decide(h, "approve", ta, tr));
        deny.addEventListener("click", () => decide(h, "deny", ta, tr));
        decision.append(ta, el("br"), approve, deny);
        tr.append(who, op, el("td", h.collection || ""), summary, rule, el("td", "", "approvals"),
                  el("td", "", "left"), decision);
        body.append(tr);
      }
      tr.querySelector(".approvals").textContent =
        h.approvals.length + " / " + h.approvals_required + (h.approvals.length ? " (" + h.approvals.map((a) => a.approver).join(", ") + ")" : "");
      tr.querySelectorAll("button").forEach((b) => { b.disabled = !h.can_decide; });
      tr.querySelector("textarea").disabled = !h.can_decide;
      tr.title = h.can_decide ? "" : "You cannot decide this hold (your own request, a role it does not name, or you already approved).";
    }
    $("pending-count").textContent = "(" + holds.length + ")";
    $("no-pending").hidden = holds.length > 0;
    tick();
  }

  function tick() {
    document.querySelectorAll("#pending tbody tr").forEach((tr) => {
      const h = holds.find((x) => x.hold_id === tr.dataset.holdId);
      if (!h) return;
      const s = secondsLeft(h);
      const cell = tr.querySelector(".left");
      cell.textContent = fmtLeft(s);
      cell.className = "left" + (s < 30 ? " urgent" : "");
    });
  }

  function renderRows(tableId, rows, cells) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren();
    for (const r of rows) {
      const tr = el("tr");
      for (const c of cells(r)) tr.append(typeof c === "object" && c !== null ? c : el("td", c));
      body.append(tr);
    }
  }

  async function refresh() {
    if (!token()) return;
    try {
      const [p, d, g] = await Promise.all([api("GET", "/api/holds?state=pending"), api("GET", "/api/decisions?limit=30"),
                                           api("GET", "/api/grants")]);
      serverSkew = p.now - Date.now() / 1000;
      holds = p.holds;
      renderPending();
      renderRows("decisions", d.decisions, (r) => [r.hold_id || r.grant_id || "", r.kind,
        el("td", r.outcome, "outcome-" + r.outcome), r.requester, (r.approvers || []).join(", "), r.operation || "",
        r.collection || "", r.justification || "", fmtTime(r.decided_at)]);
      renderRows("grants", g.grants, (r) => [r.grant_id, r.subject, r.operation, r.collection, r.granted_by,
        fmtLeft(Math.round(r.seconds_left))]);
    } catch (e) {
      showError(e.message);
    }
  }

  async function signIn() {
    const value = $("token").value.trim();
    if (!value) { showError("Paste your access token first."); return; }
    sessionStorage.setItem(KEY, value);
    $("token").value = "";
    await whoami();
  }

  async function whoami() {
    if (!token()) { $("who").textContent = "not signed in"; return; }
    try {
      const me = await api("GET", "/api/me");
      $("who").textContent = "signed in as " + (me.name || me.subject) + " (" + me.roles.join(", ") + ")";
      showError("");
      await refresh();
    } catch (e) {
      $("who").textContent = "not signed in";
      showError("sign-in failed: " + e.message);
    }
  }

  async function grant(ev) {
    ev.preventDefault();
    try {
      await api("POST", "/api/grants", { subject: $("grant-subject").value.trim(), operation: $("grant-operation").value.trim(),
        collection: $("grant-collection").value.trim(), minutes: Number($("grant-minutes").value),
        justification: $("grant-justification").value.trim() });
      showError("");
      $("grant-justification").value = "";
      await refresh();
    } catch (e) { showError("grant: " + e.message); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("use-token").addEventListener("click", signIn);
    $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
    $("sign-out").addEventListener("click", () => { sessionStorage.removeItem(KEY); holds = []; renderPending(); whoami(); });
    $("grant-form").addEventListener("submit", grant);
    whoami();
    setInterval(refresh, 2000);
    setInterval(tick, 1000);
  });
})();
