"""The shopper's search page and item page in real Chromium against a real `lookalike serve`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import extension_harness as harness
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e


def test_upload_a_photo_filter_and_open_an_item(
    shopper_context: Any,
    api_server: harness.ApiServer,
    demo_catalog: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    rows = harness.demo_items(demo_catalog / "items.csv")
    row = next(r for r in rows.values() if r["category"] == "Dress")
    # a shopper's phone photo: large, recompressed
    photo = tmp_path / "phone.jpg"
    with Image.open(demo_catalog / row["image"]) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((1200, 1800)).save(buf, "JPEG", quality=80)
    photo.write_bytes(buf.getvalue())

    page = shopper_context.new_page()
    try:
        page.goto(f"{api_server.url}/")
        page.set_input_files("[data-testid=file-input]", str(photo))
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        cards = page.locator("[data-testid=result-card]")
        assert cards.count() == 20
        assert cards.first.get_attribute("data-item-id") == row["item_id"]
        # versions and timings sit behind a toggle, not in the shopper's way
        assert not page.is_visible("[data-testid=footer]")
        page.click("[data-testid=details] summary")
        footer = page.inner_text("[data-testid=footer]")
        assert "model effnet_lite0:" in footer and "index catalog:" in footer
        page.screenshot(path=str(artifacts_dir / "search-page.png"))

        # filter by a category: the same photo is searched again, every card is a Skirt
        page.select_option("[data-testid=category-select]", "Skirt")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=result-card] .category')]"
            ".every(e => e.textContent === 'Skirt')",
            timeout=30_000,
        )
        page.select_option("[data-testid=category-select]", "")
        page.wait_for_function(
            f"() => document.querySelector('[data-testid=result-card]')"
            f"?.dataset.itemId === '{row['item_id']}'",
            timeout=30_000,
        )

        # the first card opens the item page, which lists similar items
        cards.first.click()
        page.wait_for_url(f"**/items/{row['item_id']}")
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        assert page.inner_text("[data-testid=item-title]") == row["title"]
        ids = page.eval_on_selector_all(
            "[data-testid=result-card]", "els => els.map(e => e.dataset.itemId)"
        )
        assert ids and row["item_id"] not in ids
        page.screenshot(path=str(artifacts_dir / "item-page.png"))
    finally:
        page.close()


def test_a_file_that_is_not_an_image_gets_a_friendly_message(
    shopper_context: Any, api_server: harness.ApiServer, tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.jpg"
    bogus.write_bytes(b"these are my notes, not a photo")
    page = shopper_context.new_page()
    try:
        page.goto(f"{api_server.url}/")
        page.set_input_files("[data-testid=file-input]", str(bogus))
        banner = page.locator("[data-testid=error-banner]")
        banner.wait_for(state="visible", timeout=30_000)
        text = banner.inner_text().strip()
        # The server's 415 reason reaches the shopper: it names the problem, no stack trace.
        assert "not an image" in text.lower() or "format" in text.lower(), text
        assert "Traceback" not in text and "Internal Server Error" not in text
        assert page.locator("[data-testid=result-card]").count() == 0
    finally:
        page.close()


def _watch(page: Any) -> tuple[list[str], list[str]]:
    """Collect CSP violations and script errors, and every URL the page requests."""
    problems: list[str] = []
    urls: list[str] = []

    def on_console(message: Any) -> None:
        # a refused beacon or image is the server's business; a CSP refusal is the page's
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: urls.append(r.url))
    return problems, urls


def _local(urls: list[str], base: str) -> list[str]:
    # blob: (the photo preview) and data: (inline icons) never leave the browser
    return [u for u in urls if not u.startswith((base, "blob:", "data:"))]


def test_pages_run_under_their_csp_and_load_nothing_remote(
    shopper_context: Any, api_server: harness.ApiServer, demo_catalog: Path
) -> None:
    """The search page, an item page and /docs: no CSP violation, no request off this server."""
    rows = harness.demo_items(demo_catalog / "items.csv")
    row = next(iter(rows.values()))
    page = shopper_context.new_page()
    problems, urls = _watch(page)
    try:
        response = page.goto(f"{api_server.url}/")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        page.set_input_files("[data-testid=file-input]", str(demo_catalog / row["image"]))
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)

        page.goto(f"{api_server.url}/items/{row['item_id']}")
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        assert page.inner_text("[data-testid=item-title]") == row["title"]

        # Swagger UI, self-hosted: it renders the live OpenAPI, operations included
        response = page.goto(f"{api_server.url}/docs")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 5
        assert "/v1/search" in page.inner_text("[data-testid=swagger-ui]")
    finally:
        page.close()
    assert not problems, problems
    assert not _local(urls, api_server.url), _local(urls, api_server.url)


def test_a_hostile_catalog_url_never_becomes_a_script_link(
    shopper_context: Any, api_server: harness.ApiServer
) -> None:
    """Render-side guard: only http(s) or same-site URLs become a card's href."""
    page = shopper_context.new_page()
    problems, _ = _watch(page)
    try:
        page.goto(f"{api_server.url}/")
        hrefs = page.evaluate(
            """async () => {
              const { renderCard } = await import("/static/cards.js");
              const urls = [
                "javascript:alert(document.domain)", " JaVaScRiPt:alert(1)",
                "java\\tscript:alert(1)", "data:text/html,<script>alert(1)</script>",
                "vbscript:msgbox(1)", "", null, 42,
                "https://shop.example/dress?id=1", "/items/LK-0002",
              ];
              return urls.map((url) => {
                const card = renderCard({
                  item_id: "LK 1", title: "<img src=x onerror=alert(1)>", url,
                  category: "Dress", price: 10, available: true, score: 0.5,
                });
                return [card.querySelector(".card").getAttribute("href"),
                        card.querySelector(".title").innerHTML,
                        card.querySelector("img[src='x']") === null];
              });
            }"""
        )
    finally:
        page.close()
    item_page = "/items/LK%201"
    assert [h for h, _, _ in hrefs[:8]] == [item_page] * 8, hrefs
    assert hrefs[8][0] == "https://shop.example/dress?id=1"
    assert hrefs[9][0] == "/items/LK-0002"
    # the title is text, not markup: escaped on render, no element made from it
    assert all(title == "&lt;img src=x onerror=alert(1)&gt;" for _, title, _ in hrefs)
    assert all(no_img for _, _, no_img in hrefs)
    assert not problems, problems


