// The team page: how far the reviewers agree, and the disputed items an adjudicator settles.
// Only adjudicators and the operator reach it (the server refuses everyone else). Tweet text and
// reviewer names are untrusted: only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;

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
    init.headers["X-CSRF-Token"] = session ? session.csrf || "" : "";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
  return data;
}

function toast(message, isError = false) {
  const node = $("toast");
  node.textContent = message;
  node.className = "show" + (isError ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.className = ""; }, isError ? 5000 : 1800);
}

const fixed = (value, digits = 2) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const share = (value) => (value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`);

function table(node, head, rows, empty = "nothing yet") {
  const body = rows.length ? rows.map((cells) => el("tr", {}, ...cells.map((cell) => el("td", {}, cell))))
    : [el("tr", {}, el("td", { colspan: head.length, class: "empty-row" }, empty))];
  node.replaceChildren(el("thead", {}, el("tr", {}, ...head.map((name) => el("th", {}, name)))), el("tbody", {}, ...body));
}

function renderFigures(figures) {
  const rows = [figures.overall, ...figures.labels].map((row) => [
    row.label || "all labels", fixed(row.alpha), row.items, row.opinions, share(row.observed_agreement)]);
  table($("agreement"), ["label", "alpha", "items", "opinions", "pairs agreeing"], rows);
  table($("reviewers"), ["reviewer", "opinions", "on shared items", "agreement"],
    figures.reviewers.map((r) => [r.reviewer, r.labelled, r.shared, share(r.agreement)]));
  $("min-shared").textContent = figures.min_shared;
  table($("pairs"), ["reviewers", "shared items", "Cohen's kappa"],
    figures.pairs.map((p) => [`${p.first} · ${p.second}`, p.items, fixed(p.kappa)]),
    `no two reviewers share ${figures.min_shared} items yet`);
  $("gold-summary").textContent = `${figures.gold_questions} loaded, ${share(figures.gold_rate)} of what each reviewer is shown`;
  $("gold-min-answers").textContent = figures.gold_min_answers;
  $("gold-floor").textContent = share(figures.gold_min_accuracy);
  table($("gold"), ["reviewer", "answered", "right", "accuracy", "weight", ""],
    figures.gold.map((g) => [g.reviewer, g.answered, g.correct, share(g.accuracy), fixed(g.weight),
      g.flagged ? el("span", { class: "flag" }, "below the floor") : ""]), "no gold question answered yet");
  $("summary").replaceChildren(
    `${figures.opinions_per_item} opinion${figures.opinions_per_item === 1 ? "" : "s"} per item · `,
    el("b", {}, figures.disputed), " disputed · ", el("b", {}, figures.adjudicated), " settled");
}

function renderDisputes(items) {
  $("disputed-count").textContent = items.length ? `${items.length} waiting: pick the label that fits` : "none waiting";
  $("disputes").replaceChildren(...items.map(({ item, opinions }) => {
    const given = new Map(opinions.map((o) => [o.label, []]));
    opinions.forEach((o) => given.get(o.label).push(o.reviewer));
    const buttons = session.labels.map((name) => el("button", {
      type: "button", class: given.has(name) ? "top" : "", title: `settle as ${name}`,
      onclick: () => settle(item, name),
    }, el("span", {}, name), el("span", { class: "sub" }, given.has(name) ? given.get(name).join(", ") : "")));
    return el("article", { class: "card dispute", dataset: { tweetId: item.tweet_id } },
      el("div", { class: "meta" }, el("span", { class: "chip" }, item.brand || "no brand"),
        el("span", {}, `model ${item.model_version}: ${item.label}`), el("span", {}, `id ${item.tweet_id}`)),
      el("p", { class: "tweet" }, item.text),
      el("div", { class: "settle" }, ...buttons));
  }));
}

async function settle(item, label) {
  try {
    await api("/review/api/settle", { tweet_id: item.tweet_id, text_sha256: item.text_sha256, label });
    toast(`settled as ${label}`);
    await refresh();
  } catch (error) {
    toast(`not settled: ${error.message}`, true);
  }
}

async function refresh() {
  const [figures, disputes] = await Promise.all([api("/review/api/team"), api("/review/api/disagreements?n=50")]);
  renderFigures(figures);
  renderDisputes(disputes.items);
}

async function start() {
  try {
    session = await api("/review/api/session");
    $("reviewer").textContent = session.reviewer;
    await refresh();
  } catch (error) {
    toast(error.message, true);
  }
}

start();
