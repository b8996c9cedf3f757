// Lookalike search page: pick, drop, paste or shoot a photo; it is downscaled in the browser,
// sent to POST /v1/search, and the results are shown as cards. No framework, no remote code.
//
// Contract (see lookalike/serve/schemas.py):
//   POST /v1/search?k=20[&category=X][&available=true][&per_garment=true]
//        multipart fields "image" and, for a drawn area, "box" = "x0,y0,x1,y1" (0..1)
//     -> {results: [{item_id, title, category, price, price_text, available, score, match,
//                    image_url, url, region, box}],
//         groups: [{region, box, score, results}], crop_mode,
//         model_version, index_version, served_by, took_ms, request_id}
//   GET /v1/categories -> {categories: [{name, count}]}
//   errors -> HTTP 4xx/5xx with {error: {code, message}}
//
// The shopper can drag a box on the photo (mouse or touch) to search that area; "Search whole
// photo" resets it. When the photo shows several garments each gets a labelled box: clicking
// one shows that garment's results. The search (photo downscaled, box, filters, results,
// scroll) is kept in sessionStorage, so Back from an item page returns to the same results.

import { renderCard } from "./cards.js";

const K = 20; // one page of results; "Show more" adds a page up to MAX_K
const MAX_K = 100; // settings.limits.max_k
const MAX_SIDE = 1024; // longest side sent to the server; the model sees 224 anyway
const JPEG_QUALITY = 0.9;
const SMALL_BYTES = 1.5 * 1024 * 1024; // a file this small and <= MAX_SIDE is sent as is
const KEPT_SIDE = 640; // the photo kept in sessionStorage for Back: small, still searchable
const MIN_BOX = 0.03; // a drag smaller than this (of width or height) is a click, not a box
const SAVED = "lookalike.search.v1";
const REGION_WORDS = { upper: "Top", lower: "Bottom", full: "Full outfit", whole: "Whole photo" };

const $ = (id) => document.getElementById(id);
const els = {
  dropZone: $("drop-zone"),
  preview: $("preview"),
  fileInput: $("file-input"),
  cameraInput: $("camera-input"),
  category: $("category"),
  available: $("available"),
  filters: $("filters"),
  status: $("status"),
  banner: $("error-banner"),
  errorTitle: $("error-title"),
  errorDetail: $("error-detail"),
  retry: $("retry"),
  results: $("results"),
  servedBy: $("served-by"),
  frame: $("photo-frame"),
  boxLayer: $("box-layer"),
  boxTools: $("box-tools"),
  wholePhoto: $("whole-photo"),
  boxHint: $("box-hint"),
  more: $("show-more"),
};

const state = {
  upload: null, // {blob, name}: the prepared photo, reused when a filter changes
  previewUrl: null,
  kept: null, // a small data URL of the photo, for sessionStorage
  box: null, // [x0, y0, x1, y1] drawn by the shopper, or null for the whole photo
  k: K,
  body: null, // the last answer
  group: null, // index of the garment whose results are shown, or null for all
  controller: null, // AbortController of the search in flight
  seq: 0, // guards against a slow answer overwriting a newer one
};

const FRIENDLY = {
  400: "That search could not be understood.",
  401: "This page is not allowed to search right now.",
  404: "Search is not available at this address.",
  413: "That photo is too large. Try a smaller photo or a screenshot of it.",
  415: "That file is not an image we can read. Try a JPEG, PNG or WebP photo.",
  422: "That photo looks damaged or cut off. Try taking or saving it again.",
  429: "Too many searches at once. Wait a moment, then try again.",
  503: "Search is starting up or busy. Please try again in a minute.",
};

// --- status and errors ---------------------------------------------------------------------

function setStatus(text) {
  els.status.textContent = text;
}

function setBusy(busy) {
  els.results.setAttribute("aria-busy", String(busy));
  document.body.classList.toggle("is-busy", busy);
}

function showError(title, detail = "", { retry = false } = {}) {
  els.errorTitle.textContent = title;
  els.errorDetail.textContent = detail;
  els.retry.hidden = !retry;
  els.banner.hidden = false;
}

function clearError() {
  els.banner.hidden = true;
  els.errorTitle.textContent = "";
  els.errorDetail.textContent = "";
}

// --- preparing the photo -------------------------------------------------------------------

async function decodeForCanvas(file) {
  if ("createImageBitmap" in window) {
    try {
      return await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      // fall through to <img>, which some browsers decode more formats with
    }
  }
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.decoding = "async";
    img.src = url;
    await img.decode();
    return img;
  } finally {
    URL.revokeObjectURL(url);
  }
}

