// One search from click to stored results. Every outcome ends in storage, so the panel always
// has something to show: "searching", results, "no results" or an error a person understands.
import { searchImage } from "./sw-api.js";
import { getConfig } from "./sw-config.js";
import { imageFromClick, imageFromRegion, dataUrlToBlob } from "./sw-image.js";
import {
  getFilters,
  getQueryImage,
  getSearches,
  newSearchId,
  putSearch,
  saveQueryImage,
} from "./sw-state.js";

const K = 20;

// performance.timeOrigin + now() is comparable across the worker and the panel page.
export const now = () => performance.timeOrigin + performance.now();

function describe(err) {
  if (err && err.kind) return { kind: err.kind, message: err.message };
  console.error("lookalike: unexpected error", err);
  return { kind: "internal", message: `Something went wrong in the extension: ${err?.message || err}` };
}

async function query(id, blob, filters) {
  const config = await getConfig();
  const body = await searchImage(config, blob, { k: K, ...filters });
  await putSearch({
    id,
    status: "done",
    server: config.server,
    filters,
    results: body.results || [],
    modelVersion: body.model_version || "",
    indexVersion: body.index_version || "",
    tookMs: body.took_ms ?? null,
    error: null,
  });
}

async function run(source, getImage) {
  const id = newSearchId();
  const t0 = now();
  const filters = await getFilters();
  const pending = putSearch({ id, source, status: "pending", t0, createdAt: Date.now(), filters });
  try {
    const image = await getImage();
    await pending;
    // Kept so the panel's filters can re-run the search; not needed before the results.
    const saved = saveQueryImage(id, image.dataUrl);
    await query(id, image.blob, filters);
    await saved;
  } catch (err) {
    await pending;
    await putSearch({ id, status: "error", error: describe(err) });
  }
  return id;
}

/** Context-menu "Find similar dresses" on an image. Resolves to the search id. */
export function searchFromImage(info, tab) {
  return run("image", () => imageFromClick(info, tab));
}

/** A rectangle the user dragged (CSS pixels of the viewport). Resolves to the search id. */
export function searchFromRegion(tab, rect, viewport) {
  return run("region", () => imageFromRegion(tab, rect, viewport));
}

/** Re-runs a stored search with the current filters (the panel's filter controls). */
export async function refine(id) {
  const filters = await getFilters();
  const dataUrl = await getQueryImage(id);
  if (!dataUrl) return;
  await putSearch({ id, status: "pending", t0: now(), filters });
  try {
    await query(id, await dataUrlToBlob(dataUrl), filters);
  } catch (err) {
    await putSearch({ id, status: "error", error: describe(err) });
  }
}

/** Puts the rectangle-drawing overlay on the page (needs the activeTab grant of the click). */
export async function startAreaSelect(tab) {
  try {
    await chrome.scripting.executeScript({ target: { tabId: tab.id }, files: ["content-region.js"] });
  } catch (err) {
    console.warn("lookalike: cannot select an area here:", err?.message);
    const id = newSearchId();
    await putSearch({
      id,
      source: "region",
      status: "error",
      t0: now(),
      createdAt: Date.now(),
      filters: await getFilters(),
      error: {
        kind: "image",
        message: "Cannot select an area on this page (browser pages and the Web Store are off limits).",
      },
    });
  }
}

export { getSearches };
