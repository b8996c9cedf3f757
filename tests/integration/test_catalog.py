"""CatalogStore against real SQLite and PostgreSQL, with real images from the demo catalog."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lookalike.catalog import MEDIA_MAX_SIDE, CatalogStore
from lookalike.core.errors import LookalikeError, NotFound

HEADER = "item_id,title,category,price,available,image\n"


@dataclass
class Catalog:
    store: CatalogStore
    url: str
    media: Path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A fresh, empty catalog: a SQLite file, or a new database on the test PostgreSQL."""
    media = tmp_path / "media"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
        store = CatalogStore(url, media)
        store.create_schema()
        yield Catalog(store, url, media)
        store.close()
        return
    server = make_url(request.getfixturevalue("postgres_url"))
    name = f"lk_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    store = CatalogStore(url, media)
    store.create_schema()
    try:
        yield Catalog(store, url, media)
    finally:
        store.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def photos(tmp_path: Path, demo_images: list[Path]) -> list[Path]:
    """Six real demo photos copied into the folder the test's catalog files live in."""
    folder = tmp_path / "files"
    folder.mkdir()
    out = []
    for n, source in enumerate(demo_images[:6]):
        target = folder / f"p{n}.jpg"
        shutil.copy(source, target)
        out.append(target)
    return out


def _write_csv(folder: Path, lines: list[str], name: str = "items.csv") -> Path:
    path = folder / name
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _media_files(media: Path) -> list[str]:
    return sorted(p.name for p in media.iterdir()) if media.exists() else []


def test_import_demo_catalog(catalog: Catalog, demo_catalog: Path) -> None:
    store = catalog.store
    report = store.import_file(demo_catalog / "items.csv")
    assert report.ok and report.rows_read == 430
    assert (report.items_added, report.images_added, report.items_updated) == (430, 430, 0)
    with (demo_catalog / "items.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert store.count_items() == 430 and store.count_images() == 430
    expected = Counter(row["category"] for row in rows)
    assert dict(store.categories()) == dict(expected)
    assert store.categories()[0] == ("Dress", expected["Dress"])
    assert store.revision() == 1

    first = rows[0]
    item = store.get_item(first["item_id"])
    assert (item.title, item.category, item.price) == (
        first["title"],
        first["category"],
        float(first["price"]),
    )
    assert item.available is (first["available"] == "true")
    assert item.url is None and item.updated_at.tzinfo is not None
    [image] = item.images
    source = (demo_catalog / first["image"]).read_bytes()
    assert image.sha256 == hashlib.sha256(source).hexdigest() and image.item_id == item.item_id
    with Image.open(store.media_path(image)) as stored:
        assert stored.format == "JPEG" and stored.size == (image.width, image.height)
        assert max(stored.size) <= MEDIA_MAX_SIDE

    listed = list(store.iter_images())
    assert len(listed) == 430 and [i.image_id for i in listed] == sorted(i.image_id for i in listed)
    assert all(store.media_path(i).is_file() for i in listed)
    many = store.get_items([rows[5]["item_id"], "missing", rows[9]["item_id"]])
    assert set(many) == {rows[5]["item_id"], rows[9]["item_id"]}
    mapping = store.item_ids_for_images([i.image_id for i in listed[:10]] + [10**9])
    assert mapping == {i.image_id: i.item_id for i in listed[:10]}


def test_import_jsonl_with_several_images(catalog: Catalog, photos: Path) -> None:
    folder = photos[0].parent
    rows = [
        {"item_id": "J-1", "title": "Silk gown", "category": "Dress", "price": 210.0,
         "available": "yes", "url": "https://shop.example/J-1",
         "images": ["p0.jpg", "p1.jpg", "p2.jpg"]},
        {"item_id": "J-2", "title": "Linen top", "category": "Top", "price": 30,
         "available": False, "image": str(photos[3])},
    ]  # fmt: skip
    path = folder / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = catalog.store.import_file(path)
    assert report.ok and (report.items_added, report.images_added) == (2, 4)
    gown = catalog.store.get_item("J-1")
    assert gown.available and gown.url == "https://shop.example/J-1" and gown.price == 210.0
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in photos[:3]]
    assert [i.sha256 for i in gown.images] == expected
    assert catalog.store.get_item("J-2").available is False


