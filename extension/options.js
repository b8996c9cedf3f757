import { testConnection } from "./sw-api.js";
import { DEFAULT_SERVER, getConfig, normalizeServer, originPattern, saveConfig } from "./sw-config.js";

const form = document.getElementById("form");
const serverInput = document.getElementById("server");
const keyInput = document.getElementById("apiKey");
const status = document.getElementById("status");

function show(kind, text) {
  status.className = kind;
  status.dataset.kind = kind;
  status.textContent = text;
}

function readForm() {
  return { server: normalizeServer(serverInput.value || DEFAULT_SERVER), apiKey: keyInput.value.trim() };
}

async function ensureAccess(server) {
  // Host access is asked for exactly the configured origin, and only when it is not yet granted.
  // permissions.request must run inside the click, so it is the first await here.
  return chrome.permissions.request({ origins: [originPattern(server)] });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  let config;
  try {
    config = readForm();
  } catch (err) {
    show("error", err.message);
    return;
  }
  let granted = false;
  try {
    granted = await ensureAccess(config.server);
  } catch (err) {
    show("error", `Could not ask for access to ${config.server}: ${err.message}`);
    return;
  }
  await saveConfig(config);
  serverInput.value = config.server;
  show(
    granted ? "ok" : "info",
    granted
      ? "Saved."
      : `Saved. Access to ${config.server} was not granted; searches work only if that server allows this extension (CORS).`,
  );
});

document.getElementById("test").addEventListener("click", async () => {
  let config;
  try {
    config = readForm();
  } catch (err) {
    show("error", err.message);
    return;
  }
  show("info", `Testing ${config.server}…`);
  try {
    show("ok", await testConnection(config));
  } catch (err) {
    show("error", err.message || String(err));
  }
});

getConfig().then(({ server, apiKey }) => {
  serverInput.value = server;
  keyInput.value = apiKey;
});
