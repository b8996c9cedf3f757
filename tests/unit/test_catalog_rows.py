"""Reading and validating catalog import rows, and normalising one image: no database."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lookalike.catalog.media import MEDIA_MAX_SIDE, MEDIA_MIN_SIDE, store_media
from lookalike.catalog.rows import read_rows, split_image_field
from lookalike.core.errors import BadImage, ConfigError, InvalidInput, NotFound

HEADER = "item_id,title,category,price,available,image\n"


@pytest.fixture()
def photo(tmp_path: Path, demo_images: list[Path]) -> Path:
    target = tmp_path / "photo.jpg"
    shutil.copy(demo_images[0], target)
    return target


def _csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "items.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_valid_csv_row_is_parsed(tmp_path: Path, photo: Path) -> None:
    path = _csv(tmp_path, "A-1, Red dress ,Dress,45.50,Yes,photo.jpg\n")
    parsed = read_rows(path)
    assert parsed.rows_read == 1 and parsed.rejected == []
    row = parsed.rows[0]
    assert (row.line, row.item_id, row.title, row.category) == (2, "A-1", "Red dress", "Dress")
    assert row.price == 45.5 and row.available is True and row.url is None
    assert [image.path for image in row.images] == [photo.resolve()]


@pytest.mark.parametrize(
    ("word", "expected"),
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("yes", True), ("no", False)],
)
def test_available_words(tmp_path: Path, photo: Path, word: str, expected: bool) -> None:
    parsed = read_rows(_csv(tmp_path, f"A-1,Dress,Dress,1,{word},photo.jpg\n"))
    assert parsed.rows[0].available is expected


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ("A-1,,Dress,10,true,photo.jpg", "missing field 'title'"),
        ("A-1,Dress,Dress,,true,photo.jpg", "missing field 'price'"),
        ("A-1,Dress,Dress,-1,true,photo.jpg", "must be >= 0"),
        ("A-1,Dress,Dress,nan,true,photo.jpg", "finite"),
        ("A-1,Dress,Dress,inf,true,photo.jpg", "finite"),
        ("A-1,Dress,Dress,ten,true,photo.jpg", "expected a number"),
        ("A-1,Dress,Dress,10,maybe,photo.jpg", "expected true/false"),
        ("a/b,Dress,Dress,10,true,photo.jpg", "without slashes"),
        ("A-1,Dress,Dress,10,true,", "at least one image"),
        ("A-1,Dress,Dress,10,true,nope.jpg", "image not found: nope.jpg"),
        ("A-1,Red, long,Dress,10,true,photo.jpg", "more values than the header"),
    ],
)
def test_bad_rows_are_rejected_with_reason(
    tmp_path: Path, photo: Path, cells: str, reason: str
) -> None:
    parsed = read_rows(_csv(tmp_path, cells + "\n"))
    assert parsed.rows == []
    [rejection] = parsed.rejected
    assert rejection.line == 2
    assert reason in rejection.reason


def test_duplicate_id_names_first_line(tmp_path: Path, photo: Path) -> None:
    body = "A-1,Dress,Dress,1,true,photo.jpg\nB-1,Top,Top,2,true,photo.jpg\n"
    body += "A-1,Dress again,Dress,3,true,photo.jpg\n"
    parsed = read_rows(_csv(tmp_path, body))
    assert [row.item_id for row in parsed.rows] == ["A-1", "B-1"]
    [rejection] = parsed.rejected
    assert (rejection.line, rejection.item_id) == (4, "A-1")
    assert "duplicate item_id 'A-1' (first on line 2)" in rejection.reason


def test_several_images_and_images_root(tmp_path: Path, photo: Path) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    shutil.copy(photo, pictures / "a.jpg")
    shutil.copy(photo, pictures / "b.jpg")
    sub = tmp_path / "lists"
    sub.mkdir()
    path = sub / "items.csv"
    path.write_text(
        "item_id,title,category,price,available,images\nA-1,Dress,Dress,1,true,a.jpg | b.jpg\n"
    )
    parsed = read_rows(path, images_root=pictures)
    assert [i.given for i in parsed.rows[0].images] == ["a.jpg", "b.jpg"]
    # ".." is fine while it stays inside the images folder...
    path.write_text(HEADER + "A-1,Dress,Dress,1,true,../pictures/a.jpg\n")
    parsed = read_rows(path, images_root=pictures)
    assert parsed.rows[0].images[0].path == (pictures / "a.jpg").resolve()
    # ...and refused when it leaves it, even for a real file.
    path.write_text(HEADER + "A-1,Dress,Dress,1,true,../photo.jpg\n")
    [rejection] = read_rows(path).rejected
    assert "points outside the images folder" in rejection.reason


def test_non_regular_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    body = "A-1,Dress,Dress,1,true,folder.jpg\nB-1,Dress,Dress,1,true,pipe.jpg\n"
    parsed = read_rows(_csv(tmp_path, body))
    assert parsed.rows == []
    assert all("not a regular file" in r.reason for r in parsed.rejected)


def test_jsonl_rows(tmp_path: Path, photo: Path) -> None:
    lines = [
        {
            "item_id": "J-1",
            "title": "Gown",
            "category": "Dress",
            "price": 120,
            "available": True,
            "url": "https://shop.example/j-1",
            "images": ["photo.jpg", "photo.jpg"],
        },
        "not json",
        {
            "item_id": "J-2",
            "title": "Top",
            "category": "Top",
            "price": "9.5",
            "available": "no",
            "image": "photo.jpg",
        },
        ["a", "list"],
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")
    parsed = read_rows(path)
    assert parsed.rows_read == 4
    assert [(r.item_id, r.price, r.available, len(r.images)) for r in parsed.rows] == [
        ("J-1", 120.0, True, 2),
        ("J-2", 9.5, False, 1),
    ]
    assert parsed.rows[0].url == "https://shop.example/j-1"
    assert [(r.line, r.reason.split(":")[0]) for r in parsed.rejected] == [
        (2, "invalid JSON"),
        (4, "a JSONL row must be an object"),
    ]


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_rows(tmp_path / "absent.csv")
    (tmp_path / "items.xlsx").write_bytes(b"PK")
    with pytest.raises(InvalidInput, match="use .csv or .jsonl"):
        read_rows(tmp_path / "items.xlsx")
    with pytest.raises(InvalidInput, match="lacks columns: price"):
        read_rows(_csv(tmp_path, "", header="item_id,title,category,available,image\n"))


def test_split_image_field() -> None:
    assert split_image_field("a.jpg|b.jpg; c.jpg") == ["a.jpg", "b.jpg", "c.jpg"]
    assert split_image_field(["a.jpg", "b.jpg|c.jpg"]) == ["a.jpg", "b.jpg", "c.jpg"]
    assert split_image_field(None) == []
    with pytest.raises(ValueError):
        split_image_field([1])


def test_store_media_normalises_and_dedupes(tmp_path: Path, photo: Path) -> None:
    big = tmp_path / "big.jpg"
    Image.open(photo).convert("RGB").resize((1000, 1500)).save(big, quality=92)
    media = tmp_path / "media"
    media.mkdir()
    first = store_media(big, media, max_bytes=10**8, max_pixels=10**8)
    assert first.created and first.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    with Image.open(media / first.media) as stored:
        assert stored.format == "JPEG" and stored.mode == "RGB"
        assert stored.size == (first.width, first.height)
        # 1000x1500 decodes at 1/4 scale (longest side 375, within [320, 512]): no resample.
        assert stored.size == (250, 375)
    again = store_media(big, media, max_bytes=10**8, max_pixels=10**8)
    assert again == dataclasses.replace(first, created=False)
    assert sorted(p.name for p in media.iterdir()) == [first.media]


def test_store_media_errors(tmp_path: Path, photo: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:1500])
    with pytest.raises(BadImage):
        store_media(truncated, media, max_bytes=10**8, max_pixels=10**8)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BadImage):
        store_media(garbage, media, max_bytes=10**8, max_pixels=10**8)
    assert list(media.iterdir()) == []
    not_a_dir = tmp_path / "media-file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigError, match="cannot write catalog media"):
        store_media(photo, not_a_dir, max_bytes=10**8, max_pixels=10**8)


@pytest.mark.parametrize(
    ("size", "fmt", "expected"),
    [
        ((1000, 1500), "JPEG", (250, 375)),  # 1/4 scale lands in [320, 512]: stored as decoded
        ((4032, 3024), "JPEG", (504, 378)),  # phone photo, 1/8 scale
        ((2400, 1600), "JPEG", (512, 341)),  # 1/4 scale is 600 wide: resampled to 512
        ((300, 200), "JPEG", (300, 200)),  # small images are never upscaled
        ((1200, 900), "PNG", (512, 384)),  # other formats decode in full, then resample
    ],
)
def test_media_size_rule(
    tmp_path: Path, photo: Path, size: tuple[int, int], fmt: str, expected: tuple[int, int]
) -> None:
    source = tmp_path / f"source.{fmt.lower()}"
    Image.open(photo).convert("RGB").resize(size).save(source, fmt)
    media = tmp_path / "media"
    media.mkdir()
    stored = store_media(source, media, max_bytes=10**8, max_pixels=10**8)
    assert (stored.width, stored.height) == expected
    assert max(expected) <= MEDIA_MAX_SIDE and max(expected) >= min(MEDIA_MIN_SIDE, max(size))
    with Image.open(media / stored.media) as image:
        assert image.size == expected and image.format == "JPEG"


# -- hostile or sloppy rows: each is one rejection with its line, never a failed file ----------


def _reasons(parsed) -> dict[int, str]:
    return {r.line: r.reason for r in parsed.rejected}


def test_missing_optional_url_cell_and_null_url_are_no_url(tmp_path: Path, photo: Path) -> None:
    # The trailing url cell is simply left out on line 2 (a short row), empty on line 3.
    body = "A-1,Dress,Dress,1,true,photo.jpg\nA-2,Dress,Dress,1,true,photo.jpg,\n"
    body += "A-3,Dress,Dress,1,true,photo.jpg,https://shop.example/a-3\n"
    parsed = read_rows(_csv(tmp_path, body, header=HEADER.rstrip("\n") + ",url\n"))
    assert parsed.rejected == []
    assert [(r.item_id, r.url) for r in parsed.rows] == [
        ("A-1", None),
        ("A-2", None),
        ("A-3", "https://shop.example/a-3"),
    ]
    row = {"title": "t", "category": "c", "price": 1, "available": True, "image": "photo.jpg"}
    lines = [
        {"item_id": "J-1", **row, "url": None},
        {"item_id": "J-2", **row, "url": 5},
        {"item_id": "J-3", **row, "url": ["https://x.example"]},
        {"item_id": "J-4", **row, "title": None},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    parsed = read_rows(path)
    assert [(r.item_id, r.url) for r in parsed.rows] == [("J-1", None)]
    reasons = _reasons(parsed)
    assert "url: expected a string, got int" in reasons[2]
    assert "url: expected a string, got list" in reasons[3]
    assert "missing field 'title'" in reasons[4]


def test_a_semicolon_separated_catalog_imports_like_a_comma_one(
    tmp_path: Path, photo: Path
) -> None:
    path = tmp_path / "items.csv"  # a spreadsheet saved in a European locale
    path.write_text(HEADER.replace(",", ";") + "A-1;Red dress, midi;Dress;49.5;true;photo.jpg\n")
    parsed = read_rows(path)
    assert parsed.rejected == [], _reasons(parsed)
    assert [(r.item_id, r.title, r.category) for r in parsed.rows] == [
        ("A-1", "Red dress, midi", "Dress")
    ]


def test_one_non_utf8_byte_rejects_only_its_line(tmp_path: Path, photo: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(
        b"\xef\xbb\xbf"  # a BOM is still fine
        + HEADER.encode()
        + b"A-1,Dress,Dress,1,true,photo.jpg\n"
        + b"A-2,Caf\xe9 dress,Dress,1,true,photo.jpg\n"  # Latin-1, not UTF-8
        + "A-3,Café dress,Dress,1,true,photo.jpg\n".encode()
    )
    parsed = read_rows(path)
    assert [r.item_id for r in parsed.rows] == ["A-1", "A-3"]
    assert parsed.rows[1].title == "Café dress"
    [rejection] = parsed.rejected
    assert (rejection.line, rejection.item_id) == (3, "A-2")
    assert rejection.reason == "title: is not UTF-8 (byte 0xe9)"

    jsonl = tmp_path / "items.jsonl"
    good = b'{"item_id":"J-1","title":"t","category":"c","price":1,"available":1,'
    good += b'"image":"photo.jpg"}\n'
    jsonl.write_bytes(good + b'{"item_id":"J-2","title":"\xff"}\n' + good.replace(b"J-1", b"J-3"))
    parsed = read_rows(jsonl)
    assert [r.item_id for r in parsed.rows] == ["J-1", "J-3"]
    assert _reasons(parsed) == {2: "line is not UTF-8 (byte 0xff)"}


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ("A-1,Red\x00dress,Dress,1,true,photo.jpg", "title: holds control character U+0000"),
        ("A-1,Dress,Dre\x1bss,1,true,photo.jpg", "category: holds control character U+001B"),
        ('A-1,"Red\ndress",Dress,1,true,photo.jpg', "title: holds control character U+000A"),
        ("A-1,Dress,Dress,1,true,pho\x00to.jpg", "image: holds control character U+0000"),
        ("A-1,Dress\x85,Dress,1,true,photo.jpg", "title: holds control character U+0085"),
    ],
)
def test_control_characters_are_rejected(
    tmp_path: Path, photo: Path, cells: str, reason: str
) -> None:
    body = cells + "\nB-1,Fine dress,Dress,1,true,photo.jpg\n"
    parsed = read_rows(_csv(tmp_path, body))
    assert [r.item_id for r in parsed.rows] == ["B-1"]
    [rejection] = parsed.rejected
    assert rejection.line == 2 and reason in rejection.reason


def test_lone_surrogate_in_jsonl_is_rejected(tmp_path: Path, photo: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"item_id":"J-1","title":"bad \\ud800","category":"c","price":1,"available":1,'
        '"image":"photo.jpg"}\n'
    )
    [rejection] = read_rows(path).rejected
    assert rejection.reason == "title: holds a lone surrogate U+D800"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "//evil.example/x",
        "shop/item/1",
        "http://",
        "https://exa mple.com/",
        "ftp://files.example/x",
    ],
)
def test_non_http_urls_are_rejected(tmp_path: Path, photo: Path, url: str) -> None:
    header = HEADER.rstrip("\n") + ",url\n"
    cells = f'A-1,Dress,Dress,1,true,photo.jpg,"{url}"\nB-1,Dress,Dress,1,true,photo.jpg,'
    parsed = read_rows(_csv(tmp_path, cells + "HTTPS://Shop.Example/b?x=1#top\n", header=header))
    assert [(r.item_id, r.url) for r in parsed.rows] == [("B-1", "HTTPS://Shop.Example/b?x=1#top")]
    [rejection] = parsed.rejected
    assert rejection.line == 2 and rejection.reason.startswith("url: ")


def test_image_paths_must_stay_inside_the_images_folder(tmp_path: Path, photo: Path) -> None:
    root = tmp_path / "catalog"
    (root / "img").mkdir(parents=True)
    shutil.copy(photo, root / "img" / "ok.jpg")
    secret = tmp_path / "secret.jpg"  # a real, readable image outside the root
    shutil.copy(photo, secret)
    (root / "img" / "link-out.jpg").symlink_to(secret)
    (root / "img" / "link-in.jpg").symlink_to(root / "img" / "ok.jpg")
    (root / "img" / "dir-out").symlink_to(tmp_path)
    rows = [
        "A-1,Dress,Dress,1,true,img/ok.jpg",  # 2
        "A-2,Dress,Dress,1,true,../../../../../../etc/shadow",  # 3
        f"A-3,Dress,Dress,1,true,{secret}",  # 4: absolute, outside
        "A-4,Dress,Dress,1,true,img/link-out.jpg",  # 5: symlink out
        "A-5,Dress,Dress,1,true,img/dir-out/secret.jpg",  # 6: through a linked folder
        "A-6,Dress,Dress,1,true,img/link-in.jpg",  # 7: a link that stays inside is fine
        f"A-7,Dress,Dress,1,true,{root / 'img' / 'ok.jpg'}",  # 8: absolute, inside
        "A-8,Dress,Dress,1,true,img/ok.jpg|../secret.jpg",  # 9: one bad image of two
    ]
    path = root / "items.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    parsed = read_rows(path)
    assert [r.item_id for r in parsed.rows] == ["A-1", "A-6", "A-7"]
    reasons = _reasons(parsed)
    assert sorted(reasons) == [3, 4, 5, 6, 9]
    assert all("points outside the images folder" in why for why in reasons.values())
    assert str(tmp_path) not in reasons[4].split("points")[1]  # the root is named, not its path
    # --images sets the root: with the parent as root the absolute path to the secret imports
    # (relative paths now resolve against the parent, so the others are not found).
    wide = _reasons(read_rows(path, images_root=tmp_path))
    assert 4 not in wide and "outside" in wide[3] and "image not found" in wide[2]


def test_image_path_outside_the_root_is_never_opened(tmp_path: Path) -> None:
    # A FIFO outside the root would block any open(); the check must come first.
    root = tmp_path / "catalog"
    root.mkdir()
    os.mkfifo(tmp_path / "trap.jpg")
    path = root / "items.csv"
    path.write_text(HEADER + "A-1,Dress,Dress,1,true,../trap.jpg\n")
    [rejection] = read_rows(path).rejected
    assert "outside the images folder" in rejection.reason


def test_bad_csv_record_is_one_rejection(tmp_path: Path, photo: Path) -> None:
    import csv

    limit = csv.field_size_limit()
    body = f"A-1,{'x' * (limit + 10)},Dress,1,true,photo.jpg\nB-1,Dress,Dress,1,true,photo.jpg\n"
    parsed = read_rows(_csv(tmp_path, body))
    assert [r.item_id for r in parsed.rows] == ["B-1"]
    [rejection] = parsed.rejected
    assert rejection.line == 2 and rejection.reason.startswith("bad CSV: field larger")


def test_symlink_swapped_in_after_the_check_is_not_opened(tmp_path: Path, photo: Path) -> None:
    from lookalike.catalog.ingest import MediaBatch

    root = tmp_path / "catalog"
    root.mkdir()
    shutil.copy(photo, root / "ok.jpg")
    path = root / "items.csv"
    path.write_text(HEADER + "A-1,Dress,Dress,1,true,ok.jpg\n")
    [row] = read_rows(path).rows
    (root / "ok.jpg").unlink()
    (root / "ok.jpg").symlink_to(photo)  # now points outside the checked folder
    batch = MediaBatch(tmp_path / "media", max_bytes=10**8, max_pixels=10**8)
    (tmp_path / "media").mkdir()
    batch.run([row], workers=1)
    assert "symlink" in str(batch.results[row.images[0].path])
    assert list((tmp_path / "media").iterdir()) == []
