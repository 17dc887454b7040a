// The review page: keyboard first. The next item comes up at once; each label is sent in the
// background and shows "saving" until the server has it on tweets.labels and in review_labels.
// Tweet text is only ever set as textContent: it is untrusted input.
// An item is a tweet id and the hash of its text (text_sha256): every label, skip and undo names both,
// so a label is about the text on the screen (the server refuses it if that text is no longer queued).
// The reviewer's name is the server's (bound to the credential); the page shows it and cannot change it.
"use strict";

const WINDOW = 10; // items this page holds (leased to it) at once
const REFILL_BELOW = 4;
const REFRESH_MS = 15000;

const state = {
  session: null,
  queue: [], // pending items leased to this page; queue[0] is the current one
  history: [], // {item, label, status: saving|saved|failed|undone, error}
  gone: new Set(), // items labelled or skipped here: never shown again by a refill that raced the write
  counts: null,
  filters: { brand: "", label: "" },
  refilling: null,
};

const $ = (id) => document.getElementById(id);
const key = (item) => `${item.text_sha256}:${item.tweet_id}`;
const ref = (item) => ({ tweet_id: item.tweet_id, text_sha256: item.text_sha256 });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function api(path, body) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = state.session ? state.session.csrf : "";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const message = (data && data.error) || `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function toast(message, isError = false) {
  const node = $("toast");
  node.textContent = message;
  node.className = "show" + (isError ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.className = ""; }, isError ? 5000 : 1800);
}

function pct(p) { return `${Math.round(p * 100)}%`; }

function when(iso) {
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function renderCurrent() {
  const area = $("current");
  const item = state.queue[0];
  const shown = area.querySelector("[data-current]");
  // Keep the element while the item stays: no flicker, and no stale references for scripts and screen readers.
  if (item && shown && shown.dataset.key === key(item)) return;
  area.replaceChildren();
  if (!item) {
    const filtered = state.filters.brand || state.filters.label ? " matching these filters" : "";
    area.append(el("div", { class: "card empty" },
      el("p", {}, `Nothing waiting for review${filtered}.`),
      el("p", {}, "New items appear here as the stream sends them.")));
    return;
  }
  const labels = state.session.labels.slice(0, 6);
  const top = labels.reduce((a, b) => (item.probabilities[a] >= item.probabilities[b] ? a : b));
  const choices = el("ul", { class: "choices" });
  labels.forEach((name, index) => {
    const fill = el("span");
    fill.style.width = pct(item.probabilities[name]);
    fill.style.background = `var(--${name})`;
    choices.append(el("li", {}, el("button", {
      type: "button", class: name === top ? "top" : "", title: `label as ${name} (key ${index + 1})`,
      onclick: () => labelCurrent(name),
    }, el("kbd", {}, index + 1), el("span", {}, name), el("span", { class: "bar" }, fill),
       el("span", { class: "pct" }, pct(item.probabilities[name])))));
  });
  choices.append(el("li", {}, el("button", {
    type: "button", class: "none", title: "none of the six fits (key 0)", onclick: () => labelCurrent("none"),
  }, el("kbd", {}, 0), el("span", {}, "none of these fits"))));
  area.append(el("article", {
    class: "card item", dataset: { tweetId: item.tweet_id, textSha256: item.text_sha256, key: key(item), current: "" },
  },
    el("div", { class: "meta" },
      el("span", { class: "chip" }, item.brand || "no brand"),
      el("time", { datetime: item.created_at }, when(item.created_at)),
      el("span", {}, `model ${item.model_version}: ${item.label} ${pct(item.confidence)}, margin ${item.margin.toFixed(2)}`)),
    el("p", { class: "tweet" }, item.text),
    choices,
    el("div", { class: "reason" }, `sent to review: ${item.reason} · id ${item.tweet_id}`)));
}

function renderQueue() {
  const list = $("queue");
  const existing = new Map([...list.children].map((node) => [node.dataset.key, node]));
  list.replaceChildren(...state.queue.slice(1).map((item) => existing.get(key(item)) ||
    el("li", { dataset: { tweetId: item.tweet_id, key: key(item) } },
      el("span", { class: "snippet" }, item.text),
      el("span", { class: "sub" }, `${item.brand || "no brand"} · model: ${item.label} ${pct(item.confidence)}`))));
  $("next-count").textContent = state.queue.length > 1 ? `(${state.queue.length - 1} on this screen)` : "";
}

function renderHistory() {
  $("history").replaceChildren(...state.history.slice(0, 12).map((entry) => el("li", { dataset: { labelledId: entry.item.tweet_id } },
    el("span", { class: `status ${entry.status}`, title: entry.error || "" }, entry.status),
    el("b", {}, entry.label), " ",
    el("span", { class: "snippet" }, entry.item.text))));
}

function renderCounts() {
  const counts = state.counts;
  if (!counts) return;
  const filtered = counts.pending !== counts.pending_all ? ` (${counts.pending_all} in all)` : "";
  $("counts").replaceChildren(
    "Pending ", el("b", {}, counts.pending), filtered, " · Labelled ", el("b", {}, counts.done),
    ` · by you ${counts.done_by_you}`);
  fillSelect($("brand"), Object.keys(counts.brands), state.filters.brand, (b) => `${b || "no brand"} (${counts.brands[b]})`);
  fillSelect($("label-filter"), state.session.labels.slice(0, 6), state.filters.label,
    (name) => `${name} (${counts.labels[name] || 0})`);
}

function fillSelect(select, values, chosen, text) {
  const first = select.options[0];
  const options = values.map((value) => el("option", { value }, text(value)));
  if (chosen && !values.includes(chosen)) options.push(el("option", { value: chosen }, chosen));
  select.replaceChildren(first, ...options);
  select.value = chosen;
}

function render() {
  renderCurrent();
  renderQueue();
  renderHistory();
  renderCounts();
  $("reviewer").textContent = state.session.reviewer;
}

// A window of items from the server (the API's, or the one the page came with): the current item stays put.
function show(window) {
  const current = state.queue[0];
  const fresh = window.items.filter((item) => !state.gone.has(key(item)));
  const keep = current && fresh.find((item) => key(item) === key(current));
  state.queue = keep ? [keep, ...fresh.filter((item) => item !== keep)] : fresh;
  state.counts = window.counts;
  render();
}

// The session and first items the server put in the page (a JSON block, never run as script): the first
// item is on screen as the page loads, without waiting for two more requests.
function initial() {
  const block = document.getElementById("initial");
  try {
    return block ? JSON.parse(block.textContent) : null;
  } catch (error) {
    return null;
  }
}

async function refill() {
  if (state.refilling) return state.refilling;
  const params = new URLSearchParams({ n: WINDOW, brand: state.filters.brand, label: state.filters.label });
  state.refilling = api(`/review/api/items?${params}`).then(show).catch((error) => {
    if (error.status === 401 || error.status === 403) location.reload(); // session over: the sign-in page
    else toast(`could not load items: ${error.message}`, true);
  }).finally(() => { state.refilling = null; });
  return state.refilling;
}

function labelCurrent(name) {
  const item = state.queue.shift();
  if (!item) return;
  state.gone.add(key(item));
  const entry = { item, label: name, status: "saving" };
  state.history.unshift(entry);
  if (state.counts) { state.counts.pending -= 1; state.counts.pending_all -= 1; }
  render();
  api("/review/api/label", { ...ref(item), label: name }).then(() => {
    entry.status = "saved";
    if (state.counts) { state.counts.done += 1; state.counts.done_by_you += 1; }
    render();
  }).catch((error) => {
    entry.status = "failed";
    entry.error = error.message;
    state.gone.delete(key(item));
    // 409: someone else's label or screen, or the text changed (a new item will come with the refill)
    if (error.status !== 409 && error.status !== 404) state.queue.unshift(item); // try it again
    toast(`label not saved: ${error.message}`, true);
    render();
  });
  if (state.queue.length < REFILL_BELOW) refill();
}

function skipCurrent() {
  const item = state.queue.shift();
  if (!item) return;
  state.gone.add(key(item));
  render();
  api("/review/api/skip", ref(item)).catch((error) => toast(`skip: ${error.message}`, true));
  toast("skipped");
  if (state.queue.length < REFILL_BELOW) refill();
}

async function undoLast() {
  const entry = state.history.find((e) => e.status === "saved" || e.status === "saving");
  if (!entry) return toast("nothing to undo");
  if (entry.status === "saving") return toast("still saving that label; undo in a moment");
  try {
    const answer = await api("/review/api/undo", ref(entry.item));
    entry.status = "undone";
    state.gone.delete(key(entry.item));
    state.queue = [answer.item, ...state.queue.filter((item) => key(item) !== key(answer.item))];
    if (state.counts) { state.counts.done -= 1; state.counts.done_by_you -= 1; state.counts.pending += 1; state.counts.pending_all += 1; }
    toast(`undone: ${entry.label}`);
    render();
  } catch (error) {
    toast(`undo failed: ${error.message}`, true);
  }
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest && event.target.closest("input, select, textarea")) return;
  const key = event.key.toLowerCase();
  if (key >= "1" && key <= "6") labelCurrent(state.session.labels[Number(key) - 1]);
  else if (key === "0") labelCurrent("none");
  else if (key === "s") skipCurrent();
  else if (key === "u") undoLast();
  else return;
  event.preventDefault();
}

function onFilter() {
  state.filters = { brand: $("brand").value, label: $("label-filter").value };
  state.queue = [];
  refill();
  document.activeElement.blur(); // back to the keys
}

async function start() {
  const given = initial();
  if (given && given.session) {
    state.session = given.session;
  } else {
    try {
      state.session = await api("/review/api/session");
    } catch (error) {
      location.reload();
      return;
    }
  }
  if (state.session.adjudicates) document.querySelector("nav").append(el("a", { href: "/review/team" }, "Team"));
  document.addEventListener("keydown", onKey);
  $("brand").addEventListener("change", onFilter);
  $("label-filter").addEventListener("change", onFilter);
  if (given && given.window) show(given.window);
  else await refill();
  setInterval(refill, REFRESH_MS);
}

start();
