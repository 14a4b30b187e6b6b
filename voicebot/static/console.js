// Agentkonsol. Everything shown comes from the server's JSON and is put into the page with
// textContent only: transcripts are untrusted text spoken by callers.
"use strict";

const API = "/console/api";
const WARN_AFTER_S = 120;   // wait times turn amber, then red
const ALERT_AFTER_S = 300;

const state = {
  me: null,
  snapshot: null,
  clockOffset: 0,       // server time minus local time, seconds
  seen: new Set(),      // call ids already shown, to mark newcomers
  first: true,
  source: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function serverNow() {
  return Date.now() / 1000 + state.clockOffset;
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function capitalize(text) {
  return text ? text.charAt(0).toLocaleUpperCase("da-DK") + text.slice(1) : text;
}

function formatClock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString("da-DK", { hour: "2-digit", minute: "2-digit" });
}

function waitClass(seconds) {
  if (seconds >= ALERT_AFTER_S) return "alert";
  if (seconds >= WARN_AFTER_S) return "warn";
  return "";
}

function toast(message, kind) {
  const node = el("div", "toast" + (kind === "error" ? " toast-error" : ""), message);
  node.setAttribute("role", kind === "error" ? "alert" : "status");
  $("toasts").appendChild(node);
  setTimeout(() => node.remove(), 5000);
}

function setStatus(kind, text) {
  const node = $("status");
  node.className = "status status-" + kind;
  node.textContent = text;
}

function toLogin(expired) {
  window.location.assign("/console/login" + (expired ? "?expired=true" : ""));
}

// -- server calls ---------------------------------------------------------------------
async function post(path) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": state.me ? state.me.csrf : "" },
  });
  if (response.status === 401) toLogin(true);
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error(body.detail || `Fejl ${response.status}`);
  return body;
}

async function refresh() {
  const response = await fetch(API + "/state", { credentials: "same-origin" });
  if (response.status === 401) return toLogin(true);
  if (response.ok) render(await response.json());
}

async function act(button, path, doneText) {
  button.disabled = true;
  try {
    await post(path);
    if (doneText) toast(doneText);
  } catch (err) {
    toast(err.message, "error");
  } finally {
    button.disabled = false;
    refresh();
  }
}

// -- rendering --------------------------------------------------------------------------
function renderQueues(queues) {
  const list = $("queues");
  list.replaceChildren();
  for (const q of queues) {
    const tile = el("div", "queue");
    tile.dataset.queue = q.id;
    tile.dataset.oldest = q.oldest_created_at === null ? "" : String(q.oldest_created_at);
    const head = el("div", "queue-head");
    head.append(el("span", "queue-name", q.queue), el("span", "badge queue-id", q.id));
    tile.appendChild(head);
    tile.appendChild(el("div", "queue-sub", q.name));
    tile.title = `${q.queue} (${q.name})`;
    const figures = el("div", "queue-figures");
    const waiting = el("div", "queue-waiting", q.waiting);
    waiting.appendChild(el("small", null, "venter"));
    const longest = el("div", "queue-longest", "Længste ventetid");
    longest.appendChild(el("strong", "queue-longest-time", "–"));
    figures.append(waiting, longest);
    tile.appendChild(figures);
    if (q.callbacks > 0) tile.appendChild(el("div", "queue-callbacks", `${q.callbacks} tilbagekald venter`));
    list.appendChild(tile);
  }
}

function actionButton(label, style, onClick) {
  const button = el("button", "btn " + style, label);
  button.type = "button";
  button.addEventListener("click", () => onClick(button));
  return button;
}

const LANGUAGE_BADGES = { en: "English-speaking caller" };

