"""E2E fixtures: a real ``lookalike serve`` over the demo catalog, and Chromium with the extension.

Skips cleanly when Chromium (``/usr/bin/chromium``, override with ``LOOKALIKE_CHROMIUM``) or
Playwright is missing. ``LOOKALIKE_E2E_SERVER`` + ``LOOKALIKE_E2E_API_KEY`` point the tests at a
server that is already running instead of starting one. Screenshots go to
``artifacts/e2e/`` (``LOOKALIKE_ARTIFACTS`` overrides the folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import extension_harness as harness  # tests/e2e is on sys.path (rootdir conftest import)
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not harness.CHROMIUM.is_file():
        pytest.skip(f"{harness.CHROMIUM} is missing: `apt-get install -y chromium` to run e2e")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    return harness.CHROMIUM


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    folder = Path(os.environ.get("LOOKALIKE_ARTIFACTS", harness.REPO / "artifacts")) / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def api_server(
    chromium: Path, tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path, request: Any
) -> Iterator[harness.ApiServer]:
    """A real ``lookalike serve`` on 127.0.0.1 with the demo catalog indexed and one API key."""
    running = os.environ.get("LOOKALIKE_E2E_SERVER")
    if running:
        yield harness.ApiServer(
            running.rstrip("/"), os.environ.get("LOOKALIKE_E2E_API_KEY", ""), None
        )
        return
    built_models: Path = request.getfixturevalue("built_models")
    home = tmp_path_factory.mktemp("e2e-home")
    harness.prepare_home(home, built_models, demo_catalog / "items.csv")
    key = harness.create_key(home, "e2e")
    server = harness.start_server(home, home / "serve.log")
    try:
        yield harness.ApiServer(server.url, key, home)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_pages(
    tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path
) -> Iterator[harness.TestSite]:
    rows = harness.demo_items(demo_catalog / "items.csv")
    by_id = {row["item_id"]: row for row in rows.values()}
    image_item, other_item = by_id["LK-0002"], by_id["LK-0120"]
    root = tmp_path_factory.mktemp("pages")
    harness.write_test_pages(
        root, demo_catalog / image_item["image"], demo_catalog / other_item["image"]
    )
    with harness.page_server(root) as url:
        yield harness.TestSite(url, image_item, other_item)


@pytest.fixture(scope="session")
def playwright(chromium: Path) -> Iterator[Any]:
    """One Playwright driver per session (the sync API cannot be started twice at once)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser_context(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with the unpacked extension (stable test id) loaded."""
    root = tmp_path_factory.mktemp("chromium")
    extension = harness.extension_copy(root / "extension")
    context = harness.launch(playwright, extension, root / "profile")
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def plain_browser(playwright: Any) -> Iterator[Any]:
    """Chromium without the extension, for the shopper's and the moderator's pages (the
    extension's content script and region select stay out of their pointer events)."""
    browser = harness.launch_plain(playwright)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture()
def shopper_context(plain_browser: Any) -> Iterator[Any]:
    """A fresh context per test (no storage carried over), a desktop-sized viewport."""
    context = plain_browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context
    finally:
        context.close()


@pytest.fixture()
def ext(browser_context: Any, api_server: harness.ApiServer) -> Iterator[harness.Extension]:
    """The loaded extension, configured for ``api_server`` with empty session state."""
    extension = harness.Extension(browser_context)
    extension.reset(api_server.url, api_server.api_key)
    try:
        yield extension
    finally:
        for page in list(browser_context.pages)[1:]:
            page.close()
