// The results panel: renders what the worker stored in chrome.storage.session. It never calls
// the search API itself, so a closed panel loses nothing and reopening it shows the same state.
const main = document.getElementById("main");
const history = document.getElementById("history");
const categorySelect = document.getElementById("category");
const availableBox = document.getElementById("available");

const ERROR_TITLES = {
  unreachable: "Server unreachable",
  key_required: "API key needed",
  bad_key: "API key not accepted",
  rate_limited: "Too many searches",
  image: "Image could not be read",
  bad_image: "Image could not be read",
  not_lookalike: "Not a Lookalike server",
};
const NEEDS_OPTIONS = new Set(["unreachable", "key_required", "bad_key", "not_lookalike"]);

let searches = [];
let selectedId = null;
let server = "";
let wantedCategory = "";
const thumbs = new Map(); // search id -> data: URL of the query image
// For the latency benchmark: when each finished search was on screen.
window.__lookalikeRenders = [];
const rendered = new Set();

const now = () => performance.timeOrigin + performance.now();

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function absolute(url, base = server) {
  if (!url) return "";
  try {
    const resolved = new URL(url, `${base}/`);
    return resolved.protocol === "http:" || resolved.protocol === "https:" ? resolved.href : "";
  } catch {
    return "";
  }
}

// The server's `price_text` is the one price format (the search page shows the same); this
// is only for an older server that does not send it.
function formatPrice(item) {
  if (typeof item.price_text === "string" && item.price_text) return item.price_text;
  if (item.price === null || item.price === undefined) return ""; // no price: say none
  const value = Number(item.price);
  return Number.isFinite(value) ? `$${value.toFixed(2)}` : "";
}

function card(item, rank, base) {
  const link = absolute(item.url, base) || absolute(item.image_url, base);
  // How close in words, from thresholds calibrated for the serving model ("Very close"), or
  // nothing: a raw cosine as "41% match" means nothing to a shopper (the search page agrees).
  const match = typeof item.match === "string" ? item.match : "";
  return el(
    "li",
    { class: "card", dataset: { itemId: item.item_id, rank: String(rank) } },
    el("img", { src: absolute(item.image_url, base), alt: item.title || item.item_id, loading: "lazy" }),
    el(
      "div",
      { class: "body" },
      el("span", { class: "title" }, item.title || item.item_id),
      el(
        "span",
        { class: "meta" },
        el("span", { class: "price" }, formatPrice(item)),
        el("span", { class: "match", hidden: !match }, match),
      ),
      el(
        "span",
        { class: `badge ${item.available ? "yes" : "no"}` },
        item.available ? "Available now" : "Rented out",
      ),
      el("span", { class: "meta" }, el("span", { class: "category" }, item.category || ""), el("span", {}, item.item_id)),
      link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer" }, "View item") : null,
    ),
  );
}