function renderCard(call, mine) {
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  card.dataset.callId = call.call_id;
  card.dataset.created = String(call.created_at);
  card.dataset.claimed = call.claimed_at === null ? "" : String(call.claimed_at);
  if (mine) card.classList.add("card-mine");
  if (!state.first && !state.seen.has(call.call_id)) card.classList.add("card-new");

  card.querySelector(".intent").textContent = capitalize(call.intent_name);
  const badge = card.querySelector(".forvaltning");
  badge.textContent = `${call.forvaltning} · ${call.queue}`;
  badge.title = call.forvaltning_name;

  // A caller served in another language than Danish: the agent should know before answering.
  if (call.language && call.language !== "da") {
    const language = card.querySelector(".language");
    language.hidden = false;
    language.textContent = LANGUAGE_BADGES[call.language] || `Sprog: ${call.language}`;
    language.title = `Opkalderen blev betjent på ${call.language}`;
  }

  const percent = Math.round(call.confidence * 100);
  card.querySelector(".confidence").textContent = `${percent} %`;
  const fill = card.querySelector(".meter-fill");
  fill.style.width = `${percent}%`;
  if (percent < 60) fill.classList.add("low");
  card.querySelector(".caller").textContent = call.caller || "skjult nummer";
  if (call.kind === "callback") {
    card.classList.add("card-callback");
    card.querySelector(".wait-label").textContent = "Bestilt for";
    if (call.callback_number) {  // only on the claiming agent's own card
      card.querySelector(".number-row").hidden = false;
      card.querySelector(".callback-number").textContent = call.callback_number;
    }
  }
  card.querySelector(".received").textContent = "kl. " + formatClock(call.created_at);
  if (call.status === "claimed") {
    card.querySelector(".claimed-row").hidden = false;
    const who = call.claimed_by === state.me.name ? "dig" : call.claimed_by;
    card.querySelector(".claimed-by").textContent = `${who}, kl. ${formatClock(call.claimed_at)}`;
    card.querySelector(".wait-label").textContent = "I gang";
  }

  const chips = card.querySelector(".chips");
  if (call.explanation.length === 0) chips.appendChild(el("span", "chip chip-none", "tastevalg eller ingen nøgleord"));
  for (const word of call.explanation) chips.appendChild(el("span", "chip", word));

  const transcript = card.querySelector(".transcript");
  transcript.textContent = call.transcript || "(ingen udskrift)";
  if (!call.transcript) transcript.classList.add("transcript-empty");

  const actions = card.querySelector(".actions");
  const path = `${API}/calls/${encodeURIComponent(call.call_id)}`;
  if (call.kind === "callback") {
    const callback = `${API}/callbacks/${encodeURIComponent(call.call_id)}`;
    if (call.status === "waiting") {
      actions.appendChild(actionButton("Tag tilbagekald", "btn-primary claim",
        (b) => act(b, path + "/claim", "Tilbagekaldet er dit. Nummeret står på kortet.")));
    } else if (call.claimed_by === state.me.name) {
      actions.appendChild(actionButton("Læg tilbage", "btn-secondary release",
        (b) => act(b, path + "/release", "Tilbagekaldet er lagt tilbage.")));
      actions.appendChild(actionButton("Mislykkedes", "btn-danger callback-failed",
        (b) => act(b, callback + "/failed", "Tilbagekaldet er markeret som mislykket.")));
      actions.appendChild(actionButton("Udført", "btn-success callback-done",
        (b) => act(b, callback + "/done", "Tilbagekaldet er udført.")));
    }
  } else if (call.status === "waiting") {
    actions.appendChild(actionButton("Tag opkald", "btn-primary claim",
      (b) => act(b, path + "/claim", "Opkaldet er dit. Det ligger nu under Mine opkald.")));
  } else if (call.claimed_by === state.me.name) {
    actions.appendChild(actionButton("Læg tilbage i kø", "btn-secondary release",
      (b) => act(b, path + "/release", "Opkaldet er lagt tilbage i køen.")));
    actions.appendChild(actionButton("Afslut", "btn-success complete",
      (b) => act(b, path + "/complete", "Opkaldet er afsluttet.")));
  }
  return card;
}

// Cards whose call did not change are kept, not rebuilt: a button under the agent's
// pointer stays the same button, and the arrival highlight plays once.
const cardCache = new Map();  // list id + call id -> {key, node}

function cardFor(listId, call, mine) {
  const id = listId + "/" + call.call_id;
  const key = JSON.stringify(call);
  const cached = cardCache.get(id);
  if (cached && cached.key === key) return cached.node;
  const node = renderCard(call, mine);
  cardCache.set(id, { key, node });
  return node;
}

function renderList(listId, emptyId, countId, calls, mine) {
  const list = $(listId);
  const nodes = calls.map((call) => cardFor(listId, call, mine));
  const keep = new Set(calls.map((call) => listId + "/" + call.call_id));
  for (const id of cardCache.keys()) if (id.startsWith(listId + "/") && !keep.has(id)) cardCache.delete(id);
  list.replaceChildren(...nodes);
  $(emptyId).hidden = calls.length > 0;
  $(countId).textContent = String(calls.length);
}

function render(snapshot) {
  state.snapshot = snapshot;
  state.clockOffset = snapshot.now - Date.now() / 1000;
  renderQueues(snapshot.queues);
  renderList("waiting-list", "waiting-empty", "waiting-count", snapshot.waiting, false);
  $("waiting-count").textContent = String(snapshot.waiting_total);
  const more = snapshot.waiting_total - snapshot.waiting.length;
  $("waiting-more").hidden = more <= 0;
  $("waiting-more").textContent = more > 0 ? `… og ${more} opkald mere` : "";
  renderList("claimed-list", "claimed-empty", "claimed-count", snapshot.claimed, true);
  const callbacks = snapshot.callbacks || [];
  renderList("callbacks-list", "callbacks-empty", "callbacks-count", callbacks, false);
  for (const card of $("callbacks-list").children) {
    const call = callbacks.find((c) => c.call_id === card.dataset.callId);
    card.classList.toggle("card-mine", Boolean(call && call.claimed_by === state.me.name));
  }
  for (const call of [...snapshot.waiting, ...snapshot.claimed, ...callbacks]) state.seen.add(call.call_id);
  if (state.me.admin) loadFigures();
  state.first = false;
  document.title = (snapshot.waiting_total > 0 ? `(${snapshot.waiting_total}) ` : "") + "Agentkonsol · Københavns Kommune";
  tick();
}

