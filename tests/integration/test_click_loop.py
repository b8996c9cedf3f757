"""The click loop, closed: real clicks on "similar items" train a head that is registered.

Real app (TestClient), real events store and export command, real catalog media, real ONNX
backbone and torch training (a small frozen head), a real registry version.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lookalike.catalog import CatalogStore
from lookalike.cli.main import app as main_app
from lookalike.core.errors import InvalidInput
from lookalike.core.images import load_image_file
from lookalike.core.settings import Settings
from lookalike.embed import load_embedder
from lookalike.registry import Registry
from lookalike.serve.app import create_app
from lookalike.training.clicks import read_click_pairs

QUERY_ITEMS = [f"LK-{i:04d}" for i in range(1, 49)]


def _click(client: TestClient, item: str, position: int) -> tuple[str, str]:
    """Open ``item``'s similar items and click the result at ``position``; the clicked id."""
    r = client.get(f"/v1/items/{item}/similar?k=5")
    assert r.status_code == 200, r.text
    body = r.json()
    clicked = body["results"][position - 1]["item_id"]
    event = {
        "type": "click",
        "request_id": body["request_id"],
        "item_id": clicked,
        "position": position,
        "query_item_id": item,
        "surface": "similar",
    }
    r = client.post("/v1/events", json={"events": [event]})
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    return item, clicked


@pytest.fixture()
def clicked_home(fresh_demo_home: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A demo home whose events hold real clicks: one per query item, twice for a few."""
    clicks = []
    with TestClient(create_app(Settings(home=fresh_demo_home))) as client:
        for item in QUERY_ITEMS:
            clicks.append(_click(client, item, 1))
        for item in QUERY_ITEMS[:4]:  # opened again and clicked again: 2 clicks on one pair
            clicks.append(_click(client, item, 1))
    return fresh_demo_home, clicks


def _flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def _export(runner: CliRunner, out: Path) -> list[dict[str, str]]:
    result = runner.invoke(main_app, ["events", "export-pairs", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def test_exported_clicks_train_a_registered_candidate(
    clicked_home: tuple[Path, list[tuple[str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, clicks = clicked_home
    monkeypatch.setenv("LOOKALIKE_HOME", str(home))
    runner = CliRunner()
    rows = _export(runner, tmp_path / "pairs.csv")
    pairs = {(q, c) for q, c in clicks}
    assert {(r["query_item_id"], r["clicked_item_id"]) for r in rows} == pairs
    assert sum(int(r["clicks"]) for r in rows) == len(clicks)

    # An item retired from the catalog after it was clicked: its pairs are skipped and counted.
    settings = Settings(home=home)
    retired = rows[0]["clicked_item_id"]
    store = CatalogStore(settings.db_url, settings.media_dir)
    store.delete_item(retired)
    store.close()
    gone = [r for r in rows if retired in (r["query_item_id"], r["clicked_item_id"])]
    kept = [r for r in rows if r not in gone]

    registry = Registry(settings.models_dir, "model")
    production = registry.aliases("effnet_lite0")["production"]
    out = tmp_path / "candidate.json"
    args = ["models", "train-embedding", "--clicks", str(tmp_path / "pairs.csv")]
    args += ["--epochs", "5", "--dim", "32", "--colour-weight", "0", "--no-augment"]
    args += ["--cache", str(tmp_path / "cache"), "--json", str(out)]
    result = runner.invoke(main_app, args)
    assert result.exit_code == 0, result.output
    assert f"skipped {len(gone)} of {len(rows)} clicked pairs" in _flat(result.output)

    doc = json.loads(out.read_text())
    training = doc["training"]
    assert training["source"] == "clicks" and training["click_pairs"] == len(rows)
    assert training["training_pairs"] == training["pairs"] == len(kept)
    assert training["skipped_unknown_items"] == len(gone)
    assert training["clicks"] == sum(int(r["clicks"]) for r in kept)
    assert training["fit_pairs"] + training["held_out_pairs"] == len(kept)
    assert doc["query_crop"] == "whole"  # the query is a catalog photo, as similar items embeds
    held = doc["figures"]["train-holdout"]
    assert set(held["recall"]) == {"@1", "@5", "@10", "@20"} and 0 < held["map"] <= 1

    # Registered, verified, not promoted, and it serves 32-d unit vectors.
    ref = registry.resolve(doc["ref"])
    assert (
        ref.version != production and registry.aliases("effnet_lite0")["production"] == production
    )
    assert registry.verify(ref) == []
    emb = load_embedder(registry, ref, runtime="onnx-cpu")
    store = CatalogStore(settings.db_url, settings.media_dir)
    item = store.get_item(kept[0]["query_item_id"])
    photo = store.media_path(item.images[0])
    store.close()
    vector = emb.embed([load_image_file(photo)], role="query")
    assert vector.shape == (1, 32)
    assert abs(float((vector**2).sum()) - 1.0) < 1e-4


def test_a_file_that_is_not_an_export_is_refused_with_the_fix(
    fresh_demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=fresh_demo_home)
    store = CatalogStore(settings.db_url, settings.media_dir)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("item_id,person,product\nLK-0001,a.jpg,b.jpg\n")
    with pytest.raises(InvalidInput, match="export-pairs"):
        read_click_pairs(wrong, store)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("query_item_id,clicked_item_id,clicks\nNOPE-1,NOPE-2,3\nLK-0001,NOPE-3,1\n")
    with pytest.raises(InvalidInput, match="none of its 2 clicked pairs"):
        read_click_pairs(unknown, store)
    bad = tmp_path / "bad.csv"
    bad.write_text("query_item_id,clicked_item_id,clicks\nLK-0001,LK-0002,many\n")
    with pytest.raises(InvalidInput, match="line 2: clicks must be a whole number"):
        read_click_pairs(bad, store)
    store.close()

    # Through the command: a clear error, exit code 1, nothing registered.
    monkeypatch.setenv("LOOKALIKE_HOME", str(fresh_demo_home))
    registry = Registry(settings.models_dir, "model")
    before = registry.versions("effnet_lite0")
    result = CliRunner().invoke(main_app, ["models", "train-embedding", "--clicks", str(unknown)])
    assert result.exit_code == 1 and "none of its 2 clicked pairs" in _flat(result.output)
    assert registry.versions("effnet_lite0") == before
    both = ["models", "train-embedding", "--clicks", str(unknown), "--pairs", str(wrong)]
    result = CliRunner().invoke(main_app, both)
    assert result.exit_code == 1 and "one source of training pairs" in _flat(result.output)
