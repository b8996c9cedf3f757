// Item page: /items/{id} shows one catalog item and the items that look like it.
const $ = (id) => document.getElementById(id);
const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const price = (p) => (Number.isFinite(Number(p)) ? `$${Number(p).toFixed(0)} / rental` : "");

function fail(message) {
  $("error-title").textContent = message;
  $("error-banner").hidden = false;
  $("status").textContent = "";
}

function card(item) {
  const li = $("card-template").content.firstElementChild.cloneNode(true);
  const link = li.querySelector(".card");
  link.href = item.url || `/items/${encodeURIComponent(item.item_id)}`;
  link.dataset.itemId = item.item_id;
  const img = li.querySelector("img");
  img.src = item.image_url;
  img.alt = item.title;
  li.querySelector(".title").textContent = item.title;
  li.querySelector(".category").textContent = item.category;
  li.querySelector(".price").textContent = price(item.price);
  const badge = li.querySelector(".badge");
  badge.textContent = item.available ? "Available now" : "Rented out";
  badge.classList.add(item.available ? "available" : "rented");
  const pct = Math.max(0, Math.min(100, Math.round(item.score * 100)));
  li.querySelector(".match-fill").style.width = `${pct}%`;
  li.querySelector(".match-text").textContent = `${pct}% match`;
  return li;
}

async function main() {
  const response = await fetch(`/v1/items/${encodeURIComponent(id)}`);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return fail(body?.error?.message || "This item could not be loaded.");
  document.title = `Lookalike · ${body.title}`;
  $("item-title").textContent = body.title;
  $("item-category").textContent = body.category;
  $("item-price").textContent = price(body.price);
  $("item-badge").textContent = body.available ? "Available now" : "Rented out";
  $("item-badge").classList.add(body.available ? "available" : "rented");
  if (body.image_urls.length) {
    $("item-image").src = body.image_urls[0];
    $("item-image").alt = body.title;
  }
  const similar = await fetch(`/v1/items/${encodeURIComponent(id)}/similar?k=12`);
  const found = await similar.json().catch(() => ({}));
  if (!similar.ok) return fail(found?.error?.message || "Similar items are not available.");
  $("results").append(...found.results.map(card));
  $("status").textContent = `${found.results.length} similar pieces.`;
  $("served-by").textContent =
    `model ${found.model_version} · index ${found.index_version} · served by ${found.served_by}`;
}

main().catch(() => fail("Cannot reach the search service."));