// Downscale to MAX_SIDE as JPEG so phone photos upload fast. The original is kept when it is
// already small, or when the browser cannot decode it (the server then judges it, and its
// answer, e.g. 415 for a HEIC photo, is shown to the shopper).
export async function prepareUpload(file) {
  const name = file.name || "photo.jpg";
  let source;
  try {
    source = await decodeForCanvas(file);
  } catch {
    return { blob: file, name };
  }
  const width = source.naturalWidth || source.width;
  const height = source.naturalHeight || source.height;
  const longest = Math.max(width, height);
  if (!longest || (longest <= MAX_SIDE && file.size <= SMALL_BYTES)) {
    source.close?.();
    return { blob: file, name };
  }
  const scale = Math.min(1, MAX_SIDE / longest);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; // JPEG has no alpha: transparent areas become white, as on the server
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  source.close?.();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  if (!blob || blob.size >= file.size) return { blob: file, name };
  return { blob, name: name.replace(/\.[^.]*$/, "") + ".jpg" };
}

function showPreview(file, src = null) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = src ? null : URL.createObjectURL(file);
  els.preview.alt = `Your photo: ${file.name || "from camera"}`;
  els.preview.hidden = false;
  els.preview.src = src || state.previewUrl;
  els.dropZone.classList.add("has-photo");
  els.boxTools.hidden = false;
}

