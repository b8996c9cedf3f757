"""``lookalike refresh`` on real catalogs: incremental update, data checks, lock, SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike.catalog import CatalogStore
from lookalike.core.settings import Settings
from lookalike.jobs.refresh import EXIT_BUSY, run_refresh
from lookalike.registry import Ref, Registry

FIELDS = ["item_id", "title", "category", "price", "available", "image"]


def _demo_rows(demo_catalog: Path) -> list[dict[str, str]]:
    with open(demo_catalog / "items.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["image"] = str(demo_catalog / row["image"])
    return rows


def _write(path: Path, rows: list[dict[str, str]], fields: list[str] = FIELDS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _new_items(rows: list[dict[str, str]], folder: Path, n: int, noise: bool = False) -> list:
    """``n`` new items: mirrored copies of demo photos (new bytes), or pure noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = []
    for i, src in enumerate(rows[:n]):
        path = folder / f"new-{i}.jpg"
        if noise:
            Image.fromarray(rng.integers(0, 256, (320, 240, 3), dtype=np.uint8)).save(path)
        else:
            ImageOps.mirror(Image.open(src["image"]).convert("RGB")).save(path, quality=92)
        out.append({**src, "item_id": f"NEW-{i:03d}", "title": f"new {i}", "image": str(path)})
    return out


def _production(home: Path) -> str:
    return str(Registry(home / "index", "index").resolve(Ref("catalog", "production")))


def _items(home: Path) -> int:
    settings = Settings(home=home)
    with CatalogStore(settings.db_url, settings.media_dir) as store:
        return store.count_items()


def test_refresh_updates_only_changes_and_promotes(fresh_demo_home, demo_catalog, tmp_path):
    rows = _demo_rows(demo_catalog)
    kept = [r for r in rows if r["item_id"] not in {f"LK-{i:04d}" for i in range(401, 411)}]
    added = _new_items(rows, tmp_path / "new", 12)
    catalog_file = _write(tmp_path / "feed.csv", kept + added)
    settings = Settings(home=fresh_demo_home)
    before = _production(fresh_demo_home)

    outcome = run_refresh(settings, catalog_file=catalog_file, images_root=Path("/"))

    assert outcome.status == "promoted", outcome.summary
    assert outcome.exit_code == 0
    after = _production(fresh_demo_home)
    assert after != before
    manifest = Registry(fresh_demo_home / "index", "index").manifest(after)
    assert (manifest["added"], manifest["removed"]) == (12, 10)  # embedded the changes only
    assert manifest["built_by"] == f"update of {before}"
    assert manifest["checks"]["passed"] is True
    assert _items(fresh_demo_home) == 430 - 10 + 12
    saved = json.loads(outcome.report_path.read_text())
    assert saved["status"] == "promoted" and saved["import"]["items_removed"] == 10
    assert outcome.report_path.with_suffix(".txt").read_text().startswith("refresh ")

    again = run_refresh(settings, catalog_file=catalog_file, images_root=Path("/"))
    assert again.status == "up_to_date" and _production(fresh_demo_home) == after


def _stopped(home: Path, catalog_file: Path, expect: str) -> None:
    before, items = _production(home), _items(home)
    outcome = run_refresh(Settings(home=home), catalog_file=catalog_file, images_root=Path("/"))
    assert outcome.status == "stopped" and outcome.exit_code == 1
    assert expect in outcome.summary, outcome.summary
    assert _production(home) == before  # production stays
    assert _items(home) == items  # nothing imported
    assert Registry(home / "index", "index").versions("catalog") == [before.split(":")[1]]


def test_missing_column_stops_refresh(fresh_demo_home, demo_catalog, tmp_path):
    fields = [f for f in FIELDS if f != "price"]
    feed = _write(tmp_path / "feed.csv", _demo_rows(demo_catalog), fields)
    _stopped(fresh_demo_home, feed, "schema: feed.csv lacks columns: price")


def test_many_missing_images_stop_refresh(fresh_demo_home, demo_catalog, tmp_path):
    rows = _demo_rows(demo_catalog)
    for row in rows[: int(len(rows) * 0.3)]:
        row["image"] = str(tmp_path / "gone" / Path(row["image"]).name)
    _stopped(fresh_demo_home, _write(tmp_path / "feed.csv", rows), "missing images")


def test_unreadable_images_count_as_rejected(fresh_demo_home, demo_catalog, tmp_path):
    rows = _demo_rows(demo_catalog)
    for i, row in enumerate(rows[:40]):
        broken = tmp_path / f"broken-{i}.jpg"
        broken.write_bytes(Path(row["image"]).read_bytes()[:300])  # a truncated JPEG
        row["image"] = str(broken)
    _stopped(fresh_demo_home, _write(tmp_path / "feed.csv", rows), "40 with unreadable images")


def test_dropping_half_the_catalog_stops_refresh(fresh_demo_home, demo_catalog, tmp_path):
    rows = _demo_rows(demo_catalog)[::2]
    _stopped(
        fresh_demo_home, _write(tmp_path / "feed.csv", rows), "would remove 215 of 430 catalog"
    )


def test_duplicate_ids_stop_refresh(fresh_demo_home, demo_catalog, tmp_path):
    rows = _demo_rows(demo_catalog)
    feed = _write(tmp_path / "feed.csv", rows + [dict(rows[3], title="again")])
    _stopped(fresh_demo_home, feed, "duplicate item id")


def test_noise_images_stop_refresh_by_drift(fresh_demo_home, demo_catalog, tmp_path):
    rows = _demo_rows(demo_catalog)
    feed = _write(tmp_path / "feed.csv", rows + _new_items(rows, tmp_path / "noise", 20, True))
    _stopped(fresh_demo_home, feed, "embedding_drift: new images do not look like the catalog")


# -- a real process: the lock, and SIGKILL in the middle of embedding ---------------------------
def _refresh_command() -> list[str]:
    from lookalike.cli.main import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    # Until the main app mounts `refresh`, the same command runs from its own module.
    module = "lookalike.cli" if "refresh" in names else "lookalike.cli.refresh"
    return [sys.executable, "-m", module, "refresh"]


def test_second_run_waits_and_a_killed_run_leaves_nothing_visible(
    home_with_model, demo_catalog, tmp_path
):
    home = home_with_model
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    command = [*_refresh_command(), "--catalog", str(demo_catalog / "items.csv")]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:  # wait until it is embedding (after the catalog import)
            if line.startswith("embedding ") and not line.startswith("embedding 0/"):
                break
        else:
            pytest.fail(f"the refresh ended before embedding (exit {first.wait()})")

        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == EXIT_BUSY
        assert f"another refresh is running (pid {first.pid})" in second.stdout
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    indexes = Registry(home / "index", "index")
    assert indexes.versions("catalog") == []  # no version became visible
    assert indexes.aliases("catalog") == {}
    folder = home / "index" / "catalog"
    leftovers = [p.name for p in folder.iterdir()] if folder.exists() else []
    assert all(name.startswith(".tmp-") for name in leftovers), leftovers

    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "promoted" in third.stdout
    assert indexes.resolve(Ref("catalog", "production")).version == "1"
