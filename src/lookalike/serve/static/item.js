// Item page: /items/{id} shows one catalog item and the items that look like it.
import { formatPrice, renderCard } from "./cards.js";

const $ = (id) => document.getElementById(id);
const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

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
  $("item-price").textContent = formatPrice(body.price);
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

main().catch(() => fail("Cannot reach the search service."));