// Wait times run on between snapshots.
function tick() {
  const now = serverNow();
  for (const card of document.querySelectorAll(".card")) {
    const since = Number(card.dataset.claimed || card.dataset.created);
    const seconds = now - since;
    const wait = card.querySelector(".wait");
    wait.className = "wait" + (card.dataset.claimed ? "" : (waitClass(seconds) ? " wait-" + waitClass(seconds) : ""));
    card.querySelector(".wait-time").textContent = formatDuration(seconds);
  }
  for (const tile of document.querySelectorAll(".queue")) {
    const oldest = tile.dataset.oldest;
    const seconds = oldest ? now - Number(oldest) : 0;
    tile.querySelector(".queue-longest-time").textContent = oldest ? formatDuration(seconds) : "–";
    tile.className = "queue" + (oldest ? (waitClass(seconds) ? " queue-" + waitClass(seconds) : "") : " queue-empty");
  }
}

// -- live stream ------------------------------------------------------------------------
function connect() {
  const source = new EventSource(API + "/stream");
  state.source = source;
  source.addEventListener("open", () => setStatus("live", "Live"));
  source.addEventListener("snapshot", (event) => {
    setStatus("live", "Live");
    render(JSON.parse(event.data));
  });
  source.addEventListener("logout", () => {
    source.close();
    toLogin(true);
  });
  source.addEventListener("error", async () => {
    setStatus("connecting", "Forbinder igen…");
    if (source.readyState === EventSource.CLOSED) {
      // The server refused the stream: most likely the session ended.
      const response = await fetch(API + "/me", { credentials: "same-origin" });
      if (response.status === 401) return toLogin(true);
      setTimeout(connect, 3000);
    }
  });
}

async function loadAgents() {
  const response = await fetch(API + "/agents", { credentials: "same-origin" });
  if (!response.ok) return;
  const body = await response.json();
  const rows = body.agents.map((a) => {
    const row = el("tr");
    row.append(el("td", null, a.name), el("td", null, a.forvaltninger.join(", ") || "–"),
      el("td", null, a.admin ? "Administrator" : "Agent"));
    return row;
  });
  $("agents-body").replaceChildren(...rows);
  $("admin").hidden = false;
}

// Today's figures per queue (admin): at most every 15 s, whatever the snapshot rate.
let figuresLoadedAt = 0;
async function loadFigures() {
  if (Date.now() - figuresLoadedAt < 15000) return;
  figuresLoadedAt = Date.now();
  const response = await fetch(API + "/figures", { credentials: "same-origin" });
  if (!response.ok) return;
  const body = await response.json();
  const names = new Map((state.snapshot ? state.snapshot.queues : []).map((q) => [q.id, q.queue]));
  const rows = Object.entries(body.queues).sort().map(([id, f]) => {
    const row = el("tr");
    row.dataset.queue = id;
    const wait = f.median_wait_s === null ? "–" : formatDuration(f.median_wait_s);
    row.append(el("td", null, `${names.get(id) || id} (${id})`), el("td", null, f.offered),
      el("td", null, f.answered), el("td", null, f.abandoned), el("td", null, f.waiting),
      el("td", null, wait), el("td", null, f.callbacks_requested),
      el("td", null, f.callbacks_done), el("td", null, f.callbacks_failed));
    return row;
  });
  $("figures-body").replaceChildren(...rows);
  $("figures").hidden = false;
}

async function start() {
  const response = await fetch(API + "/me", { credentials: "same-origin" });
  if (response.status === 401) return toLogin(true);
  state.me = await response.json();
  $("agent-name").textContent = state.me.name;
  $("agent-scope").textContent = state.me.admin
    ? "Administrator · alle køer"
    : state.me.forvaltninger.map((f) => f.id).join(", ");
  $("agent-scope").title = state.me.forvaltninger.map((f) => f.name).join(", ");
  if (state.me.admin) {
    $("claimed-label").textContent = "Igangværende opkald";
    $("claimed-empty").textContent = "Ingen opkald er i gang.";
    loadAgents();
  }
  $("logout").addEventListener("click", async () => {
    try { await post("/console/logout"); } catch (_) { /* logged out anyway */ }
    toLogin(false);
  });
  connect();
  setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", start);
