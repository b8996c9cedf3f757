// Search state lives in chrome.storage.session: it survives the worker being stopped and is
// cleared when the browser closes. The side panel renders whatever is stored here.
const MAX_SEARCHES = 8;
const DEFAULT_FILTERS = { category: "", available: false };

// One writer at a time inside this worker, so read-modify-write updates never interleave.
let queue = Promise.resolve();
function serialized(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => {});
  return run;
}

export function newSearchId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export async function getSearches() {
  return (await chrome.storage.session.get({ searches: [] })).searches;
}

export async function getFilters() {
  return { ...DEFAULT_FILTERS, ...(await chrome.storage.session.get({ filters: {} })).filters };
}

/** Insert or update (shallow merge) one search; the newest comes first. */
export function putSearch(entry) {
  return serialized(async () => {
    const searches = await getSearches();
    const at = searches.findIndex((s) => s.id === entry.id);
    if (at >= 0) searches[at] = { ...searches[at], ...entry };
    else searches.unshift(entry);
    const kept = searches.slice(0, MAX_SEARCHES);
    const dropped = searches.slice(MAX_SEARCHES).map((s) => `img:${s.id}`);
    await chrome.storage.session.set({ searches: kept });
    if (dropped.length) await chrome.storage.session.remove(dropped);
  });
}

/** The downscaled query image (a data: URL), kept to re-run the search with other filters. */
export async function saveQueryImage(id, dataUrl) {
  await chrome.storage.session.set({ [`img:${id}`]: dataUrl });
}

export async function getQueryImage(id) {
  return (await chrome.storage.session.get(`img:${id}`))[`img:${id}`] || null;
}