// A small JPEG data URL of the photo: what sessionStorage keeps for Back (quota is ~5 MB).
async function keptPhoto(blob) {
  try {
    const source = await decodeForCanvas(blob);
    const width = source.naturalWidth || source.width;
    const height = source.naturalHeight || source.height;
    const scale = Math.min(1, KEPT_SIDE / Math.max(width, height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
    source.close?.();
    return canvas.toDataURL("image/jpeg", 0.85);
  } catch {
    return null; // a photo this browser cannot draw is not kept; Back then shows no photo
  }
}

async function usePhoto(file) {
  if (!file) return;
  clearError();
  showPreview(file);
  setBox(null);
  state.k = K;
  state.group = null;
  state.body = null;
  setBusy(true);
  setStatus("Preparing your photo…");
  try {
    state.upload = await prepareUpload(file);
  } catch {
    state.upload = { blob: file, name: file.name || "photo" };
  }
  state.kept = await keptPhoto(state.upload.blob);
  await search();
}

// --- searching -----------------------------------------------------------------------------

function searchUrl() {
  const params = new URLSearchParams({ k: String(state.k) });
  if (els.category.value) params.set("category", els.category.value);
  if (els.available.checked) params.set("available", "true");
  // garments are found on the whole photo; a drawn box is searched as it is
  if (!state.box) params.set("per_garment", "true");
  return `/v1/search?${params}`;
}

const boxText = (box) => box.map((v) => v.toFixed(4)).join(",");

async function errorFrom(response) {
  let message = "";
  let code = "";
  try {
    const body = await response.json();
    message = body?.error?.message ?? "";
    code = body?.error?.code ?? "";
  } catch {
    // not JSON (a proxy page, say): the status alone decides the message
  }
  const title =
    FRIENDLY[response.status] ??
    (response.status >= 500
      ? "Something went wrong on our side. Please try again."
      : "That search did not work.");
  const retry = response.status === 429 || response.status >= 500;
  return { title, detail: message, code, retry };
}

export async function search() {
  if (!state.upload) return;
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;

  const form = new FormData();
  form.append("image", state.upload.blob, state.upload.name);
  if (state.box) form.append("box", boxText(state.box));
  clearError();
  setBusy(true);
  setStatus("Searching…");

  let response;
  try {
    response = await fetch(searchUrl(), {
      method: "POST",
      body: form,
      signal: controller.signal,
      headers: { Accept: "application/json" },
    });
  } catch (err) {
    if (err?.name === "AbortError" || seq !== state.seq) return;
    setBusy(false);
    els.results.replaceChildren(); // old cards would not match the filters now shown
    els.more.hidden = true;
    els.servedBy.textContent = "";
    setStatus("Search failed.");
    showError(
      "Cannot reach the search service.",
      "Check your connection and try again.",
      { retry: true },
    );
    return;
  }

  try {
    if (!response.ok) {
      const err = await errorFrom(response);
      if (seq !== state.seq) return;
      els.results.replaceChildren();
      els.more.hidden = true;
      els.servedBy.textContent = "";
      setStatus("Search failed.");
      showError(err.title, err.detail, { retry: err.retry });
      return;
    }
    const body = await response.json();
    if (seq !== state.seq) return;
    const grown = state.body && state.k > K && state.k > (state.body.results?.length ?? 0);
    state.body = body;
    if (!grown) state.group = null; // a new photo, box or filter: all garments again
    showAnswer(body);
    reportImpressions(body);
    save();
    if (grown) return; // "Show more": stay where the shopper is
    // On a phone the photo panel fills the screen: bring the answers into view.
    if (window.matchMedia("(max-width: 760px)").matches) {
      $("results-heading").scrollIntoView({ behavior: "smooth", block: "start" });
    }
  } catch (err) {
    if (err?.name === "AbortError" || seq !== state.seq) return;
    setStatus("Search failed.");
    showError("The search service sent an answer we could not read.", "", { retry: true });
  } finally {
    if (seq === state.seq) setBusy(false);
  }
}

// --- rendering -----------------------------------------------------------------------------

// The garments worth a box of their own: two or more located regions (one, or none, changes
// nothing on the page).
function garmentGroups(body) {
  const groups = Array.isArray(body?.groups) ? body.groups : [];
  const located = groups.filter((g) => Array.isArray(g.box) && g.box.length === 4);
  return located.length >= 2 ? located : [];
}

function regionWord(region) {
  const word = REGION_WORDS[region] ?? String(region || "Garment").replace(/[_-]+/g, " ");
  return word.charAt(0).toUpperCase() + word.slice(1);
}

function showAnswer(body) {
  const groups = garmentGroups(body);
  if (state.group !== null && !groups[state.group]) state.group = null;
  const chosen = state.group === null ? null : groups[state.group];
  const results = chosen ? chosen.results ?? [] : Array.isArray(body.results) ? body.results : [];
  renderResults(results, chosen);
  renderBoxes(groups);
  renderFooter(body);
  // a full page may have more behind it; the server's bound is MAX_K
  const full = !chosen && results.length >= state.k && state.k < MAX_K;
  els.more.hidden = !full;
}

function renderResults(results, chosen = null) {
  const cards = results.map(renderCard);
  els.results.replaceChildren(...cards);
  if (!results.length) {
    setStatus(state.upload ? "No matches with these filters. Try clearing them." : "");
    return;
  }
  const filters = [];
  if (chosen) filters.push(`${regionWord(chosen.region).toLowerCase()} only`);
  if (state.box) filters.push("your area");
  if (els.category.value) filters.push(els.category.value);
  if (els.available.checked) filters.push("available now");
  const suffix = filters.length ? ` (${filters.join(", ")})` : "";
  setStatus(`${results.length} similar piece${results.length === 1 ? "" : "s"}${suffix}.`);
}

// --- boxes on the photo: the shopper's own, and one per garment found -----------------------

function place(el, box) {
  const [x0, y0, x1, y1] = box.map((v) => Math.min(1, Math.max(0, Number(v))));
  el.style.left = `${x0 * 100}%`;
  el.style.top = `${y0 * 100}%`;
  el.style.width = `${Math.max(0, x1 - x0) * 100}%`;
  el.style.height = `${Math.max(0, y1 - y0) * 100}%`;
}

function setBox(box) {
  state.box = box;
  let drawn = els.boxLayer.querySelector(".user-box");
  if (!box) {
    drawn?.remove();
  } else {
    if (!drawn) {
      drawn = document.createElement("div");
      drawn.className = "user-box";
      drawn.dataset.testid = "user-box";
      els.boxLayer.append(drawn);
    }
    place(drawn, box);
  }
  els.wholePhoto.hidden = !box;
  els.boxHint.textContent = box
    ? "Searching the area you drew."
    : "Drag on the photo to search one area of it.";
}

function renderBoxes(groups) {
  for (const old of els.boxLayer.querySelectorAll(".garment-box")) old.remove();
  if (state.box) return; // the shopper's own box says what is searched
  groups.forEach((group, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "garment-box";
    button.dataset.testid = "garment-box";
    button.dataset.region = String(group.region);
    button.setAttribute("aria-pressed", String(state.group === i));
    const word = regionWord(group.region);
    button.setAttribute("aria-label", `Show results for the ${word.toLowerCase()} only`);
    const label = document.createElement("span");
    label.className = "garment-label";
    label.textContent = word;
    button.append(label);
    place(button, group.box);
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      state.group = state.group === i ? null : i; // a second click shows every garment again
      showAnswer(state.body);
      save();
    });
    els.boxLayer.append(button);
  });
}

