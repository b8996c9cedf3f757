"""Real-browser harness shared by the e2e tests and ``benchmarks/bench_extension.py``.

Starts a real ``lookalike serve`` on 127.0.0.1, a tiny static page server, and Debian's Chromium
with the unpacked extension loaded (Playwright, persistent context). Nothing here is mocked.
"""

from __future__ import annotations

import base64
import csv
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXTENSION_SRC = REPO / "extension"
CHROMIUM = Path(os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium"))

# Test-only public key: it pins the unpacked extension's id, so the server's CORS list can name
# it before the browser starts. The packed zip never carries a key.
TEST_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs2rHYuURLP7b/6lz43VE2AUT0UVYcxSqq5PqBlVVLuou"
    "utggcFnBnf4xMSxw4LjvqzlLPc+UGV+fHWGgN+4OOqaumKzISktFVnzh5lc3UbOJYnXG9AO3syb6Y2AWpkTFA6ZR"
    "pV72UKLjWVazq2x5+g5xWppUhi7vTSL3HbvIC2zg6IA3j9lACq0vN1lVFGFS3vDMIsm1DM3lXbEW/RbMBIDa2w0s"
    "pPlgR/aiBnaMkmtNpfkAEL+9sRbONTL4L822HwyKJFAg8a72TliAoRwG/TQN61Kr6BmGVOHfw4x9c/yxb5UptFrf"
    "SYGssv6osYyZFHVYsnH4k0HDNRapdCnrUwIDAQAB"
)
TEST_EXTENSION_ID = "hpmdkmkcapnchkboolilidgfihjaghpg"
EXTENSION_ORIGIN = f"chrome-extension://{TEST_EXTENSION_ID}"


@dataclass(frozen=True)
class ApiServer:
    url: str
    api_key: str
    home: Path | None