def _side_by_side(demo_catalog: Path, left: dict, right: dict, out: Path) -> Path:
    """One photo: ``left``'s catalog photo on its left half, ``right``'s on its right half."""
    size = (300, 400)
    canvas = Image.new("RGB", (2 * size[0], size[1]), "white")
    for i, row in enumerate((left, right)):
        with Image.open(demo_catalog / row["image"]) as im:
            canvas.paste(im.convert("RGB").resize(size), (i * size[0], 0))
    canvas.save(out, "JPEG", quality=90)
    return out


def _ids(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "[data-testid=result-card]", "els => els.map(e => e.dataset.itemId)"
    )


def _search_answer(response: Any) -> bool:
    return response.request.method == "POST" and "/v1/search" in response.url


def _drag(page: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag a box on the shown photo, corners as fractions of its width and height.

    The photo must be decoded and wholly on screen: mouse events outside the viewport reach
    no element.
    """
    preview = page.locator("[data-testid=preview]")
    preview.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=preview]');"
        " const r = i && i.getBoundingClientRect();"
        " return i && i.complete && i.naturalWidth > 0 && r.height > 50"
        " && r.top >= 0 && r.bottom <= window.innerHeight; }",
        timeout=10_000,
    )
    rect = preview.bounding_box()
    page.mouse.move(rect["x"] + x0 * rect["width"], rect["y"] + y0 * rect["height"])
    page.mouse.down()
    page.mouse.move(rect["x"] + x1 * rect["width"], rect["y"] + y1 * rect["height"], steps=8)
    page.mouse.up()


def test_a_box_drawn_on_the_photo_searches_that_area_and_back_returns_to_it(
    shopper_context: Any,
    api_server: harness.ApiServer,
    demo_catalog: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    rows = list(harness.demo_items(demo_catalog / "items.csv").values())
    left = next(r for r in rows if r["category"] == "Dress")
    right = next(r for r in rows if r["category"] not in ("Dress",))
    photo = _side_by_side(demo_catalog, left, right, tmp_path / "two.jpg")
    page = shopper_context.new_page()
    problems, _ = _watch(page)
    # (Playwright does not see a multipart body built from a Blob: the answer says what the
    # server received, each result names the region searched and its box)
    searches: list[str] = []
    answers: list[dict] = []

    def on_response(response: Any) -> None:
        if response.request.method == "POST" and "/v1/search" in response.url and response.ok:
            searches.append(response.url)
            answers.append(response.json())

    page.on("response", on_response)
    try:
        page.goto(f"{api_server.url}/")
        page.set_input_files("[data-testid=file-input]", str(photo))
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        whole = _ids(page)
        assert answers[-1]["crop_mode"] != "box"

        # the right half: the request carries the box, the answer is that half's item
        with page.expect_response(_search_answer, timeout=30_000):
            _drag(page, 0.55, 0.05, 0.97, 0.95)
        page.wait_for_function(
            f"() => document.querySelector('[data-testid=result-card]')"
            f"?.dataset.itemId === '{right['item_id']}'",
            timeout=30_000,
        )
        assert answers[-1]["crop_mode"] == "box"
        x0, y0, x1, y1 = answers[-1]["results"][0]["box"]
        assert abs(x0 - 0.55) < 0.02 and abs(y0 - 0.05) < 0.02
        assert abs(x1 - 0.97) < 0.02 and abs(y1 - 0.95) < 0.02
        boxed = _ids(page)
        assert boxed != whole
        assert page.is_visible("[data-testid=user-box]")
        assert page.is_visible("[data-testid=whole-photo]")

        # one price format: what the API says, on every card; no raw "% match"
        shown = page.eval_on_selector_all(
            "[data-testid=result-card] .price", "els => els.map(e => e.textContent)"
        )
        assert shown == [r["price_text"] for r in answers[-1]["results"]]
        assert all(text.endswith(" per rental") for text in shown)
        assert "% match" not in page.inner_text("[data-testid=results]")

        # "Show more": a second page of results, no card twice
        with page.expect_response(_search_answer, timeout=30_000):
            page.click("[data-testid=show-more]")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=result-card]').length > 20",
            timeout=30_000,
        )
        more = _ids(page)
        assert len(more) == 40 and len(set(more)) == 40 and more[:20] == boxed
        assert "k=40" in searches[-1] and answers[-1]["crop_mode"] == "box"

        # open a card far down the page, then come back: same results, same place, same box
        card = page.locator("[data-testid=result-card]").nth(30)
        card.scroll_into_view_if_needed()
        scrolled = page.evaluate("() => window.scrollY")
        assert scrolled > 200
        target = more[30]
        card.click()
        page.wait_for_url(f"**/items/{target}")
        page.wait_for_selector("[data-testid=item-details]")
        assert page.inner_text("[data-testid=item-price]").endswith(" per rental")
        sent = len(searches)
        page.click("[data-testid=back-to-results]")
        page.wait_for_url(f"{api_server.url}/")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=result-card]').length === 40",
            timeout=30_000,
        )
        assert _ids(page) == more
        # the page scrolls back once the first cards' photos have decoded (their heights
        # settle the layout), a moment after the cards appear: wait for it, then check it
        page.wait_for_function(f"() => Math.abs(window.scrollY - {scrolled}) < 40", timeout=10_000)
        assert abs(page.evaluate("() => window.scrollY") - scrolled) < 40
        assert page.is_visible("[data-testid=user-box]") and page.is_visible(
            "[data-testid=preview]"
        )
        assert len(searches) == sent  # restored, not searched again

        # "Search whole photo" (the keyboard way out of a box) searches the whole photo again
        page.focus("[data-testid=whole-photo]")
        with page.expect_response(_search_answer, timeout=30_000):
            page.keyboard.press("Enter")
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=user-box]')", timeout=30_000
        )
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=result-card]').length === 20",
            timeout=30_000,
        )
        assert answers[-1]["crop_mode"] != "box"
        page.screenshot(path=str(artifacts_dir / "search-box.png"), full_page=True)
    finally:
        page.close()
    assert not problems, problems


def test_the_back_link_of_an_item_page_restores_the_results_after_a_reload(
    shopper_context: Any, api_server: harness.ApiServer, demo_catalog: Path
) -> None:
    """Back when history cannot help (the item page opened anew): the kept search returns."""
    rows = harness.demo_items(demo_catalog / "items.csv")
    row = next(iter(rows.values()))
    page = shopper_context.new_page()
    try:
        page.goto(f"{api_server.url}/")
        page.set_input_files("[data-testid=file-input]", str(demo_catalog / row["image"]))
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        ids = _ids(page)
        page.goto(f"{api_server.url}/items/{ids[3]}")  # typed, not clicked: no referrer
        back = page.locator("[data-testid=back-to-results]")
        assert "Back to results" in back.inner_text()
        back.click()
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        assert _ids(page) == ids
        assert page.is_visible("[data-testid=preview]")
    finally:
        page.close()