// Pointer events cover mouse, pen and touch; the frame has touch-action: none so a drag on the
// photo draws instead of scrolling.
function wireBoxDrawing() {
  let start = null;
  let live = null;
  const at = (event) => {
    const rect = els.preview.getBoundingClientRect();
    const x = (event.clientX - rect.left) / rect.width;
    const y = (event.clientY - rect.top) / rect.height;
    return [Math.min(1, Math.max(0, x)), Math.min(1, Math.max(0, y))];
  };
  const boxFrom = (a, b) => [
    Math.min(a[0], b[0]),
    Math.min(a[1], b[1]),
    Math.max(a[0], b[0]),
    Math.max(a[1], b[1]),
  ];
  // A press becomes a drag once it moves: a press that does not move stays a click (on a
  // garment's box it shows that garment).
  els.frame.addEventListener("pointerdown", (event) => {
    if (!state.upload || event.button > 0) return;
    event.preventDefault(); // no image drag, no text selection
    start = at(event);
  });
  els.frame.addEventListener("pointermove", (event) => {
    if (!start) return;
    const here = at(event);
    if (!live) {
      if (Math.abs(here[0] - start[0]) < 0.01 && Math.abs(here[1] - start[1]) < 0.01) return;
      els.frame.setPointerCapture?.(event.pointerId);
      live = document.createElement("div");
      live.className = "user-box drawing";
      els.boxLayer.append(live);
    }
    place(live, boxFrom(start, here));
  });
  const finish = (event, cancelled = false) => {
    if (!start) return;
    const box = boxFrom(start, at(event));
    const drawn = live !== null;
    start = null;
    live?.remove();
    live = null;
    if (!drawn || cancelled || box[2] - box[0] < MIN_BOX || box[3] - box[1] < MIN_BOX) return;
    setBox(box);
    state.k = K;
    state.group = null;
    search();
  };
  els.frame.addEventListener("pointerup", (event) => finish(event));
  els.frame.addEventListener("pointercancel", (event) => finish(event, true));
  // a drag on the photo must not also open the file chooser
  els.frame.addEventListener("click", (event) => event.stopPropagation());
  els.wholePhoto.addEventListener("click", () => {
    setBox(null);
    state.k = K;
    search();
  });
}

// --- keeping the search for Back -----------------------------------------------------------

function save() {
  if (!state.body) return;
  const saved = {
    photo: state.kept,
    name: state.upload?.name || "photo.jpg",
    box: state.box,
    k: state.k,
    group: state.group,
    category: els.category.value,
    available: els.available.checked,
    body: state.body,
    scrollY: window.scrollY,
  };
  // Quota: drop the photo first (results still come back, the box needs a new upload), then
  // the answer; a browser without storage simply does not restore.
  for (const attempt of [saved, { ...saved, photo: null }, { ...saved, photo: null, body: null }]) {
    try {
      sessionStorage.setItem(SAVED, JSON.stringify(attempt));
      return;
    } catch {
      // QuotaExceededError or storage disabled: try smaller
    }
  }
}

function saveScroll() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SAVED) || "null");
    if (!saved) return;
    saved.scrollY = window.scrollY;
    sessionStorage.setItem(SAVED, JSON.stringify(saved));
  } catch {
    // nothing kept: nothing to update
  }
}