def test_rejected_rows_each_have_a_reason(catalog: Catalog, photos: list[Path]) -> None:
    folder = photos[0].parent
    (folder / "truncated.jpg").write_bytes(photos[1].read_bytes()[:2000])
    (folder / "garbage.jpg").write_bytes(os.urandom(5000))
    path = _write_csv(
        folder,
        [
            "OK-1,Red dress,Dress,50,true,p0.jpg",  # line 2
            "BAD-1,,Dress,50,true,p1.jpg",  # 3: missing title
            "BAD-2,Blue dress,Dress,-3,true,p1.jpg",  # 4: negative price
            "OK-1,Red dress again,Dress,50,true,p1.jpg",  # 5: duplicate id
            "BAD-3,Green dress,Dress,20,true,nowhere.jpg",  # 6: missing image
            "BAD-4,Pink dress,Dress,20,true,truncated.jpg",  # 7: truncated JPEG
            "BAD-5,Gold dress,Dress,20,true,garbage.jpg",  # 8: not an image
            "OK-2,Black top,Top,15,no,p2.jpg",  # 9
        ],
    )
    report = catalog.store.import_file(path)
    assert not report.ok and report.rows_read == 8
    assert (report.items_added, report.images_added) == (2, 2)
    reasons = {r.line: (r.item_id, r.reason) for r in report.rejected}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert reasons[3] == ("BAD-1", "missing field 'title'")
    assert reasons[4][0] == "BAD-2" and "price" in reasons[4][1] and ">= 0" in reasons[4][1]
    assert reasons[5] == ("OK-1", "duplicate item_id 'OK-1' (first on line 2)")
    assert reasons[6] == ("BAD-3", "image not found: nowhere.jpg")
    assert reasons[7][1].startswith("truncated.jpg: ") and "truncated or corrupt" in reasons[7][1]
    assert reasons[8][1].startswith("garbage.jpg: ")
    assert catalog.store.get_item("OK-1").title == "Red dress"
    for bad in ("BAD-1", "BAD-2", "BAD-3", "BAD-4", "BAD-5"):
        with pytest.raises(NotFound, match=bad):
            catalog.store.get_item(bad)
    assert len(_media_files(catalog.media)) == 2


def test_strict_mode_imports_nothing(catalog: Catalog, photos: list[Path]) -> None:
    folder = photos[0].parent
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    path = _write_csv(
        folder,
        ["A-1,Dress,Dress,10,true,p0.jpg", "A-2,Dress,Dress,10,true,garbage.jpg"],
    )
    report = catalog.store.import_file(path, strict=True)
    assert [(r.line, r.item_id) for r in report.rejected] == [(3, "A-2")]
    assert (report.items_added, report.images_added) == (0, 0)
    assert catalog.store.count_items() == 0 and catalog.store.revision() == 0
    assert _media_files(catalog.media) == []
    # Without --strict the good row goes in.
    assert catalog.store.import_file(path).items_added == 1


