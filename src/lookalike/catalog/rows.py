"""Reading and validating catalog import files (CSV or JSONL), one row at a time.

Every bad row becomes a ``Rejection`` with its line number and a reason a person can act on;
only a file that cannot be read at all raises (absent, wrong suffix, a CSV header lacking
columns). A catalog file is input from outside, so a row is also rejected, never imported, when:

- a line is not UTF-8 (each line is decoded on its own; the others still import);
- a text field holds a control character or a lone surrogate (PostgreSQL refuses NUL and would
  lose the whole batch; the search page would render the rest);
- ``url`` is not an absolute ``http(s)://`` URL (a ``javascript:`` link is stored XSS);
- an image path resolves (``..``, absolute, symlinks followed) outside the images root: a row
  cannot make the importer open ``/etc/shadow``. Such a path is never opened.

A missing optional cell (a CSV row without its trailing ``url``, JSONL ``"url": null``) is the
same as an empty one. Image paths are resolved and checked to be regular files here; whether
they decode is decided later, when the image is normalised.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lookalike.core.errors import InvalidInput, NotFound
from lookalike.core.textfiles import csv_delimiter

from .records import Rejection

__all__ = [
    "ITEM_ID_PATTERN",
    "ItemRow",
    "ParsedFile",
    "RowImage",
    "read_rows",
    "split_image_field",
]

# Item ids travel in URLs (/items/{id}) and file names, so no slashes and no control characters.
ITEM_ID_PATTERN = r"^[^/\\\x00-\x1f\x7f]{1,64}$"
REQUIRED_FIELDS = ("item_id", "title", "category", "price", "available")
MAX_IMAGES_PER_ITEM = 32
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_IMAGE_SEPARATORS = re.compile(r"[|;]")
# C0/C1 controls, DEL and surrogates: a lone surrogate is also how a non-UTF-8 byte shows up
# after decoding with "surrogateescape" (U+DC80-U+DCFF), and no database can store one.
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
URL_SCHEMES = ("http", "https")
_STORED_FIELDS = (*REQUIRED_FIELDS, "url", "image", "images")


def _parse_available(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected true/false/1/0/yes/no, got {value!r}")


def _parse_price(value: Any) -> Any:
    # Reject "nan"/"inf" spelled as strings too, and say so plainly.
    if isinstance(value, str):
        value = value.strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    if number < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return number


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _check_url(value: Any) -> Any:
    """An absolute http(s) URL with a host, or None; anything else is refused."""
    value = _empty_to_none(value)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > 2048:
        raise ValueError("longer than 2048 characters")
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(f"must be an absolute http:// or https:// URL, got {shown!r}")
    return value


def _bad_char(text: str) -> str | None:
    """A reason when ``text`` holds a character no catalog field may hold, else None."""
    found = _BAD_CHARS.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"is not UTF-8 (byte 0x{code - 0xDC00:02x})"
    if 0xD800 <= code <= 0xDFFF:
        return f"holds a lone surrogate U+{code:04X}"
    return f"holds control character U+{code:04X} at position {found.start() + 1}"


def _text_problems(record: dict[str, Any]) -> list[str]:
    """The fields we store (image lists too) that hold a character we refuse to store.

    Columns we ignore are not looked at: a free-text column we never read may hold newlines.
    """
    problems: list[str] = []

    def visit(name: str, value: Any) -> None:
        if isinstance(value, str):
            why = _bad_char(value)
            if why is not None:
                problems.append(f"{name}: {why}")
        elif isinstance(value, list | tuple):
            for part in value:
                visit(name, part)

    for name in _STORED_FIELDS:
        if name in record:
            visit(name, record[name])
    return problems


class _RowModel(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    item_id: Annotated[str, Field(pattern=ITEM_ID_PATTERN)]
    title: Annotated[str, Field(min_length=1, max_length=300)]
    category: Annotated[str, Field(min_length=1, max_length=100)]
    price: Annotated[float, BeforeValidator(_parse_price)]
    available: Annotated[bool, BeforeValidator(_parse_available)]
    # A validator, not Field(max_length): that constraint raised TypeError on None (url: null).
    url: Annotated[str | None, BeforeValidator(_check_url)] = None
    images: Annotated[list[str], Field(min_length=1, max_length=MAX_IMAGES_PER_ITEM)]


@dataclass(frozen=True, slots=True)
class RowImage:
    """An image path as written in the file, and the regular file it resolved to."""

    given: str
    path: Path


@dataclass(frozen=True, slots=True)
class ItemRow:
    """A row that passed validation; its images exist and are regular files."""

    line: int
    item_id: str
    title: str
    category: str
    price: float
    available: bool
    url: str | None
    images: tuple[RowImage, ...]


@dataclass(slots=True)
class ParsedFile:
    rows: list[ItemRow]
    rejected: list[Rejection]
    rows_read: int


def split_image_field(value: Any) -> list[str]:
    """Image paths from an ``image``/``images`` value: a string split on ``|`` or ``;``, or a
    list of strings. Empty parts are dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in _IMAGE_SEPARATORS.split(value) if part.strip()]
    if isinstance(value, list | tuple):
        out: list[str] = []
        for part in value:
            if not isinstance(part, str):
                raise ValueError(f"image paths must be strings, got {part!r}")
            out.extend(split_image_field(part))
        return out
    raise ValueError(f"image paths must be a string or a list of strings, got {value!r}")


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "row"
        if err["type"] == "missing":
            parts.append(f"missing field '{name}'")
        elif name == "item_id" and err["type"] == "string_pattern_mismatch":
            parts.append("item_id must be 1-64 characters without slashes or control characters")
        elif name == "images" and err["type"] == "too_short":
            parts.append("missing field 'image' (at least one image path is needed)")
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{name}: {message}")
    return "; ".join(parts)


