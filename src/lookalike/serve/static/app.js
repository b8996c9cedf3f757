// Lookalike search page: pick, drop, paste or shoot a photo; it is downscaled in the browser,
// sent to POST /v1/search, and the results are shown as cards. No framework, no remote code.
//
// Contract (see lookalike/serve/schemas.py):
//   POST /v1/search?k=20[&category=X][&available=true]  multipart field "image"
//     -> {results: [{item_id, title, category, price, available, score, image_url, url}],
//         model_version, index_version, served_by, took_ms, request_id}
//   GET /v1/categories -> {categories: [{name, count}]}
//   errors -> HTTP 4xx/5xx with {error: {code, message}}

import { formatPrice, matchPercent, renderCard } from "./cards.js";

const K = 20;
const MAX_SIDE = 1024; // longest side sent to the server; the model sees 224 anyway
const JPEG_QUALITY = 0.9;
const SMALL_BYTES = 1.5 * 1024 * 1024; // a file this small and <= MAX_SIDE is sent as is

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
};

const state = {
  upload: null, // {blob, name}: the prepared photo, reused when a filter changes
  previewUrl: null,
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

function showPreview(file) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  els.preview.alt = `Your photo: ${file.name || "from camera"}`;
  els.preview.hidden = false;
  els.preview.src = state.previewUrl;
  els.dropZone.classList.add("has-photo");
}

async function usePhoto(file) {
  if (!file) return;
  clearError();
  showPreview(file);
  setBusy(true);
  setStatus("Preparing your photo…");
  try {
    state.upload = await prepareUpload(file);
  } catch {
    state.upload = { blob: file, name: file.name || "photo" };
  }
  await search();
}

// --- searching -----------------------------------------------------------------------------

function searchUrl() {
  const params = new URLSearchParams({ k: String(K) });
  if (els.category.value) params.set("category", els.category.value);
  if (els.available.checked) params.set("available", "true");
  return `/v1/search?${params}`;
}

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
      els.servedBy.textContent = "";
      setStatus("Search failed.");
      showError(err.title, err.detail, { retry: err.retry });
      return;
    }
    const body = await response.json();
    if (seq !== state.seq) return;
    renderResults(Array.isArray(body.results) ? body.results : []);
    renderFooter(body);
    reportImpressions(body);
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

function renderResults(results) {
  const cards = results.map(renderCard);
  els.results.replaceChildren(...cards);
  if (!results.length) {
    setStatus(state.upload ? "No matches with these filters. Try clearing them." : "");
    return;
  }
  const filters = [];
  if (els.category.value) filters.push(els.category.value);
  if (els.available.checked) filters.push("available now");
  const suffix = filters.length ? ` (${filters.join(", ")})` : "";
  setStatus(`${results.length} similar piece${results.length === 1 ? "" : "s"}${suffix}.`);
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
  els.category.addEventListener("change", () => search());
  els.available.addEventListener("change", () => search());
  els.retry.addEventListener("click", () => search());
  els.results.addEventListener("click", reportClick);
}

wire();
loadCategories();
