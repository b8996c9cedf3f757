// One result card, shared by the search page and the item page.

const CARD_HTML = `
    <li class="result">
      <a class="card" data-testid="result-card">
        <div class="thumb"><img loading="lazy" decoding="async" alt=""></div>
        <div class="card-body">
          <h3 class="title"></h3>
          <p class="meta"><span class="category"></span><span class="price"></span></p>
          <p class="badges"><span class="badge"></span></p>
          <div class="match">
            <span class="match-bar" aria-hidden="true"><span class="match-fill"></span></span>
            <span class="match-text"></span>
          </div>
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

export function formatPrice(price) {
  const n = Number(price);
  if (!Number.isFinite(n)) return "";
  return `${priceFormat.format(n)} / rental`;
}

export function matchPercent(score) {
  const n = Number(score);
  if (!Number.isFinite(n)) return 0;
  return Math.round(Math.min(1, Math.max(0, n)) * 100);
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
  li.querySelector(".price").textContent = formatPrice(item.price);

  const badge = li.querySelector(".badge");
  badge.textContent = item.available ? "Available now" : "Rented out";
  badge.classList.add(item.available ? "available" : "rented");
  badge.dataset.testid = "availability";

  const pct = matchPercent(item.score);
  li.querySelector(".match-fill").style.width = `${pct}%`;
  const text = li.querySelector(".match-text");
  text.textContent = `${pct}% match`;
  text.dataset.testid = "similarity";
  link.setAttribute(
    "aria-label",
    `${item.title || id}, ${item.category || ""}, ${formatPrice(item.price)}, ` +
      `${badge.textContent}, ${pct}% match`,
  );
  return li;
}

