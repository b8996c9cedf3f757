// Toolbar popup. Clicking the toolbar button grants activeTab for the current tab, which is what
// lets "Select an area" put its overlay on the page and capture it.
let tab = null;
const ready = chrome.tabs.query({ active: true, currentWindow: true }).then(([t]) => (tab = t));

function openPanel() {
  // Called synchronously in the click handler: sidePanel.open needs the user gesture.
  if (tab) chrome.sidePanel.open({ windowId: tab.windowId }).catch(() => {});
}

document.getElementById("area").addEventListener("click", async () => {
  openPanel();
  await ready;
  await chrome.runtime.sendMessage({ type: "start-area", tab });
  window.close();
});
document.getElementById("panel").addEventListener("click", () => {
  openPanel();
  window.close();
});
document.getElementById("options").addEventListener("click", () => {
  chrome.runtime.openOptionsPage();
  window.close();
});
