// The trends page: the same chart as `emostream trends --plot` (drawn by the server), its table and spikes.
"use strict";

const $ = (id) => document.getElementById(id);
const LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"];

function cell(tag, text) {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}

function row(tag, values) {
  const tr = document.createElement("tr");
  tr.append(...values.map((value) => cell(tag, value)));
  return tr;
}

async function load() {
  const params = new URLSearchParams(new FormData($("form")));
  const response = await fetch(`/trends/api?${params}`, { credentials: "same-origin" });
  if (response.status === 401 || response.status === 403) return location.reload();
  const data = await response.json();
  if (!response.ok) { $("summary").textContent = data.error; return; }
  const brand = $("brand");
  const chosen = brand.value;
  brand.replaceChildren(brand.options[0], ...data.brands.map((b) => { const o = cell("option", b || "no brand"); o.value = b; return o; }));
  brand.value = chosen;
  const total = data.tweets.reduce((a, b) => a + b, 0);
  $("summary").textContent = `${total.toLocaleString()} tweets in ${data.buckets.length} bucket${data.buckets.length === 1 ? "" : "s"}`;
  const empty = data.buckets.length === 0;
  $("empty").hidden = !empty;
  $("chart").hidden = empty;
  if (!empty) $("chart").src = `/trends/chart.png?${params}&t=${Date.now()}`;
  $("table").replaceChildren(row("th", ["bucket", "tweets", ...LABELS]),
    ...data.buckets.map((bucket, i) => row("td", [bucket, data.tweets[i],
      ...LABELS.map((name) => (100 * data.shares[name][i]).toFixed(1))])).reverse());
  $("spikes").replaceChildren(data.spikes.length === 0 ? cell("p", "none")
    : Object.assign(document.createElement("table"), {}));
  if (data.spikes.length) {
    $("spikes").firstChild.append(row("th", ["bucket", "label", "share %", "trailing mean %", "z"]),
      ...data.spikes.map((s) => row("td", [s.bucket, s.label, (100 * s.share).toFixed(1), (100 * s.trailing_mean).toFixed(1), s.z.toFixed(1)])));
  }
}

// The address bar holds the view (?brand=&since=&by=), so a trend can be linked to.
const initial = new URLSearchParams(location.search);
for (const name of ["since", "by"]) {
  if (initial.get(name)) $("form").elements[name].value = initial.get(name);
}
if (initial.get("brand")) {
  const option = cell("option", initial.get("brand"));
  option.value = initial.get("brand");
  $("brand").append(option);
  $("brand").value = initial.get("brand");
}
$("form").addEventListener("change", () => {
  history.replaceState(null, "", `/trends?${new URLSearchParams(new FormData($("form")))}`);
  load();
});
load();
setInterval(load, 60000);
