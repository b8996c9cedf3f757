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
    browser_context: Any,
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

    page = browser_context.new_page()
    try:
        page.goto(f"{api_server.url}/")
        page.set_input_files("[data-testid=file-input]", str(photo))
        page.wait_for_selector("[data-testid=result-card]", timeout=30_000)
        cards = page.locator("[data-testid=result-card]")
        assert cards.count() == 20
        assert cards.first.get_attribute("data-item-id") == row["item_id"]
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
    browser_context: Any, api_server: harness.ApiServer, tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.jpg"
    bogus.write_bytes(b"these are my notes, not a photo")
    page = browser_context.new_page()
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
