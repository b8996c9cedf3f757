// The right-click menu. The side panel must be opened synchronously inside the click handler:
// Chrome only allows sidePanel.open() while the user gesture is still current.
import { searchFromImage, startAreaSelect } from "./sw-search.js";

export const MENU_IMAGE = "lookalike-image";
export const MENU_AREA = "lookalike-area";

export function installMenus() {
  chrome.contextMenus.removeAll(() => {
    chrome.contextMenus.create({ id: MENU_IMAGE, title: "Find similar dresses", contexts: ["image"] });
    chrome.contextMenus.create({
      id: MENU_AREA,
      title: "Find similar dresses in an area…",
      contexts: ["page", "frame", "video"],
    });
  });
}

export function openPanel(windowId) {
  // Without a user gesture (e.g. when a test calls the handler) this fails; the search still runs
  // and the panel shows it whenever it is opened.
  return chrome.sidePanel.open({ windowId }).catch((err) => {
    console.debug("lookalike: side panel not opened:", err?.message);
  });
}

/** Returns a promise of the search id (image) or of the overlay injection (area). */
export function onMenuClick(info, tab) {
  openPanel(tab.windowId);
  if (info.menuItemId === MENU_IMAGE) return searchFromImage(info, tab);
  if (info.menuItemId === MENU_AREA) return startAreaSelect(tab);
  return Promise.resolve(null);
}
