// Module service worker: wiring only. Listeners are registered at the top level on every start,
// because Chrome may stop this worker at any time and wake it for the next event.
import { installMenus, onMenuClick } from "./sw-menus.js";
import { onMessage } from "./sw-messages.js";
import { searchFromImage, searchFromRegion, startAreaSelect } from "./sw-search.js";

chrome.runtime.onInstalled.addListener(installMenus);
chrome.contextMenus.onClicked.addListener(onMenuClick);
chrome.runtime.onMessage.addListener(onMessage);

// Entry points for the end-to-end tests and for debugging from the worker's console.
globalThis.lookalike = { onMenuClick, searchFromImage, searchFromRegion, startAreaSelect };
