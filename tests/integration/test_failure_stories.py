"""Failure stories of the serving layer, each with real processes (the `lookalike` CLI, uvicorn).

- A real catalog in which different items share a byte-identical photo (one photo for two colour
  variants): the first `lookalike index build` passes its checks and serves.
- The freshness alarm and `lookalike refresh` agree: a price change is no alarm; a removed item
  is, and one `lookalike refresh` clears it on the running server.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from live import live_server, run_cli
from PIL import Image, ImageOps

FIELDS = ["item_id", "title", "category", "price", "available", "image"]


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, **env)


def _rows(demo_catalog: Path) -> list[dict[str, str]]:
    with open(demo_catalog / "items.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@contextmanager
def _server(home: Path, **env: str) -> Iterator[str]:
    with live_server(home, **env) as server:
        yield server.base


def test_items_sharing_one_photo_index_and_serve(home_with_model: Path, demo_catalog: Path) -> None:
    """Golden items are absent, so the index is checked by self-retrieval, where a tie with a
    byte-identical photo of another item used to count as a miss and refuse the build."""
    home = home_with_model
    photos = _rows(demo_catalog)[:40]
    rows = []
    for i, row in enumerate(photos):
        for colour in ("black", "navy"):  # two variants, one photo
            rows.append(
                {
                    **row,
                    "item_id": f"VAR-{i:03d}-{colour}",
                    "title": f"{row['title']} ({colour})",
                    "image": str(demo_catalog / row["image"]),
                }
            )
    feed = _write(home / "variants.csv", rows)
    out = _cli(home, "catalog", "import", str(feed), "--images", str(demo_catalog))
    assert out.returncode == 0, out.stdout + out.stderr
    out = _cli(home, "index", "build")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "catalog:1 is production" in out.stdout, out.stdout
    with _server(home) as base:
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["status"] == "ok", health
        assert health["index"]["vectors"] == len(rows)
        r = httpx.get(f"{base}/v1/items/VAR-003-black/similar", params={"k": 3}, timeout=30)
        assert r.status_code == 200, r.text
        # its twin (the same photo) is the closest item
        assert r.json()["results"][0]["item_id"] == "VAR-003-navy"


def test_refresh_clears_the_alarm_health_raises(fresh_demo_home: Path, demo_catalog: Path) -> None:
    home = fresh_demo_home
    # the business's feed folder: its photos (image paths stay inside --images)
    feed_dir = home / "feed"
    shutil.copytree(demo_catalog / "images", feed_dir / "images")
    rows = _rows(demo_catalog)
    for row in rows:
        row["image"] = str(feed_dir / row["image"])
    # stale as soon as the index is behind at all, so /health says degraded at once
    env = {"LOOKALIKE_SERVING__INDEX_MAX_AGE_HOURS": "0", "LOOKALIKE_SERVING__RELOAD_SECONDS": "1"}
    with _server(home, **env) as base:
        # a price change: the catalog revision moves, the index holds every image it should
        repriced = [{**r, "price": str(float(r["price"] or 0) + 5)} for r in rows]
        feed = _write(home / "repriced.csv", repriced)
        out = _cli(home, "catalog", "import", str(feed), "--images", str(feed_dir))
        assert out.returncode == 0, out.stdout + out.stderr
        health = _health_after_view_ttl(base)
        assert health["freshness"]["catalog"]["index_behind"] is False, health["freshness"]
        assert health["status"] == "ok", health["problems"]

        # five new items: their images are not in the index yet — the alarm is raised
        new_dir = feed_dir / "new"
        new_dir.mkdir()
        added = []
        for i, row in enumerate(repriced[:5]):
            path = new_dir / f"new-{i}.jpg"
            with Image.open(row["image"]) as im:
                ImageOps.mirror(im.convert("RGB")).save(path, quality=92)
            added.append({**row, "item_id": f"NEW-{i}", "title": f"new {i}", "image": str(path)})
        full = _write(home / "full.csv", repriced + added)
        out = _cli(home, "catalog", "import", str(full), "--images", str(feed_dir))
        assert out.returncode == 0, out.stdout + out.stderr
        health = _health_after_view_ttl(base)
        catalog = health["freshness"]["catalog"]
        assert catalog["index_behind"] is True and catalog["images_not_indexed"] == 5, catalog
        assert health["status"] == "degraded"
        assert any("lookalike refresh" in p for p in health["problems"]), health["problems"]

        # the runbook's step clears it on the running server
        out = _cli(home, "refresh", "--catalog", str(full), "--images", str(feed_dir))
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = httpx.get(f"{base}/health", timeout=10).json()
            if health["index"]["version"] != "catalog:1":
                break
            time.sleep(0.5)
        health = _health_after_view_ttl(base)
        assert health["freshness"]["catalog"]["index_behind"] is False, health["freshness"]
        assert health["status"] == "ok", health["problems"]
        assert health["index"]["vectors"] == len(rows) + 5


def _health_after_view_ttl(base: str) -> dict:
    time.sleep(1.2)  # the catalog view re-reads the revision at most once a second
    return httpx.get(f"{base}/health", timeout=10).json()


def test_a_damaged_alias_file_serves_what_is_valid_and_repair_fixes_it(
    fresh_demo_home: Path,
) -> None:
    """A model alias file of random bytes: the server still starts on the index's release
    and says degraded, naming the repair; `lookalike registry repair` clears it live."""
    home = fresh_demo_home
    aliases = home / "models" / "effnet_lite0" / "aliases.json"
    aliases.write_bytes(b"\x89\x00not json at all\xff")
    env = {"LOOKALIKE_SERVING__RELOAD_SECONDS": "1"}
    with _server(home, **env) as base:
        health = httpx.get(f"{base}/health", timeout=10).json()
        assert health["status"] == "degraded", health
        assert health["release"]["members"] == {"model": "effnet_lite0:1", "index": "catalog:1"}
        assert any("lookalike registry repair" in p for p in health["problems"]), health
        out = _cli(home, "models", "list")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        out = _cli(home, "registry", "repair", "--kind", "models")
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = httpx.get(f"{base}/health", timeout=10).json()
            if health["status"] == "ok":
                break
            time.sleep(0.5)
        assert health["status"] == "ok", health["problems"]
