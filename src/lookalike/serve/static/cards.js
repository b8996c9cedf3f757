// One result card, shared by the search page and the item page.

const CARD_HTML = `
    <li class="result">
      <a class="card" data-testid="result-card">
        <div class="thumb"><img loading="lazy" decoding="async" alt=""></div>
        <div class="card-body">
          <h3 class="title"></h3>
          <p class="meta"><span class="category"></span><span class="price"></span></p>
          <p class="badges"><span class="badge"></span><span class="match-text" hidden></span></p>
        </div>
      </a>
    </li>
`;

let template = null;

function cardTemplate() {
  if (!template) {
    template = document.createElement("template");
    template.innerHTML = CARD_HTML.trim();
  }
  return template;
}

const priceFormat = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  maximumFractionDigits: 2,
  minimumFractionDigits: 0,
});

// The server's `price_text` is the one price format (serve/schemas.py: price_text); this is
// only for an older server that does not send it.
export function formatPrice(price) {
  if (price === null || price === undefined || price === "") return ""; // no price: say none
  const n = Number(price);
  if (!Number.isFinite(n)) return "";
  return `${priceFormat.format(n)} / rental`;
}

export function priceOf(item) {
  return typeof item?.price_text === "string" && item.price_text
    ? item.price_text
    : formatPrice(item?.price);
}

// A catalog `url` comes from an imported file: only an http(s) link (absolute, or relative to
// this site) becomes an href. `javascript:`, `data:` and the like fall back to the item page,
// so a hostile catalog row cannot run script when a shopper clicks its card.
export function safeHref(url, fallback) {
  if (typeof url !== "string" || !url.trim()) return fallback;
  let parsed;
  try {
    parsed = new URL(url.trim(), window.location.origin);
  } catch {
    return fallback;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return fallback;
  return parsed.origin === window.location.origin
    ? parsed.pathname + parsed.search + parsed.hash
    : parsed.href;
}

export function renderCard(item) {
  const li = cardTemplate().content.firstElementChild.cloneNode(true);
  const link = li.querySelector(".card");
  const id = String(item.item_id ?? "");
  const itemPage = `/items/${encodeURIComponent(id)}`;
  link.href = safeHref(item.url, itemPage);
  if (!link.getAttribute("href").startsWith("/")) link.rel = "noopener noreferrer";
  link.dataset.itemId = id;

  const img = li.querySelector("img");
  img.src = item.image_url || `/v1/items/${encodeURIComponent(id)}/image`;
  img.alt = item.title || "Catalog item";
  img.addEventListener("error", () => li.querySelector(".thumb").classList.add("broken"), {
    once: true,
  });

  li.querySelector(".title").textContent = item.title || id;
  li.querySelector(".category").textContent = item.category || "";
  const price = priceOf(item);
  li.querySelector(".price").textContent = price;

  const badge = li.querySelector(".badge");
  badge.textContent = item.available ? "Available now" : "Rented out";
  badge.classList.add(item.available ? "available" : "rented");
  badge.dataset.testid = "availability";

  // A word from thresholds calibrated for the model ("Very close"), or nothing: a raw cosine
  // ("41% match") means nothing to a shopper.
  const match = typeof item.match === "string" ? item.match : "";
  const text = li.querySelector(".match-text");
  text.textContent = match;
  text.hidden = !match;
  text.dataset.testid = "match";
  const words = [item.title || id, item.category || "", price, badge.textContent, match];
  link.setAttribute("aria-label", words.filter(Boolean).join(", "));
  return li;
}

