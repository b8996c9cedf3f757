"""The JSONL post importer on a real SQLite store with real photos.

Re-importing adds nothing; a missing, truncated, hostile (decompression bomb) or non-image file
is stored as ``rejected_unreadable`` with the reason; a wrong file is one clear error; photos are
stored once, with a dHash that finds the same picture re-encoded.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from lookalike.core.errors import InvalidInput
from lookalike.core.settings import Settings
from lookalike.moderation.importer import dhash, import_jsonl, parse_timestamp, store_image
from lookalike.moderation.store import ModerationStore, phash_distance


@pytest.fixture()
def store(settings: Settings) -> ModerationStore:
    made = ModerationStore.from_settings(settings)
    made.create_schema()
    return made


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def posts_for(images: list[Path]) -> list[dict]:
    return [
        {
            "post_id": f"p{i}",
            "image": p.name,
            "caption": f"my #lookalike dress {i}",
            "author": f"user{i}",
            "timestamp": f"2026-11-{i + 1:02d}T18:02:11+0000",
            "permalink": f"https://www.instagram.com/p/p{i}/",
        }
        for i, p in enumerate(images)
    ]


def test_import_then_reimport_adds_nothing(
    store: ModerationStore, settings: Settings, demo_catalog: Path, demo_images: list[Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    images = demo_images[:5]
    jsonl = write_jsonl(tmp_path / "posts.jsonl", posts_for(images))
    media = settings.var_dir / "moderation" / "media"
    first = import_jsonl(store, jsonl, demo_catalog / "images", media)
    assert (first.added, first.duplicates, first.rejected) == (5, 0, 0)
    again = import_jsonl(store, jsonl, demo_catalog / "images", media)
    assert (again.added, again.duplicates, again.rejected) == (0, 5, 0)
    stored = store.post("p3")
    assert stored.author == "user3" and stored.caption == "my #lookalike dress 3"
    assert stored.timestamp is not None and stored.timestamp.day == 4
    assert stored.image_path is not None and stored.image_path.is_relative_to(media)
    with Image.open(stored.image_path) as im:
        assert max(im.size) <= 1080 and im.format == "JPEG"
    assert {p.post_id for p in store.posts_to_score(100)} == {f"p{i}" for i in range(5)}
    # the store keeps one copy per distinct photo
    assert len(list(media.rglob("*.jpg"))) == len({p.read_bytes() for p in images})


def test_unreadable_and_hostile_images_are_rejected_with_a_reason(
    store: ModerationStore, settings: Settings, demo_images: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    good = demo_images[0].read_bytes()
    (folder / "good.jpg").write_bytes(good)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text.jpg").write_text("not a photo at all")
    # a decompression bomb: a tiny PNG that claims 30000 x 30000 pixels
    bomb = io.BytesIO()
    Image.new("L", (30000, 30000)).save(bomb, "PNG", optimize=True)
    (folder / "bomb.png").write_bytes(bomb.getvalue())
    records = [
        {"post_id": "good", "image": "good.jpg"},
        {"post_id": "truncated", "image": "truncated.jpg"},
        {"post_id": "text", "image": "text.jpg"},
        {"post_id": "bomb", "image": "bomb.png"},
        {"post_id": "missing", "image": "nowhere.jpg"},
        {"post_id": "escape", "image": "../../etc/passwd"},
        {"post_id": "url", "image_url": "http://127.0.0.1:9/x.jpg"},
        {"post_id": "noimage", "caption": "no photo"},
    ]
    result = import_jsonl(
        store, write_jsonl(tmp_path / "p.jsonl", records), folder, settings.var_dir / "m"
    )
    assert (result.added, result.rejected) == (1, 7)
    assert store.status_of("good") == ("imported", None)
    reasons = {r["post_id"]: store.status_of(r["post_id"]) for r in records[1:]}
    assert all(status == "rejected_unreadable" and reason for status, reason in reasons.values())
    assert "unreadable image" in reasons["truncated"][1]
    assert "unreadable image" in reasons["text"][1]
    assert "pixels" in reasons["bomb"][1] or "large" in reasons["bomb"][1].lower()
    assert "missing" in reasons["missing"][1]
    assert "outside" in reasons["escape"][1]
    assert "downloads are off" in reasons["url"][1]
    assert [p.post_id for p in store.posts_to_score(10)] == ["good"]
    # the photo fixed, the same post imports on the next run
    (folder / "truncated.jpg").write_bytes(good)
    fixed = import_jsonl(
        store, write_jsonl(tmp_path / "p2.jsonl", records[1:2]), folder, settings.var_dir / "m"
    )
    assert fixed.added == 1 and store.status_of("truncated") == ("imported", None)


def test_bad_lines_and_wrong_files(
    store: ModerationStore, settings: Settings, tmp_path: Path
) -> None:
    wrong = write_jsonl(tmp_path / "items.jsonl", [{"item_id": "LK-1", "title": "a dress"}])
    with pytest.raises(InvalidInput, match="not a post export.*expected post_id"):
        import_jsonl(store, wrong, None, settings.var_dir / "m")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        '{"post_id": "a", "caption": "x"}\n'
        "not json\n"
        "[1, 2]\n"
        '{"caption": "no id"}\n'
        '{"post_id": "b", "timestamp": "yesterday", "image": "b.jpg"}\n',
        encoding="utf-8",
    )
    result = import_jsonl(store, mixed, tmp_path, settings.var_dir / "m")
    text = "\n".join(result.reasons)
    assert result.added == 0 and result.rejected == 5
    assert "line 2: not JSON" in text and "line 3: not a JSON object" in text
    assert "line 4: no post_id" in text and "line 5: timestamp 'yesterday'" in text
    assert store.status_of("a")[0] == "rejected_unreadable"


def test_timestamps() -> None:
    assert parse_timestamp("2026-11-30T18:02:11+0000").isoformat() == "2026-11-30T18:02:11+00:00"
    assert parse_timestamp("2026-11-30T18:02:11Z").utcoffset().total_seconds() == 0
    assert parse_timestamp(0).year == 1970 and parse_timestamp("") is None
    with pytest.raises(InvalidInput, match="ISO 8601"):
        parse_timestamp("30/11/2026")


def test_dhash_finds_the_same_photo_reencoded(
    demo_images: list[Path], tmp_path: Path, store: ModerationStore, settings: Settings
) -> None:
    photo = Image.open(demo_images[0]).convert("RGB")
    small = io.BytesIO()
    photo.resize((photo.width // 2, photo.height // 2)).save(small, "JPEG", quality=60)
    a = store_image(demo_images[0].read_bytes(), tmp_path / "m")
    b = store_image(small.getvalue(), tmp_path / "m")
    c = store_image(demo_images[-1].read_bytes(), tmp_path / "m")
    assert a.sha256 != b.sha256
    assert phash_distance(a.phash, b.phash) <= 6 < phash_distance(a.phash, c.phash)
    assert dhash(photo) == a.phash or phash_distance(dhash(photo), a.phash) <= 2
    # through the store: the re-encoded copy is a near-duplicate of the first post
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(demo_images[0].read_bytes())
    (folder / "b.jpg").write_bytes(small.getvalue())
    (folder / "c.jpg").write_bytes(demo_images[-1].read_bytes())
    jsonl = write_jsonl(
        tmp_path / "d.jsonl",
        [{"post_id": n, "image": f"{n}.jpg"} for n in ("a", "b", "c")],
    )
    assert import_jsonl(store, jsonl, folder, settings.var_dir / "m").added == 3
    assert store.near_duplicate_of("b") == "a"
    assert store.near_duplicate_of("c") is None and store.near_duplicate_of("a") is None


@pytest.mark.shared_data
def test_real_instagram_thumbnails_import_once(
    shared_data: Path, store: ModerationStore, settings: Settings, tmp_path: Path
) -> None:
    folder = shared_data / "instagram" / "images"
    with open(shared_data / "instagram" / "posts.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    jsonl = write_jsonl(
        tmp_path / "ig.jsonl",
        [{"post_id": r["post_id"], "image": r["file"], "caption": ""} for r in rows],
    )
    first = import_jsonl(store, jsonl, folder, settings.var_dir / "m")
    readable = sum((folder / r["file"]).is_file() for r in rows)
    assert first.added + first.rejected == len(rows) and first.added >= readable * 0.95
    again = import_jsonl(store, jsonl, folder, settings.var_dir / "m")
    assert again.added == 0 and again.duplicates == first.added
