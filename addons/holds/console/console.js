// phigate reviewer console. Everything is rendered with textContent: request summaries and
// justifications are text written by other people and must never become markup or script.
//
// Sign-in: OAuth 2.0 authorization code with PKCE (RFC 7636) at the OpenID provider the gateway
// trusts, as the public client named in /console-config.json. Only the PKCE verifier and state
// survive the redirect (sessionStorage, removed on return); the access token lives in this page's
// memory only and the page signs out when it expires.
"use strict";
(function () {
  const FLOW = "phigate-console-signin";
  const $ = (id) => document.getElementById(id);
  let config = { issuer: "", client_id: "", scope: "openid" };
  let accessToken = "";
  let logoutTimer = 0;
  let holds = [];
  let serverSkew = 0;

  function showError(text) { $("error").textContent = text || ""; }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  // ------------------------------------------------------------------ sign-in

  function b64url(bytes) {
    let s = "";
    bytes.forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomString() { const a = new Uint8Array(32); crypto.getRandomValues(a); return b64url(a); }

  async function challenge(verifier) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    return b64url(new Uint8Array(digest));
  }

  function redirectUri() { return location.origin + "/"; }

  async function discovery() {
    const resp = await fetch(config.issuer.replace(/\/$/, "") + "/.well-known/openid-configuration",
                             { cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw new Error("the identity provider's discovery document is unavailable (HTTP " + resp.status + ")");
    return resp.json();
  }

  async function signIn() {
    if (!config.issuer) { showError("This gateway has no identity provider configured (phigate_issuer)."); return; }
    try {
      const d = await discovery();
      const state = randomString();
      const verifier = randomString();
      sessionStorage.setItem(FLOW, JSON.stringify({ state, verifier, token_endpoint: d.token_endpoint }));
      const url = new URL(d.authorization_endpoint);
      url.search = new URLSearchParams({
        response_type: "code", client_id: config.client_id, redirect_uri: redirectUri(), scope: config.scope,
        state, code_challenge: await challenge(verifier), code_challenge_method: "S256",
      }).toString();
      location.assign(url.toString());
    } catch (e) { showError("sign-in: " + e.message); }
  }

  async function finishSignIn(params) {
    const saved = JSON.parse(sessionStorage.getItem(FLOW) || "null");
    sessionStorage.removeItem(FLOW);
    history.replaceState(null, "", "/");
    if (params.get("error")) throw new Error(params.get("error_description") || params.get("error"));
    // Threat: a code injected from another login (CSRF) would sign this page in as someone else.
    if (!saved || params.get("state") !== saved.state) throw new Error("the sign-in answer does not match this page's request; sign in again");
    const resp = await fetch(saved.token_endpoint, {
      method: "POST", credentials: "omit", cache: "no-store",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code: params.get("code") || "",
                                  redirect_uri: redirectUri(), client_id: config.client_id, code_verifier: saved.verifier }),
    });
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {}; }
    if (!resp.ok || !data.access_token) throw new Error(data.error_description || data.error || ("token request failed, HTTP " + resp.status));
    accessToken = data.access_token;
    const seconds = Number(data.expires_in) || 300;
    clearTimeout(logoutTimer);
    logoutTimer = setTimeout(() => signOut("Your sign-in expired; sign in again."), seconds * 1000);
  }

  function signOut(message) {
    accessToken = "";
    clearTimeout(logoutTimer);
    holds = [];
    $("pending").replaceChildren();
    $("work").hidden = true;
    $("signin").hidden = false;
    $("sign-out").hidden = true;
    $("who").textContent = "not signed in";
    showError(message || "");
  }

  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + accessToken };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                     cache: "no-store", credentials: "omit" });
    let data = {};
    try { data = await resp.json(); } catch (e) { data = {}; }
    if (resp.status === 401) { signOut("Your sign-in is no longer valid; sign in again."); }
    if (!resp.ok) throw new Error((data.detail || data.error || ("HTTP " + resp.status)));
    return data;
  }

  async function whoami() {
    const me = await api("GET", "/api/me");
    $("who").textContent = "signed in as " + (me.name || me.subject) + " (" + me.subject + "; " + me.roles.join(", ") + ")";
    $("signin").hidden = true;
    $("work").hidden = false;
    $("sign-out").hidden = false;
    showError("");
    await refresh();
  }

  // ------------------------------------------------------------------ holds

  function fmtUtc(epoch) {
    return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
  }

  function secondsLeft(h) { return Math.max(0, Math.round(h.expires_at - (Date.now() / 1000 + serverSkew))); }

  function fmtLeft(s) { const m = Math.floor(s / 60); return m + ":" + String(s % 60).padStart(2, "0"); }

  const VERBS = { export: "export", search: "search", get: "read records from", write: "write to",
                  delete: "delete records from", drop: "drop", "schema-write": "change the schema of", admin: "administer" };

  function headline(h) {
    const who = h.requester_name ? h.requester_name + " (" + h.requester + ")" : h.requester;
    const verb = VERBS[h.operation] || (h.operation || "access");
    return who + " asks to " + verb + " collection " + (h.collection ? "“" + h.collection + "”" : "(unknown)");
  }

  function requestDetails(h) {
    const rest = Object.assign({}, h.summary);
    delete rest.purpose;
    delete rest.estimated_records;
    return h.method + " " + h.path + "\n" + JSON.stringify(rest, null, 1);
  }

  function field(dl, label, value, cls) {
    dl.append(el("dt", label));
    const dd = el("dd", value, cls);
    dl.append(dd);
    return dd;
  }

  async function decide(hold, action, textarea, card) {
    const justification = textarea.value.trim();
    if (!justification) { showError("A justification is required to " + action + "."); textarea.focus(); return; }
    card.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      const data = await api("POST", "/api/holds/" + encodeURIComponent(hold.hold_id) + "/" + action, { justification });
      showError("");
      card.dataset.state = data.hold.state;
      await refresh();
    } catch (e) {
      showError(action + " " + hold.hold_id + ": " + e.message);
      card.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  }

  function card(h) {
    const c = el("article", undefined, "hold");
    c.dataset.holdId = h.hold_id;
    c.append(el("p", headline(h), "headline"));
    const dl = el("dl");
    field(dl, "Requested", fmtUtc(h.requested_at));
    field(dl, "Purpose", (h.summary && h.summary.purpose) || "not stated");
    field(dl, "Would release", (h.summary && h.summary.estimated_records) || "not known");
    field(dl, "Held by rule", h.rule_id + (h.reason ? ": " + h.reason : ""));
    field(dl, "Approvals", "", "approvals");
    field(dl, "Time left", "", "left");
    c.append(dl);
    const details = el("details");
    details.append(el("summary", "Request details (masked)"), el("pre", requestDetails(h), "request"));
    c.append(details);
    const decideRow = el("div", undefined, "decide");
    const ta = el("textarea", undefined, "justification");
    ta.placeholder = "justification (required)";
    ta.setAttribute("aria-label", "justification for " + h.hold_id);
    const approve = el("button", "Approve", "approve"); approve.type = "button";
    const deny = el("button", "Deny", "deny"); deny.type = "button";
    approve.addEventListener("click", () => decide(h, "approve", ta, c));
    deny.addEventListener("click", () => decide(h, "deny", ta, c));
    decideRow.append(ta, approve, deny);
    c.append(decideRow);
    return c;
  }

  function renderPending() {
    const box = $("pending");
    // Keep what a reviewer is typing: build only new cards, drop the ones that are gone.
    const keep = new Set(holds.map((h) => h.hold_id));
    box.querySelectorAll("article.hold").forEach((c) => { if (!keep.has(c.dataset.holdId)) c.remove(); });
    for (const h of holds) {
      let c = box.querySelector('article[data-hold-id="' + CSS.escape(h.hold_id) + '"]');
      if (!c) { c = card(h); box.append(c); }
      c.querySelector(".approvals").textContent = h.approvals.length + " of " + h.approvals_required +
        " (approver roles: " + h.approver_roles.join(", ") + ")" +
        (h.approvals.length ? "; approved by " + h.approvals.map((a) => a.approver).join(", ") : "");
      c.querySelectorAll("button").forEach((b) => { b.disabled = !h.can_decide; });
      c.querySelector("textarea").disabled = !h.can_decide;
      c.title = h.can_decide ? "" : "You cannot decide this hold (your own request, a role it does not name, or you already approved).";
    }
    $("pending-count").textContent = "(" + holds.length + ")";
    $("no-pending").hidden = holds.length > 0;
    tick();
  }

  function tick() {
    document.querySelectorAll("#pending article.hold").forEach((c) => {
      const h = holds.find((x) => x.hold_id === c.dataset.holdId);
      if (!h) return;
      const s = secondsLeft(h);
      const cell = c.querySelector(".left");
      cell.textContent = fmtLeft(s) + " (until " + fmtUtc(h.expires_at) + ")";
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
    if (!accessToken) return;
    try {
      const [p, d, g] = await Promise.all([api("GET", "/api/holds?state=pending"), api("GET", "/api/decisions?limit=30"),
                                           api("GET", "/api/grants")]);
      serverSkew = p.now - Date.now() / 1000;
      holds = p.holds;
      renderPending();
      renderRows("decisions", d.decisions, (r) => [fmtUtc(r.decided_at), el("td", r.outcome, "outcome-" + r.outcome),
        r.requester, r.operation || "", r.collection || "", (r.approvers || []).join(", "), r.justification || "",
        r.hold_id || r.grant_id || ""]);
      renderRows("grants", g.grants, (r) => [r.grant_id, r.subject, r.operation, r.collection, r.granted_by,
        fmtUtc(r.expires_at)]);
    } catch (e) {
      if (accessToken) showError(e.message);
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

  document.addEventListener("DOMContentLoaded", async () => {
    $("sign-in").addEventListener("click", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("grant-form").addEventListener("submit", grant);
    try {
      config = await (await fetch("/console-config.json", { cache: "no-store" })).json();
      $("issuer").textContent = config.issuer || "the identity provider";
      const params = new URLSearchParams(location.search);
      if (params.has("code") || params.has("error")) {
        await finishSignIn(params);
        await whoami();
      }
    } catch (e) {
      signOut("sign-in failed: " + e.message);
    }
    setInterval(refresh, 2000);
    setInterval(tick, 1000);
  });
})();