function message(kind, title, text, withOptions = false) {
  return el(
    "section",
    { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" },
    el("h2", {}, title),
    el("p", {}, text),
    withOptions ? el("p", {}, el("a", { href: "options.html", target: "_blank" }, "Open options")) : null,
  );
}

function renderHistory() {
  history.replaceChildren(
    ...searches.map((s, i) => {
      const thumb = thumbs.get(s.id);
      const label = `${i === 0 ? "Latest" : "Earlier"} search (${s.source === "region" ? "area" : "image"})`;
      return el(
        "button",
        { type: "button", title: label, "aria-label": label, "aria-current": String(s.id === selectedId), onclick: () => select(s.id) },
        thumb ? el("img", { src: thumb, alt: "" }) : el("span", { class: "placeholder" }, s.status === "error" ? "!" : "…"),
      );
    }),
  );
}

function renderMain() {
  const search = searches.find((s) => s.id === selectedId);
  if (!search) {
    main.replaceChildren(
      message("intro", "Find a dress you saw on the web", "Right-click an image and choose “Find similar dresses”, or click the toolbar button and “Select an area” to drag over an outfit."),
    );
    main.dataset.state = "empty";
    return;
  }
  const thumb = thumbs.get(search.id);
  const head = el("div", { class: "query" }, thumb ? el("img", { src: thumb, alt: "Your image" }) : null);
  main.dataset.searchId = search.id;
  main.dataset.state = search.status;
  if (search.status === "pending") {
    head.append(el("span", {}, el("span", { class: "spinner" }), "Finding similar dresses…"));
    main.replaceChildren(head);
    return;
  }
  if (search.status === "error") {
    const kind = search.error?.kind || "internal";
    main.dataset.errorKind = kind;
    main.replaceChildren(
      message("error", ERROR_TITLES[kind] || "Search failed", search.error?.message || "Unknown error.", NEEDS_OPTIONS.has(kind)),
    );
    return;
  }
  const results = search.results || [];
  const filtered = search.filters?.category || search.filters?.available;
  head.append(el("span", {}, `${results.length} similar item${results.length === 1 ? "" : "s"}`));
  if (results.length === 0) {
    main.replaceChildren(
      head,
      message("empty", "No results", filtered ? "No similar items match these filters. Try “All categories” or untick “Available now”." : "No similar items were found for this image. Try another image or a tighter area."),
    );
  } else {
    main.replaceChildren(head, el("ol", { class: "grid", id: "results" }, ...results.map((r, i) => card(r, i + 1, search.server || server))));
  }
  const stamp = `${search.id}@${search.t0}`;
  if (!rendered.has(stamp)) {
    rendered.add(stamp);
    window.__lookalikeRenders.push({ id: search.id, t0: search.t0, renderedAt: now(), count: results.length });
  }
}

function render() {
  renderHistory();
  renderMain();
}

function select(id) {
  selectedId = id;
  const search = searches.find((s) => s.id === id);
  if (search?.filters) {
    categorySelect.value = search.filters.category || "";
    availableBox.checked = Boolean(search.filters.available);
  }
  render();
}

async function loadThumbs() {
  const missing = searches.filter((s) => !thumbs.has(s.id)).map((s) => `img:${s.id}`);
  if (!missing.length) return false;
  const stored = await chrome.storage.session.get(missing);
  let changed = false;
  for (const [key, value] of Object.entries(stored)) {
    thumbs.set(key.slice(4), value);
    changed = true;
  }
  return changed;
}

function applySearches(list) {
  const known = new Set(searches.map((s) => s.id));
  searches = list || [];
  const fresh = searches.find((s) => !known.has(s.id));
  if (fresh || !searches.some((s) => s.id === selectedId)) selectedId = (fresh || searches[0])?.id ?? null;
  render();
  loadThumbs().then((changed) => changed && render());
}

async function loadCategories() {
  const answer = await chrome.runtime.sendMessage({ type: "categories" }).catch(() => null);
  if (!answer?.ok) return; // the search itself reports server problems
  const current = categorySelect.value || wantedCategory;
  categorySelect.replaceChildren(
    el("option", { value: "" }, "All categories"),
    ...answer.value.map((name) => el("option", { value: name }, name)),
  );
  categorySelect.value = current;
}

async function onFilterChange() {
  const filters = { category: categorySelect.value, available: availableBox.checked };
  await chrome.storage.session.set({ filters });
  if (selectedId) chrome.runtime.sendMessage({ type: "refine", id: selectedId });
}

async function start() {
  const stored = await chrome.storage.session.get({ searches: [], filters: {} });
  const local = await chrome.storage.local.get({ server: "http://127.0.0.1:8000" });
  server = local.server;
  wantedCategory = stored.filters.category || "";
  availableBox.checked = Boolean(stored.filters.available);
  applySearches(stored.searches);
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === "session" && changes.searches) applySearches(changes.searches.newValue);
    if (area === "local" && changes.server) {
      server = changes.server.newValue;
      loadCategories();
    }
  });
  categorySelect.addEventListener("change", onFilterChange);
  availableBox.addEventListener("change", onFilterChange);
  loadCategories();
}

start();
