// Item page: /items/{id} shows one catalog item and the items that look like it.
import { priceOf, renderCard, safeHref } from "./cards.js";

const SAVED = "lookalike.search.v1"; // app.js keeps the shopper's search under this key

const $ = (id) => document.getElementById(id);
const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

// Back to the same results: history when the shopper came from the search page (it restores
// the scroll position too), else the search page, which restores the kept search.
function wireBack() {
  let kept = false;
  try {
    kept = Boolean(sessionStorage.getItem(SAVED));
  } catch {
    kept = false;
  }
  const back = $("back-link");
  if (!kept) return;
  back.textContent = "← Back to results";
  let fromSearch = false;
  try {
    const ref = new URL(document.referrer);
    fromSearch = ref.origin === location.origin && ref.pathname === "/";
  } catch {
    fromSearch = false;
  }
  back.addEventListener("click", (event) => {
    if (fromSearch && history.length > 1) {
      event.preventDefault();
      history.back();
    }
  });
}

function fail(message) {
  $("error-title").textContent = message;
  $("error-banner").hidden = false;
  $("status").textContent = "";
}

async function main() {
  const response = await fetch(`/v1/items/${encodeURIComponent(id)}`);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return fail(body?.error?.message || "This item could not be loaded.");
  document.title = `Lookalike · ${body.title}`;
  $("item-title").textContent = body.title;
  $("item-category").textContent = body.category;
  $("item-price").textContent = priceOf(body);
  $("item-id").textContent = body.item_id;
  const photos = body.image_urls.length;
  $("item-photos").textContent = `${photos} photo${photos === 1 ? "" : "s"}`;
  const shop = safeHref(body.url, "");
  if (shop && !shop.startsWith("/items/")) {
    $("shop-link").href = shop;
    $("shop-link").hidden = false;
  }
  $("item-badge").textContent = body.available ? "Available now" : "Rented out";
  $("item-badge").classList.add(body.available ? "available" : "rented");
  if (body.image_urls.length) {
    $("item-image").src = body.image_urls[0];
    $("item-image").alt = body.title;
  }
  const similar = await fetch(`/v1/items/${encodeURIComponent(id)}/similar?k=12`);
  const found = await similar.json().catch(() => ({}));
  if (!similar.ok) return fail(found?.error?.message || "Similar items are not available.");
  $("results").append(...found.results.map(renderCard));
  $("status").textContent = `${found.results.length} similar pieces.`;
  $("served-by").textContent =
    `model ${found.model_version} · index ${found.index_version} · served by ${found.served_by}`;
}

wireBack();
main().catch(() => fail("Cannot reach the search service."));
