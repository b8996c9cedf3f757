"""The moderator's loop against a real ``lookalike serve`` (uvicorn, one worker, SQLite).

    python benchmarks/bench_moderation.py                 # 5 runs × 100 decisions
    python benchmarks/bench_moderation.py --runs 3 --posts 200 --page 0 --json out.json

Queues ``--posts`` posts per run (demo catalog photos, through the store's public API), signs a
moderator in over HTTP (login form + CSRF, as the page does), then per post: ``GET
/v1/moderation/queue?n=2`` (what the page prefetches), ``POST .../decision`` (approve with the
first match or reject, alternately; with the session's CSRF token), and for every tenth post
``GET /v1/items/{id}/reviews``. Prints median and p95 per run and over all runs, writes JSON.
The page shows the next post from its buffer without waiting for any of these, so the figures
bound how far ahead of a moderator the page can stay. ``--page N`` (default 50; needs Chromium
at /usr/bin/chromium or LOOKALIKE_CHROMIUM, and Playwright) then times N key presses in the real
page: from the key press to the next post shown with its photo decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from harness import serving

from lookalike.core.settings import Settings
from lookalike.moderation.posts import Post, PostScore
from lookalike.moderation.store import ModerationStore

REPO = Path(__file__).resolve().parents[1]
ITEMS = ("LK-0001", "LK-0002", "LK-0003")
PASSWORD = "bench password 123"


def _queue(store: ModerationStore, run: int, n: int) -> None:
    photos = sorted((REPO / "demo" / "catalog" / "images").glob("*.jpg"))
    posts = [
        Post(f"r{run}-{i}", "bench", caption=f"#{i}", author="ana", image_path=photos[i % 120])
        for i in range(n)
    ]
    store.upsert_posts(posts)
    matches = [(m, 0.9 - 0.1 * k) for k, m in enumerate(ITEMS)]
    store.record_scores(
        [
            PostScore(
                p.post_id,
                0.9,
                True,
                0.0,
                matches,
                None,
                "prefilter:bench",
                "bench:1",
                enqueue=True,
                priority=float(n - i),
            )
            for i, p in enumerate(posts)
        ]
    )


def _sign_in(client: httpx.Client) -> str:
    page = client.get("/moderation/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None, page[:300]
    form = {"username": "bench", "password": PASSWORD, "csrf_token": token.group(1)}
    r = client.post("/moderation/login", data=form)
    assert r.status_code == 303, r.text
    return str(client.get("/v1/moderation/session").json()["csrf_token"])


def _summary(samples: list[float]) -> dict:
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(float(np.percentile(samples, 95)), 3),
    }


def _one_run(client: httpx.Client, csrf: str, posts: int) -> dict[str, list[float]]:
    timed: dict[str, list[float]] = {"queue": [], "decision": [], "reviews": []}

    def clock(name: str, call) -> httpx.Response:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = call()
        timed[name].append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text
        return response

    for i in range(posts):
        shown = clock("queue", lambda: client.get("/v1/moderation/queue?n=2")).json()["posts"]
        post = shown[0]
        body = {"action": "approve", "item_id": post["matches"][0]["item_id"]}
        if i % 2:
            body = {"action": "reject"}
        url = f"/v1/moderation/posts/{post['post_id']}/decision"
        clock(
            "decision", lambda u=url, b=body: client.post(u, json=b, headers={"X-CSRF-Token": csrf})
        )
        if i % 10 == 0:
            clock("reviews", lambda: client.get(f"/v1/items/{ITEMS[0]}/reviews"))
    return timed


# When the page shows a new post and its photo is decoded (the preload's effect).
_SHOWN = """prev => {
  const post = document.querySelector('[data-testid=post]');
  const img = document.querySelector('[data-testid=post-photo]');
  return post.dataset.postId !== prev && !post.hidden && img.complete && img.naturalWidth > 0;
}"""


def _page_run(base: str, posts: int) -> list[float]:
    """Key press → the next post shown with its photo decoded, in headless Chromium (ms).

    Measured from Python around Playwright (its round trips included: an upper bound)."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium")
    samples: list[float] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/moderation/login")
        page.fill("[data-testid=username]", "bench")
        page.fill("[data-testid=password]", PASSWORD)
        page.click("[data-testid=sign-in]")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        for i in range(posts):
            shown = page.get_attribute("[data-testid=post]", "data-post-id")
            page.wait_for_timeout(150)  # a moderator looks at the post: the prefetch catches up
            start = time.perf_counter()
            page.keyboard.press("r" if i % 2 else "s")
            page.wait_for_function(_SHOWN, arg=shown, timeout=30_000, polling="raf")
            samples.append((time.perf_counter() - start) * 1000)
        browser.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--posts", type=int, default=100)
    ap.add_argument("--json", type=Path, default=Path("artifacts/bench_moderation.json"))
    ap.add_argument("--page", type=int, default=50, help="key presses timed in Chromium (0: none)")
    args = ap.parse_args()
    page: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-moderation-") as tmp:
        home = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lookalike.cli",
                "catalog",
                "import",
                str(REPO / "demo" / "catalog" / "items.csv"),
            ],
            env={**os.environ, "LOOKALIKE_HOME": str(home)},
            check=True,
            capture_output=True,
        )
        store = ModerationStore.from_settings(Settings(home=home))
        store.create_schema()
        store.create_account("bench", PASSWORD, "moderator")
        runs: list[dict] = []
        with serving(home, lambda c: c.get("/health")) as client:
            csrf = _sign_in(client)
            _queue(store, 0, 20)
            _one_run(client, csrf, 20)  # warm-up
            for run in range(1, args.runs + 1):
                _queue(store, run, args.posts)
                runs.append({"run": run, **_one_run(client, csrf, args.posts)})
            if args.page:
                _queue(store, 99, args.page + 5)
                page = _page_run(str(client.base_url).rstrip("/"), args.page)
    names = ("queue", "decision", "reviews")
    print(f"moderator loop, one uvicorn worker on 127.0.0.1, SQLite, {args.posts} posts per run")
    print(f"{'run':>4}" + "".join(f" {n + ' med':>13} {n + ' p95':>13}" for n in names))
    total = {n: _summary([s for r in runs for s in r[n]]) for n in names}
    for r in runs:
        parts = [_summary(r[n]) for n in names]
        print(
            f"{r['run']:>4}"
            + "".join(f" {p['median_ms']:>13.2f} {p['p95_ms']:>13.2f}" for p in parts)
        )
        for n, p in zip(names, parts, strict=True):
            r[n] = p
    print(
        " all"
        + "".join(f" {total[n]['median_ms']:>13.2f} {total[n]['p95_ms']:>13.2f}" for n in names)
    )
    if page:
        shown = _summary(page)
        print(
            f"key press → next post shown (Chromium, {shown['n']} presses): median "
            f"{shown['median_ms']:.1f} ms, p95 {shown['p95_ms']:.1f} ms"
        )
        total["page_key_to_next_post"] = shown
    doc = {
        "benchmark": "bench_moderation",
        "posts_per_run": args.posts,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
        "total": total,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