@dataclass(frozen=True)
class TestSite:
    """Local test pages; ``__test__`` keeps pytest from collecting this class."""

    __test__ = False
    url: str
    image_item: dict[str, str]  # the demo catalog row of the image on every page
    other_item: dict[str, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lookalike_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli", *args]


def run_cli(home: Path, *args: str, timeout: float = 900) -> str:
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    done = subprocess.run(
        lookalike_cmd(*args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"lookalike {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_home(home: Path, models: Path, demo_csv: Path) -> Path:
    """A LOOKALIKE_HOME with the given models/, the demo catalog imported and indexed."""
    if not (home / "models").exists():
        shutil.copytree(models, home / "models")
    run_cli(home, "catalog", "import", str(demo_csv))
    run_cli(home, "index", "build")
    return home


def create_key(home: Path, name: str) -> str:
    out = run_cli(home, "keys", "create", name, "--json")
    return str(json.loads(out.strip().splitlines()[-1])["secret"])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None
    log: Path | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(home: Path, log: Path, *, rate_per_minute: int = 100_000) -> Server:
    """``lookalike serve`` on a free port; waits until /health answers."""
    port = free_port()
    env = {
        **os.environ,
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_EXTENSION__ORIGINS": json.dumps([EXTENSION_ORIGIN]),
        "LOOKALIKE_EXTENSION__RATE_PER_MINUTE": str(rate_per_minute),
    }
    handle = log.open("wb")
    process = subprocess.Popen(
        lookalike_cmd("serve", "--host", "127.0.0.1", "--port", str(port)),
        cwd=REPO,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"lookalike serve exited:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"lookalike serve did not answer /health:\n{log.read_text()}")


def demo_items(demo_csv: Path) -> dict[str, dict[str, str]]:
    """Image file name -> the demo catalog row that uses it."""
    with demo_csv.open(newline="", encoding="utf-8") as f:
        return {Path(row["image"]).name: row for row in csv.DictReader(f)}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def page_server(root: Path) -> Iterator[str]:
    """Static files from ``root`` on http://127.0.0.1:<port>."""

    def handler(*args: Any, **kwargs: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_test_pages(root: Path, image: Path, other: Path) -> dict[str, str]:
    """Pages with the query image as <img>, data: URL, blob: URL and CSS background."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(image, root / "dress.jpg")
    shutil.copy(other, root / "other.jpg")
    b64 = base64.b64encode(image.read_bytes()).decode()
    style = "body{margin:0;font:16px sans-serif} .pad{height:40px}"
    pages = {
        "image.html": f"""<!doctype html><style>{style}</style><div class=pad>A magazine</div>
<img id=dress src="dress.jpg" width=300 alt="a dress"><img id=other src="other.jpg" width=200>""",
        "data.html": f"""<!doctype html><style>{style}</style>
<img id=dress src="data:image/jpeg;base64,{b64}" width=300>""",
        "blob.html": f"""<!doctype html><style>{style}</style><img id=dress width=300>
<script>fetch("dress.jpg").then(r => r.blob()).then(b => {{
  const img = document.getElementById("dress"); img.src = URL.createObjectURL(b);
  img.onload = () => document.body.dataset.ready = "1"; }});</script>""",
        "background.html": f"""<!doctype html><style>{style}
#look{{position:absolute;left:80px;top:60px;width:300px;height:400px;
background:url(dress.jpg) center/100% 100% no-repeat}}</style>
<div id=look></div><p style="position:absolute;top:480px">An outfit in a CSS background</p>""",
    }
    for name, html in pages.items():
        (root / name).write_text(html, encoding="utf-8")
    return {name: name for name in pages}


def write_gallery(root: Path, images: list[Path]) -> str:
    """A page showing ``images`` (copied as g<n>.jpg); returns the page's file name."""
    root.mkdir(parents=True, exist_ok=True)
    tags = []
    for n, image in enumerate(images):
        shutil.copy(image, root / f"g{n}.jpg")
        tags.append(f'<img src="g{n}.jpg" width=160 alt="">')
    (root / "gallery.html").write_text("<!doctype html>" + "".join(tags), encoding="utf-8")
    return "gallery.html"


def extension_copy(target: Path) -> Path:
    """The unpacked extension with the test key added (stable id ``TEST_EXTENSION_ID``)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(EXTENSION_SRC, target)
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    manifest["key"] = TEST_KEY
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return target


# This machine's network is closed: no background fetches, no component updates.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-gpu",
)


def launch(
    playwright: Any,
    extension: Path,
    profile: Path,
    *,
    headless: bool = True,
    display: str | None = None,
) -> Any:
    """A persistent Chromium context with only our extension loaded (headed on ``display``)."""
    env = {**os.environ, "DISPLAY": display} if display else None
    return playwright.chromium.launch_persistent_context(
        str(profile),
        env=env,
        executable_path=str(CHROMIUM),
        headless=headless,
        # No emulated viewport: captureVisibleTab sees the real window, so the page's CSS
        # pixels must be the window's.
        no_viewport=True,
        args=[
            f"--disable-extensions-except={extension}",
            f"--load-extension={extension}",
            *CHROMIUM_ARGS,
            "--window-size=1000,800",
        ],
    )


def launch_plain(playwright: Any) -> Any:
    """A headless Chromium without the extension: what a shopper or a moderator has open."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
    )


def service_worker(context: Any) -> Any:
    for worker in context.service_workers:
        if TEST_EXTENSION_ID in worker.url:
            return worker
    return context.wait_for_event(
        "serviceworker", predicate=lambda w: TEST_EXTENSION_ID in w.url, timeout=30_000
    )


CLICK_IMAGE_JS = """async ([pageUrl, srcUrl]) => {
  const [tab] = await chrome.tabs.query({ url: pageUrl });
  if (!tab) throw new Error("no tab for " + pageUrl);
  return lookalike.onMenuClick(
    { menuItemId: "lookalike-image", srcUrl, pageUrl, frameId: 0, mediaType: "image" }, tab);
}"""

START_AREA_JS = """async (pageUrl) => {
  const [tab] = await chrome.tabs.query({ url: pageUrl });
  return lookalike.onMenuClick({ menuItemId: "lookalike-area", pageUrl, frameId: 0 }, tab);
}"""


class Extension:
    """Drives the loaded extension: configure it, open its pages, invoke its handlers."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.worker = service_worker(context)
        self.base = f"chrome-extension://{TEST_EXTENSION_ID}"

    def reset(self, server: str, api_key: str) -> None:
        self.worker.evaluate(
            """async ([server, apiKey]) => {
                await chrome.storage.session.clear();
                await chrome.storage.local.clear();
                await chrome.storage.local.set({ server, apiKey });
            }""",
            [server, api_key],
        )

    def configure(self, server: str, api_key: str) -> None:
        self.worker.evaluate(
            "([server, apiKey]) => chrome.storage.local.set({ server, apiKey })",
            [server, api_key],
        )

    def open(self, page_name: str) -> Any:
        page = self.context.new_page()
        page.goto(f"{self.base}/{page_name}")
        return page

    def click_image(self, page: Any, src: str) -> str:
        """What the context-menu click does, for the image whose URL is ``src``."""
        return str(self.worker.evaluate(CLICK_IMAGE_JS, [page.url, src]))

    def start_area(self, page: Any) -> None:
        self.worker.evaluate(START_AREA_JS, page.url)

    def searches(self) -> list[dict[str, Any]]:
        return list(
            self.worker.evaluate(
                "async () => (await chrome.storage.session.get({searches: []})).searches"
            )
        )


def click_toolbar_button(context: Any, page: Any, button_id: str = "area") -> None:
    """Click the toolbar button on ``page``'s tab, then a button of the popup it opens.

    ``Extensions.triggerAction`` is the browser's own action click (it grants activeTab, as a
    person's click does); the popup button is clicked with a user gesture, so the popup may
    open the side panel.
    """
    session = context.browser.new_browser_cdp_session()
    try:
        tabs = session.send("Target.getTargets", {"filter": [{"type": "tab"}]})["targetInfos"]
        tab = next(t for t in tabs if t["url"] == page.url)
        session.send(
            "Extensions.triggerAction", {"id": TEST_EXTENSION_ID, "targetId": tab["targetId"]}
        )
        popup = None
        deadline = time.monotonic() + 10
        while popup is None and time.monotonic() < deadline:
            targets = session.send("Target.getTargets")["targetInfos"]
            popup = next((t for t in targets if t["url"].endswith("/popup.html")), None)
            time.sleep(0.05)
        if popup is None:
            raise RuntimeError("the toolbar popup did not open")
        attached = session.send(
            "Target.attachToTarget", {"targetId": popup["targetId"], "flatten": False}
        )
        # The popup's script may still be loading: click once its button exists.
        expression = f"""new Promise(resolve => {{
            const go = () => {{ const b = document.getElementById({json.dumps(button_id)});
              if (b) {{ b.click(); resolve(true); }} else setTimeout(go, 20); }};
            go(); }})"""
        message = {
            "id": 1,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "userGesture": True, "awaitPromise": True},
        }
        session.send(
            "Target.sendMessageToTarget",
            {"sessionId": attached["sessionId"], "message": json.dumps(message)},
        )
    finally:
        session.detach()


def drag(page: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