def _resolve_image(given: str, root: Path) -> RowImage:
    """The regular file ``given`` names, which must lie inside ``root`` (already resolved).

    resolve() follows every symlink and "..", so the containment test is on the real target:
    ``../../etc/shadow``, ``/etc/shadow`` and a link pointing out of ``root`` are all refused
    before anything is opened.
    """
    path = Path(given)
    if not path.is_absolute():
        path = root / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, or a path too long
        raise ValueError(f"cannot resolve image path {given}: {exc}") from None
    if not resolved.is_relative_to(root):
        raise ValueError(
            f"image path {given} points outside the images folder; paths must stay inside "
            f"--images (here {root.name or root})"
        )
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise ValueError(f"image not found: {given}") from None
    except OSError as exc:
        raise ValueError(f"cannot read image {given}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"image is not a regular file: {given}")
    return RowImage(given=given, path=resolved)


def _decoded_lines(handle: BinaryIO) -> Iterator[str]:
    """Each physical line as text. A byte that is not UTF-8 becomes a lone surrogate
    ("surrogateescape") instead of failing the file, so the row holding it is rejected by
    ``_text_problems`` with its line number and every other row still imports."""
    first = True
    for raw in handle:
        text = raw.decode("utf-8", errors="surrogateescape")
        if first:
            text, first = text.removeprefix("\ufeff"), False
        yield text


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, raw record) pairs; a string record is a reason the row could not be read."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        if not path.exists():
            raise NotFound(f"catalog file not found: {path}")
        raise InvalidInput(
            f"unsupported catalog file type {suffix or '(none)'!r} for {path.name}: "
            "use .csv or .jsonl"
        )
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFound(f"catalog file not found: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read catalog file {path}: {exc.strerror}") from exc
    with handle:
        lines = _decoded_lines(handle)
        if suffix == ".csv":
            yield from _csv_records(lines, path)
        else:
            yield from _jsonl_records(lines)