// A data URL back to a Blob without fetch(): the page's CSP allows connect-src 'self' only.
function blobOf(dataUrl) {
  const [head, data] = dataUrl.split(",", 2);
  const type = /^data:([^;,]+)/.exec(head)?.[1] || "image/jpeg";
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

async function restore() {
  let saved;
  try {
    saved = JSON.parse(sessionStorage.getItem(SAVED) || "null");
  } catch {
    return false;
  }
  if (!saved?.body) return false;
  // the page puts the shopper back where they were, once the cards are there
  if ("scrollRestoration" in history) history.scrollRestoration = "manual";
  if (saved.category) {
    await categoriesLoaded;
    els.category.value = saved.category;
  }
  els.available.checked = Boolean(saved.available);
  state.k = Math.min(MAX_K, Math.max(K, Number(saved.k) || K));
  state.group = Number.isInteger(saved.group) ? saved.group : null;
  state.body = saved.body;
  if (saved.photo) {
    const blob = blobOf(saved.photo);
    state.kept = saved.photo;
    state.upload = { blob, name: saved.name || "photo.jpg" };
    showPreview(blob, saved.photo);
    await els.preview.decode().catch(() => {});
  }
  setBox(Array.isArray(saved.box) && saved.box.length === 4 ? saved.box : null);
  showAnswer(saved.body);
  els.results.dataset.requestId = String(saved.body.request_id || "");
  await Promise.all(
    [...els.results.querySelectorAll("img")].slice(0, 24).map((img) => img.decode().catch(() => {})),
  );
  window.scrollTo(0, Number(saved.scrollY) || 0);
  return true;
}

function renderFooter(body) {
  const parts = [];
  if (body.model_version) parts.push(`model ${body.model_version}`);
  if (body.index_version) parts.push(`index ${body.index_version}`);
  if (body.served_by) parts.push(`served by ${body.served_by}`);
  if (Number.isFinite(Number(body.took_ms))) parts.push(`${Math.round(body.took_ms)} ms`);
  els.servedBy.textContent = parts.join(" · ");
  els.servedBy.title = body.request_id ? `request ${body.request_id}` : "";
}

// --- feedback: anonymous impression/click events keyed by the search's request id ----------

function sendEvents(events) {
  if (!events.length || !navigator.sendBeacon) return;
  const blob = new Blob([JSON.stringify({ events })], { type: "application/json" });
  navigator.sendBeacon("/v1/events", blob);
}

function reportImpressions(body) {
  const requestId = String(body.request_id || "");
  els.results.dataset.requestId = requestId;
  if (!requestId || !Array.isArray(body.results)) return;
  sendEvents(
    body.results.slice(0, 100).map((item, i) => ({
      type: "impression",
      request_id: requestId,
      item_id: String(item.item_id),
      position: i + 1,
    })),
  );
}

// One listener for every card: the beacon survives the navigation to the item page.
function reportClick(event) {
  const link = event.target.closest(".card");
  const requestId = els.results.dataset.requestId;
  if (!link || !requestId) return;
  const cards = [...els.results.querySelectorAll(".card")];
  sendEvents([
    {
      type: "click",
      request_id: requestId,
      item_id: link.dataset.itemId,
      position: cards.indexOf(link) + 1,
    },
  ]);
}

// --- categories ----------------------------------------------------------------------------

let categoriesLoaded = Promise.resolve();

async function loadCategories() {
  try {
    const response = await fetch("/v1/categories", { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const body = await response.json();
    const options = (body.categories ?? []).map(({ name, count }) => {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = Number.isFinite(count) ? `${name} (${count})` : name;
      return opt;
    });
    els.category.append(...options);
  } catch {
    // Without categories the page still searches everything; the select keeps "All".
  }
}

// --- wiring --------------------------------------------------------------------------------

function firstImage(files) {
  const list = Array.from(files ?? []);
  return list.find((f) => f.type.startsWith("image/")) ?? list[0];
}

function wire() {
  const { dropZone } = els;
  dropZone.addEventListener("click", () => els.fileInput.click());
  wireBoxDrawing();
  els.more.addEventListener("click", () => {
    state.k = Math.min(MAX_K, state.k + K);
    search();
  });
  // the scroll position is what Back returns to
  window.addEventListener("pagehide", saveScroll);
  els.results.addEventListener("click", saveScroll);
  dropZone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      els.fileInput.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      dropZone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
  }
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    usePhoto(firstImage(event.dataTransfer?.files));
  });
  // A photo dropped beside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.target !== dropZone && !dropZone.contains(event.target)) {
      usePhoto(firstImage(event.dataTransfer?.files));
    }
  });
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData?.files);
    if (file) usePhoto(file);
  });

  for (const input of [els.fileInput, els.cameraInput]) {
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      input.value = ""; // choosing the same file again still fires "change"
      usePhoto(file);
    });
  }

  els.preview.addEventListener("error", () => {
    // e.g. a HEIC photo this browser cannot show: keep the hint, the search still runs
    els.preview.hidden = true;
    els.dropZone.classList.remove("has-photo");
  });

  els.filters.addEventListener("submit", (event) => event.preventDefault());
  const refilter = () => {
    state.k = K;
    search();
  };
  els.category.addEventListener("change", refilter);
  els.available.addEventListener("change", refilter);
  els.retry.addEventListener("click", () => search());
  els.results.addEventListener("click", reportClick);
}

wire();
categoriesLoaded = loadCategories();
restore().catch(() => {});
