// Where the server is and which key to send. Kept in storage.local: the key is a secret, so it
// is not synced to other devices.
export const DEFAULT_SERVER = "http://127.0.0.1:8000";

export async function getConfig() {
  const { server, apiKey } = await chrome.storage.local.get({ server: DEFAULT_SERVER, apiKey: "" });
  return { server: server || DEFAULT_SERVER, apiKey: apiKey || "" };
}

export async function saveConfig({ server, apiKey }) {
  await chrome.storage.local.set({ server, apiKey });
}

/** "https://host:port/base" without a trailing slash; throws Error with a readable message. */
export function normalizeServer(text) {
  let url;
  try {
    url = new URL(String(text).trim());
  } catch {
    throw new Error("The server address must be a URL such as http://127.0.0.1:8000");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error("The server address must start with http:// or https://");
  }
  return (url.origin + url.pathname).replace(/\/+$/, "");
}

/** The host-permission pattern that covers a server address (ports are not part of it). */
export function originPattern(server) {
  const url = new URL(server);
  return `${url.protocol}//${url.hostname}/*`;
}