def _install_failing_trigger(url: str, item_id: str) -> None:
    """Make the database itself refuse image rows of one item: a real mid-batch failure."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER fail_images BEFORE INSERT ON catalog_images "
                    f"WHEN NEW.item_id = '{item_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION fail_images() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.item_id = '{item_id}' THEN RAISE EXCEPTION 'injected failure'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER fail_images BEFORE INSERT ON catalog_images "
                    "FOR EACH ROW EXECUTE FUNCTION fail_images()"
                )
            )
    engine.dispose()


def test_failure_mid_transaction_leaves_nothing(catalog: Catalog, demo_catalog: Path) -> None:
    _install_failing_trigger(catalog.url, "LK-0300")
    with pytest.raises(LookalikeError, match="injected failure"):
        catalog.store.import_file(demo_catalog / "items.csv")
    assert catalog.store.count_items() == 0 and catalog.store.count_images() == 0
    assert catalog.store.revision() == 0
    assert _media_files(catalog.media) == []


def test_interrupted_import_leaves_nothing(catalog: Catalog, demo_catalog: Path) -> None:
    class Interrupted(Exception):
        pass

    def progress(stage: str, done: int | None = None, total: int | None = None, /) -> None:
        if done is not None and done >= 100:
            raise Interrupted  # what Ctrl-C in the progress bar does

    with pytest.raises(Interrupted):
        catalog.store.import_file(demo_catalog / "items.csv", progress=progress)
    assert catalog.store.count_items() == 0
    assert _media_files(catalog.media) == []


def test_reimport_is_idempotent(catalog: Catalog, demo_catalog: Path) -> None:
    store = catalog.store
    store.import_file(demo_catalog / "items.csv")
    before = list(store.iter_images())
    revision = store.revision()
    report = store.import_file(demo_catalog / "items.csv")
    assert report.ok and report.items_unchanged == 430
    assert (report.items_added, report.items_updated, report.images_added) == (0, 0, 0)
    assert list(store.iter_images()) == before and store.revision() == revision


def test_reimport_updates_fields_and_images(catalog: Catalog, photos: list[Path]) -> None:
    folder = photos[0].parent
    store = catalog.store
    first = _write_csv(
        folder,
        [
            "U-1,Red dress,Dress,50,true,p0.jpg",
            "U-2,Blue dress,Dress,60,true,p1.jpg",
            "U-3,Black top,Top,20,true,p2.jpg",
        ],
    )
    store.import_file(first)
    old = store.get_items(["U-1", "U-2", "U-3"])
    revision = store.revision()
    second = _write_csv(
        folder,
        [
            "U-1,Red dress,Dress,55.5,false,p0.jpg",  # fields change, image stays
            "U-2,Blue dress,Dress,60,true,p3.jpg|p4.jpg",  # images change
            "U-3,Black top,Top,20,true,p2.jpg",  # unchanged
            "U-4,White shirt,Shirt,25,true,p5.jpg",  # new
        ],
        name="items-v2.csv",
    )
    report = store.import_file(second)
    assert (report.items_added, report.items_updated, report.items_unchanged) == (1, 2, 1)
    assert report.images_added == 3
    assert store.revision() == revision + 1
    new = store.get_items(["U-1", "U-2", "U-3", "U-4"])
    assert new["U-1"].price == 55.5 and new["U-1"].available is False
    assert new["U-1"].images == old["U-1"].images
    assert new["U-1"].updated_at > old["U-1"].updated_at
    assert [i.sha256 for i in new["U-2"].images] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in photos[3:5]
    ]
    assert not {i.image_id for i in new["U-2"].images} & {i.image_id for i in old["U-2"].images}
    assert new["U-3"] == old["U-3"]
    assert store.count_images() == 5


def test_filters(catalog: Catalog, demo_catalog: Path) -> None:
    store = catalog.store
    store.import_file(demo_catalog / "items.csv")
    items = store.get_items([f"LK-{n:04d}" for n in range(1, 431)])
    assert len(items) == 430

    def ids(keep: object) -> list[int]:
        return sorted(i.image_id for it in items.values() if keep(it) for i in it.images)

    skirts = store.image_ids_matching(category="Skirt")
    assert skirts.dtype == np.int64 and skirts.tolist() == ids(lambda it: it.category == "Skirt")
    available = store.image_ids_matching(available=True)
    assert available.tolist() == ids(lambda it: it.available)
    both = store.image_ids_matching(category="Dress", available=False)
    assert both.tolist() == ids(lambda it: it.category == "Dress" and not it.available)
    assert len(store.image_ids_matching()) == 430
    assert store.image_ids_matching(category="Spacesuit").tolist() == []


def test_set_available_and_delete_bump_revision(catalog: Catalog, photos: list[Path]) -> None:
    store = catalog.store
    store.import_file(
        _write_csv(
            photos[0].parent,
            ["D-1,Red dress,Dress,50,true,p0.jpg", "D-2,Blue dress,Dress,60,true,p1.jpg"],
        )
    )
    revision = store.revision()
    store.set_available("D-1", False)
    assert store.revision() == revision + 1 and store.get_item("D-1").available is False
    assert store.image_ids_matching(available=True).tolist() == [
        store.get_item("D-2").images[0].image_id
    ]
    store.set_available("D-1", False)  # no change, no bump
    assert store.revision() == revision + 1
    gone = store.get_item("D-2").images[0]
    store.delete_item("D-2")
    assert store.revision() == revision + 2
    with pytest.raises(NotFound, match="D-2"):
        store.get_item("D-2")
    assert store.count_images() == 1 and store.item_ids_for_images([gone.image_id]) == {}
    with pytest.raises(NotFound, match="nope"):
        store.delete_item("nope")
    with pytest.raises(NotFound, match="nope"):
        store.set_available("nope", True)
    # Image ids are never reused, even after a delete.
    store.import_file(
        _write_csv(photos[0].parent, ["D-3,Green dress,Dress,70,true,p2.jpg"], name="more.csv")
    )
    assert store.get_item("D-3").images[0].image_id > gone.image_id


def test_create_schema_is_idempotent(catalog: Catalog, photos: list[Path]) -> None:
    catalog.store.import_file(_write_csv(photos[0].parent, ["S-1,Dress,Dress,1,true,p0.jpg"]))
    catalog.store.create_schema()
    again = CatalogStore(catalog.url, catalog.media)
    again.create_schema()
    assert again.count_items() == 1 and again.revision() == 1
    again.close()


def test_cli_import_and_stats(
    tmp_path: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.catalog import app

    home = tmp_path / "home"
    monkeypatch.setenv("LOOKALIKE_HOME", str(home))
    monkeypatch.delenv("LOOKALIKE_DATABASE_URL", raising=False)
    folder = photos[0].parent
    path = _write_csv(
        folder, ["C-1,Red dress,Dress,50,true,p0.jpg", "C-2,Blue dress,Dress,-1,true,p1.jpg"]
    )
    runner = CliRunner()
    strict = runner.invoke(app, ["import", str(path), "--strict"])
    assert strict.exit_code == 1 and "nothing was imported" in strict.output
    loose = runner.invoke(app, ["import", str(path), "--images", str(folder)])
    assert loose.exit_code == 0, loose.output
    assert "1 added" in loose.output and "1 rejected" in loose.output and "C-2" in loose.output
    assert (home / "var" / "catalog.db").is_file()
    stats = runner.invoke(app, ["stats"])
    assert stats.exit_code == 0 and "items 1, images 1" in stats.output and "Dress" in stats.output


# -- hostile and sloppy import files: one rejection per bad row, the rest imports --------------


def test_hostile_rows_are_rejected_and_the_rest_imports(
    catalog: Catalog, photos: list[Path], tmp_path: Path
) -> None:
    """On PostgreSQL a NUL in one title used to fail the whole batch: now it is one rejection."""
    folder = photos[0].parent
    outside = tmp_path / "outside.jpg"  # a real image the file must not reach
    shutil.copy(photos[5], outside)
    (folder / "link.jpg").symlink_to(outside)
    header = b"item_id,title,category,price,available,image,url\n"
    lines = [
        b"H-1,Red dress,Dress,50,true,p0.jpg",  # 2: no url cell at all (a short row)
        b"H-2,Nul\x00dress,Dress,50,true,p1.jpg,",  # 3: NUL in the title
        b"H-3,Caf\xe9 dress,Dress,50,true,p1.jpg,",  # 4: Latin-1 byte, not UTF-8
        b"H-4,Evil link,Dress,50,true,p1.jpg,javascript:alert(1)",  # 5
        b"H-5,Shadow,Dress,50,true,../../../../../../../etc/shadow,",  # 6
        b"H-6,Outside,Dress,50,true," + str(outside).encode() + b",",  # 7: absolute, outside
        b"H-7,Linked,Dress,50,true,link.jpg,",  # 8: symlink out of the folder
        b"H-8,Esc\x1bdress,Dre\x07ss,50,true,p1.jpg,",  # 9: control characters
        b"H-9,Blue dress,Dress,60,true,p2.jpg,https://shop.example/h-9",  # 10
    ]
    path = folder / "items.csv"
    path.write_bytes(header + b"\n".join(lines) + b"\n")

    report = catalog.store.import_file(path)

    assert report.rows_read == 9 and report.items_added == 2
    reasons = {r.line: r.reason for r in report.rejected}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9]
    assert "U+0000" in reasons[3] and "not UTF-8 (byte 0xe9)" in reasons[4]
    assert reasons[5].startswith("url: must be an absolute http")
    assert all("outside the images folder" in reasons[n] for n in (6, 7, 8))
    assert "U+001B" in reasons[9] and "U+0007" in reasons[9]
    assert catalog.store.get_item("H-1").url is None
    assert catalog.store.get_item("H-9").url == "https://shop.example/h-9"
    assert sorted(catalog.store.get_items([f"H-{n}" for n in range(10)])) == ["H-1", "H-9"]
    # The outside image was never copied in: only p0 and p2 are in the media folder.
    wanted = {hashlib.sha256(p.read_bytes()).hexdigest() + ".jpg" for p in (photos[0], photos[2])}
    assert set(_media_files(catalog.media)) == wanted


def test_jsonl_null_url_and_bad_lines(catalog: Catalog, photos: list[Path]) -> None:
    folder = photos[0].parent
    base = {"title": "Gown", "category": "Dress", "price": 99, "available": True}
    rows = [
        {"item_id": "N-1", **base, "image": "p0.jpg", "url": None},
        {"item_id": "N-2", **base, "image": "p1.jpg", "url": "data:text/html,x"},
        {"item_id": "N-3", **base, "title": "nul \u0000", "image": "p1.jpg"},
        None,  # line 4: a byte that is not UTF-8
        {"item_id": "N-5", **base, "image": "p2.jpg", "url": "http://x.example/5"},
    ]
    raw = [b'{"item_id": "N-4", "title": "\xff\xfe"}' if r is None else json.dumps(r).encode()
           for r in rows]  # fmt: skip
    path = folder / "items.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    report = catalog.store.import_file(path)
    assert report.items_added == 2
    assert [(r.line, r.item_id) for r in report.rejected] == [(2, "N-2"), (3, "N-3"), (4, None)]
    assert catalog.store.get_item("N-1").url is None
    assert catalog.store.get_item("N-5").url == "http://x.example/5"
