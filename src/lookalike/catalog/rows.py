"""Reading and validating catalog import files (CSV or JSONL), one row at a time.

Every bad row becomes a ``Rejection`` with its line number and a reason a person can act on;
only a file that cannot be read at all raises. Image paths are resolved and checked to be
regular files here; whether they decode is decided later, when the image is normalised.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lookalike.core.errors import InvalidInput, NotFound

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


class _RowModel(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    item_id: Annotated[str, Field(pattern=ITEM_ID_PATTERN)]
    title: Annotated[str, Field(min_length=1, max_length=300)]
    category: Annotated[str, Field(min_length=1, max_length=100)]
    price: Annotated[float, BeforeValidator(_parse_price)]
    available: Annotated[bool, BeforeValidator(_parse_available)]
    url: Annotated[str | None, BeforeValidator(_empty_to_none), Field(max_length=2048)] = None
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
    path = Path(given)
    if not path.is_absolute():
        path = root / path
    # resolve() follows symlinks and "..": the user named this path, so wherever it really
    # points is fine, as long as that is a plain file (not a FIFO, device or directory).
    resolved = path.resolve()
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise ValueError(f"image not found: {given}") from None
    except OSError as exc:
        raise ValueError(f"cannot read image {given}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"image is not a regular file: {given}")
    return RowImage(given=given, path=resolved)


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, raw record) pairs; a string record is a reason the row could not be read."""
    suffix = path.suffix.lower()
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise NotFound(f"catalog file not found: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read catalog file {path}: {exc.strerror}") from exc
    with handle:
        try:
            if suffix == ".csv":
                yield from _csv_records(handle, path)
            elif suffix in (".jsonl", ".ndjson"):
                yield from _jsonl_records(handle)
            else:
                raise InvalidInput(
                    f"unsupported catalog file type {suffix or '(none)'!r} for {path.name}: "
                    "use .csv or .jsonl"
                )
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path.name} is not UTF-8 text: {exc}") from exc


def _csv_records(handle: Any, path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(handle)
    header = [name.strip() for name in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if "image" not in header and "images" not in header:
        missing.append("image (or images)")
    if missing:
        raise InvalidInput(f"{path.name} lacks columns: {', '.join(missing)}")
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"{path.name} line {reader.line_num}: bad CSV: {exc}") from exc
        # line_num is where the record ends; equal to its start for one-line rows.
        line = reader.line_num
        if None in record:
            yield line, "row has more values than the header (an unquoted comma?)"
            continue
        yield line, dict(record)


def _jsonl_records(handle: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, f"invalid JSON: {exc.msg}"
            continue
        if not isinstance(record, dict):
            yield line, "a JSONL row must be an object"
            continue
        yield line, record


def read_rows(path: Path, images_root: Path | None = None) -> ParsedFile:
    """Read and validate every row of a CSV or JSONL catalog file.

    Relative image paths are resolved against ``images_root`` (default: the file's folder).
    Raises ``NotFound`` when the file is absent and ``InvalidInput`` when it cannot be read as
    a catalog at all (wrong suffix, not UTF-8, CSV header lacking required columns).
    """
    path = Path(path)
    root = Path(images_root) if images_root is not None else path.parent
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
