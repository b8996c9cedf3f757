// Messages from the extension's own pages and from the area-selection overlay.
import { fetchCategories } from "./sw-api.js";
import { getConfig } from "./sw-config.js";
import { refine, searchFromRegion, startAreaSelect } from "./sw-search.js";

async function categories() {
  const cached = (await chrome.storage.session.get("categories")).categories;
  const config = await getConfig();
  if (cached && cached.server === config.server) return cached.names;
  const names = await fetchCategories(config);
  await chrome.storage.session.set({ categories: { server: config.server, names } });
  return names;
}

const handlers = {
  "region-selected": (msg, sender) => searchFromRegion(sender.tab, msg.rect, msg.viewport),
  "start-area": (msg) => startAreaSelect(msg.tab),
  refine: (msg) => refine(msg.id),
  categories: () => categories(),
};

export function onMessage(msg, sender, sendResponse) {
  // Only our own pages and our own injected script talk to us.
  if (sender.id !== chrome.runtime.id) return false;
  const handler = handlers[msg?.type];
  if (!handler) return false;
  Promise.resolve()
    .then(() => handler(msg, sender))
    .then(
      (value) => sendResponse({ ok: true, value: value ?? null }),
      (err) => sendResponse({ ok: false, error: err?.message || String(err) }),
    );
  return true; // the answer comes asynchronously
}