class _LineCounter:
    """Counts the lines the csv reader pulls, and where the current record starts."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.count = 0
        self.start: int | None = None

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.count += 1
        if self.start is None and text.strip("\r\n"):
            self.start = self.count  # blank lines before a record are skipped by csv
        return text

    def mark(self) -> None:
        self.start = None


def _csv_records(lines: Iterable[str], path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    lines = iter(lines)
    first = next(lines, "")
    counter = _LineCounter(itertools.chain([first], lines))
    reader = csv.DictReader(counter, delimiter=csv_delimiter(first))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise InvalidInput(f"{path.name} line 1: bad CSV header: {exc}") from exc
    header = [name.strip() for name in (fieldnames or [])]
    if any(_bad_char(name) for name in header):
        raise InvalidInput(
            f"{path.name} line 1: the header holds a control character or is not UTF-8"
        )
    reader.fieldnames = header
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if "image" not in header and "images" not in header:
        missing.append("image (or images)")
    if missing:
        raise InvalidInput(f"{path.name} lacks columns: {', '.join(missing)}")
    while True:
        counter.mark()
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader restarts on the next line, so one bad record costs one rejection.
            yield counter.start or counter.count, f"bad CSV: {exc}"
            continue
        line = counter.start or counter.count  # where the record starts (it may span lines)
        if None in record:
            yield line, "row has more values than the header (an unquoted comma?)"
            continue
        # A short row (say, without its trailing optional url cell) gets None for the cells it
        # lacks: the same as empty cells.
        yield line, {k: v for k, v in record.items() if v is not None}


def _jsonl_records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        why = _bad_char(text.rstrip("\r\n"))
        if why is not None and "UTF-8" in why:
            yield line, f"line {why}"
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, f"invalid JSON: {exc.msg}"
            continue
        if not isinstance(record, dict):
            yield line, "a JSONL row must be an object"
            continue
        # "url": null (or any null) means the field is absent, as an empty CSV cell does.
        yield line, {k: v for k, v in record.items() if v is not None}


def read_rows(path: Path, images_root: Path | None = None) -> ParsedFile:
    """Read and validate every row of a CSV or JSONL catalog file.

    Relative image paths are resolved against ``images_root`` (default: the file's folder).
    Raises ``NotFound`` when the file is absent and ``InvalidInput`` when it cannot be read as
    a catalog at all (wrong suffix, not UTF-8, CSV header lacking required columns).
    """
    path = Path(path)
    root = (Path(images_root) if images_root is not None else path.parent).resolve()
    rows: list[ItemRow] = []
    rejected: list[Rejection] = []
    first_seen: dict[str, int] = {}
    rows_read = 0
    for line, record in _records(path):
        rows_read += 1
        if isinstance(record, str):
            rejected.append(Rejection(line, None, record))
            continue
        raw_id = record.get("item_id")
        item_id = raw_id.strip() if isinstance(raw_id, str) and raw_id.strip() else None
        bad_text = _text_problems(record)
        if bad_text:
            shown = item_id if item_id is not None and not _bad_char(item_id) else None
            rejected.append(Rejection(line, shown, "; ".join(bad_text)))
            continue
        # Empty CSV cells count as missing, so the reason says "missing field" not "bad number".
        data = {k: v for k, v in record.items() if k and not (isinstance(v, str) and not v.strip())}
        try:
            data["images"] = split_image_field(data.get("image")) + split_image_field(
                data.get("images")
            )
            model = _RowModel.model_validate(data)
        except ValidationError as exc:
            rejected.append(Rejection(line, item_id, _format_errors(exc)))
            if item_id is not None:
                first_seen.setdefault(item_id, line)
            continue
        except ValueError as exc:
            rejected.append(Rejection(line, item_id, f"image: {exc}"))
            continue
        except TypeError as exc:  # a value of a type no validator expected: the row, not the file
            rejected.append(Rejection(line, item_id, f"unreadable row: {exc}"))
            continue
        if model.item_id in first_seen:
            first = first_seen[model.item_id]
            reason = f"duplicate item_id {model.item_id!r} (first on line {first})"
            rejected.append(Rejection(line, model.item_id, reason))
            continue
        first_seen[model.item_id] = line
        try:
            images = tuple(_resolve_image(given, root) for given in model.images)
        except ValueError as exc:
            rejected.append(Rejection(line, model.item_id, str(exc)))
            continue
        rows.append(
            ItemRow(
                line=line,
                item_id=model.item_id,
                title=model.title,
                category=model.category,
                price=model.price,
                available=model.available,
                url=model.url,
                images=images,
            )
        )
    return ParsedFile(rows=rows, rejected=rejected, rows_read=rows_read)
