// The moderator's page: one post at a time; 1-3 choose, A approve, R reject, S skip, U undo.
// The next posts are fetched ahead (leased to this moderator) and their photos preloaded, so a
// decision shows the next post at once; the decision itself is sent in order behind it.
// Everything user-supplied is written with textContent (never innerHTML).

const $ = (id) => document.getElementById(id);
const state = { csrf: null, role: null, buffer: [], current: null, chosen: null,
  withDuplicates: false, chain: Promise.resolve(), fetching: null, done: false,
  sent: new Set() };  // posts decided on this page (saved or on their way): never shown again

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.method === "POST") {
    headers["X-CSRF-Token"] = state.csrf;
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401) {
    window.location.assign("/moderation/login");
    throw new Error("signed out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

function say(text) { $("status").textContent = text; }

function preload(post) {
  for (const url of [post.image_url, ...post.matches.map((m) => m.image_url)]) {
    const link = document.createElement("link");
    link.rel = "preload"; link.as = "image"; link.href = url;
    document.head.appendChild(link);
    new Image().src = url;
  }
}

async function refill() {
  if (state.fetching || state.buffer.length >= 2 || state.done) return state.fetching;
  const seen = new Set([state.current, ...state.buffer].filter(Boolean).map((p) => p.post_id));
  state.fetching = api("/v1/moderation/queue?n=3").then((body) => {
    const fresh = body.posts.filter((p) => !seen.has(p.post_id) && !state.sent.has(p.post_id));
    fresh.forEach(preload);
    state.buffer.push(...fresh);
    if (!body.posts.length) state.done = true;
  }).catch((e) => say(`Could not load the queue: ${e.message}`)).finally(() => {
    state.fetching = null;
  });
  return state.fetching;
}

function show(post) {
  state.current = post; state.chosen = null;
  const article = $("post");
  if (!post) {
    article.hidden = true;
    say("The queue is empty. New posts arrive with `lookalike moderation score`.");
    return;
  }
  article.hidden = false;
  article.dataset.postId = post.post_id;
  $("post-photo").src = post.image_url;
  $("author").textContent = post.author ? `@${post.author}` : "(unknown author)";
  const link = $("permalink");
  link.hidden = !post.permalink;
  if (post.permalink && /^https?:\/\//.test(post.permalink)) link.href = post.permalink;
  $("caption").textContent = post.caption;
  $("score").textContent = `score ${post.score} · ${post.classifier_version}`;
  const dups = $("dups");
  dups.hidden = !post.duplicates.length;
  dups.textContent = `${post.duplicates.length} near-duplicate(s) queued` +
    (state.withDuplicates ? " — will be decided together (D toggles)" : " — D decides them too");
  const list = $("matches");
  list.replaceChildren();
  post.matches.forEach((m, i) => {
    const li = document.createElement("li");
    li.dataset.itemId = m.item_id;
    li.dataset.testid = `match-${i + 1}`;
    li.setAttribute("data-testid", `match-${i + 1}`);
    const img = document.createElement("img");
    img.src = m.image_url; img.alt = `Catalog dress ${m.item_id}`;
    const caption = document.createElement("div");
    caption.textContent = `${i + 1} · ${m.item_id} · ${m.score}`;
    li.append(img, caption);
    li.addEventListener("click", () => choose(i));
    list.appendChild(li);
  });
  say("");
}

function choose(index) {
  if (!state.current || index >= state.current.matches.length) return;
  state.chosen = state.current.matches[index].item_id;
  [...$("matches").children].forEach((li, i) => li.classList.toggle("chosen", i === index));
  say(`Chosen: ${state.chosen} — press A to approve`);
}

function send(path, body) {
  // Decisions go out one after another, in the order they were taken.
  const next = state.chain.then(() => api(path, { method: "POST", body: JSON.stringify(body) }));
  state.chain = next.catch((e) => say(`Not saved: ${e.message}`));
  return next;
}

async function decide(action) {
  const post = state.current;
  if (!post) return;
  if (action === "approve" && !state.chosen) {
    say("Choose the matching dress first (1–3), then press A.");
    return;
  }
  const body = { action, item_id: action === "approve" ? state.chosen : null,
    with_duplicates: state.withDuplicates && action !== "skip" };
  state.sent.add(post.post_id);
  if (body.with_duplicates) {
    const group = new Set(post.duplicates);
    group.forEach((id) => state.sent.add(id));
    state.buffer = state.buffer.filter((p) => !group.has(p.post_id));
  }
  show(state.buffer.shift() || null);
  send(`/v1/moderation/posts/${encodeURIComponent(post.post_id)}/decision`, body)
    .then(() => { say(`${action} ${post.post_id} saved`); counter(); })
    .catch(() => {});
  if (!state.current) {
    // The buffer ran dry: ask again once the decisions are saved, so the answer reflects them.
    state.done = false;
    await state.chain;
    await refill();
    show(state.buffer.shift() || null);
  }
  else refill();
}

async function undo() {
  try {
    const body = await send("/v1/moderation/undo", {});
    body.posts.forEach((p) => state.sent.delete(p.post_id));
    const back = body.posts.filter((p) => p.status === "queued");
    if (state.current) state.buffer.unshift(state.current);
    state.buffer.unshift(...back.slice(1));
    show(back[0] || state.buffer.shift() || null);
    say(`Undid ${body.decisions.length} decision(s) on ${body.posts.map((p) => p.post_id).join(", ")}`);
    counter();
  } catch (e) { say(`Nothing undone: ${e.message}`); }
}

async function counter() {
  const s = await api("/v1/moderation/session");
  $("count").textContent = s.decisions;
  $("rate").textContent = s.decisions_per_hour;
  $("queued").textContent = s.queued;
  return s;
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
  const key = event.key.toLowerCase();
  const help = $("help");
  if (key === "?") { help.open ? help.close() : help.showModal(); event.preventDefault(); return; }
  if (help.open) return;
  if (["1", "2", "3"].includes(key)) choose(Number(key) - 1);
  else if (key === "a") decide("approve");
  else if (key === "r") decide("reject");
  else if (key === "s") decide("skip");
  else if (key === "u") undo();
  else if (key === "d") {
    state.withDuplicates = !state.withDuplicates;
    if (state.current) show(state.current);
  } else return;
  event.preventDefault();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
}

async function loadAdmin(params = "") {
  const counts = await api("/v1/moderation/audit/counts");
  const cbody = $("counts").tBodies[0];
  cbody.replaceChildren();
  for (const r of counts.moderators) {
    const tr = document.createElement("tr");
    [r.moderator, r.approve, r.reject, r.skip, r.undo, r.total, r.last_at].forEach((v) => cell(tr, v));
    cbody.appendChild(tr);
  }
  const log = await api(`/v1/moderation/audit?limit=200${params}`);
  const tbody = $("audit").tBodies[0];
  tbody.replaceChildren();
  for (const d of log.decisions) {
    const tr = document.createElement("tr");
    tr.dataset.action = d.action;
    [d.id, d.at, d.moderator, d.action, d.post_id, d.item_id, d.undoes, d.classifier_version,
      d.model_version].forEach((v) => cell(tr, v));
    tbody.appendChild(tr);
  }
}

async function main() {
  const s = await counter();
  state.csrf = s.csrf_token; state.role = s.role;
  $("who").textContent = `${s.username} (${s.role})`;
  $("logout-csrf").value = s.csrf_token || "";
  $("admin-link").hidden = s.role !== "admin";
  if (window.location.pathname === "/moderation/admin") {
    $("admin-view").hidden = false;
    $("audit-filter").addEventListener("submit", (e) => {
      e.preventDefault();
      const form = new URLSearchParams();
      for (const [k, v] of new FormData(e.target)) if (v) form.set(k, String(v));
      loadAdmin(form.toString() ? `&${form}` : "");
    });
    await loadAdmin();
    return;
  }
  $("queue-view").hidden = false;
  document.addEventListener("keydown", onKey);
  await refill();
  show(state.buffer.shift() || null);
  refill();
  document.body.dataset.ready = "1";
}

main().catch((e) => say(`The page could not start: ${e.message}`));
