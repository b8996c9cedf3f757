// The Lookalike HTTP API. Only image bytes, filters and the API key leave the browser: never
// the page URL (no referrer, no cookies).

export class ApiError extends Error {
  /** kind: unreachable | key_required | bad_key | rate_limited | bad_image | not_lookalike | server */
  constructor(kind, message, extra = {}) {
    super(message);
    this.kind = kind;
    Object.assign(this, extra);
  }
}

async function call(config, path, init = {}) {
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  if (config.apiKey) headers["X-API-Key"] = config.apiKey;
  let response;
  try {
    response = await fetch(config.server + path, {
      ...init,
      headers,
      credentials: "omit",
      referrerPolicy: "no-referrer",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(
      "unreachable",
      `Cannot reach the Lookalike server at ${config.server}. ` +
        "Check the address on the options page and that the server is running.",
    );
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.ok) {
    if (body === null) {
      throw new ApiError("not_lookalike", `${config.server} answered, but not like a Lookalike server.`);
    }
    return body;
  }
  const code = body?.error?.code || "";
  const detail = body?.error?.message || response.statusText;
  const status = response.status;
  if (status === 401 && code === "api_key_required") {
    throw new ApiError("key_required", "This server needs an API key. Add yours on the options page.", { status });
  }
  if (status === 401 || status === 403) {
    throw new ApiError(
      "bad_key",
      "The server rejected the API key (unknown or revoked). Check it on the options page.",
      { status },
    );
  }
  if (status === 429) {
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw new ApiError(
      "rate_limited",
      `Too many searches in a short time. Try again in ${retryAfter || "a few"} seconds.`,
      { status, retryAfter },
    );
  }
  if (status === 413 || status === 415 || status === 422) {
    throw new ApiError("bad_image", `The server could not use this image: ${detail}`, { status });
  }
  throw new ApiError("server", `The server had a problem (${status}): ${detail}`, { status });
}

/** POST /v1/search with a JPEG blob; returns the server's JSON. */
export async function searchImage(config, jpeg, { k = 20, category = "", available = false } = {}) {
  const query = new URLSearchParams({ k: String(k) });
  if (category) query.set("category", category);
  if (available) query.set("available", "true");
  const form = new FormData();
  form.append("image", jpeg, "query.jpg");
  return call(config, `/v1/search?${query}`, { method: "POST", body: form });
}

export async function fetchCategories(config) {
  const body = await call(config, "/v1/categories");
  return (body.categories || []).map((c) => c.name);
}

/** Checks address and key; returns a sentence for a person. Throws ApiError when it fails. */
export async function testConnection(config) {
  const health = await call(config, "/health");
  if (typeof health !== "object" || !("status" in health)) {
    throw new ApiError("not_lookalike", `${config.server} answered, but not like a Lookalike server.`);
  }
  let keyText;
  try {
    const me = await call(config, "/v1/auth/check");
    keyText = `API key "${me.name}" is valid.`;
  } catch (err) {
    if (err.kind === "server" && err.status === 404) {
      keyText = "This server does not check API keys.";
    } else {
      throw err;
    }
  }
  const state = health.status === "ok" ? "" : ` (server status: ${health.status})`;
  return `Connected to ${config.server}${state}. ${keyText}`;
}
