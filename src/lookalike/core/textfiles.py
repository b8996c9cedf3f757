"""Reading a text file a user hands a command: its text, or an error that says why not.

Every command that takes a CSV or JSONL file (price listings, a labelled photo folder, the seed
data's label files, retrieval pairs, rental reviews, post exports) reads it here, so a missing
file, a folder, a binary file or a spreadsheet saved in another encoding gives the same clear
:class:`~lookalike.core.errors.InvalidInput` (exit 1 with one line), never a traceback. A UTF-8
byte-order mark (what Excel writes) is dropped, and a CSV's column names are matched without
case or surrounding spaces (``File ,Has_Dress`` reads as ``file,has_dress``). A file whose header
line holds no comma but semicolons or tabs (a spreadsheet saved in a European locale, a TSV) is
read with that separator: :func:`csv_delimiter`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lookalike.core.errors import InvalidInput

__all__ = ["check_text", "csv_delimiter", "csv_rows", "read_text_file"]


def read_text_file(path: Path | str, kind: str = "CSV") -> str:
    """The text of the ``kind`` file (CSV, JSONL) at ``path``: UTF-8, a BOM allowed."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source} is not UTF-8 text (byte {exc.start})") from exc
    return check_text(text, source, kind)


def check_text(text: str, source: str, kind: str = "CSV") -> str:
    """``text`` (a file's content, however it was read), refused when it holds NUL bytes."""
    if "\0" in text:
        raise InvalidInput(f"{source} holds NUL bytes: not a {kind} file")
    return text


def csv_delimiter(text: str) -> str:
    """The separator of a CSV whose text (or first line) is ``text``: read from its header line.

    A comma when the header holds one (the format every command documents), else a semicolon or a
    tab when it holds one of those, else a comma (a one-column file).
    """
    header = text.lstrip("\r\n").split("\n", 1)[0]
    if "," in header:
        return ","
    for sep in (";", "\t"):
        if sep in header:
            return sep
    return ","


def csv_rows(path: Path | str) -> list[dict[str, str]]:
    """The rows of the CSV file at ``path`` as dicts keyed by its header, lower-cased and stripped.

    A short row's missing fields are ``""`` (not ``None``), so a caller checks values, not types.
    Two columns whose names differ only in case or spaces are refused: which one is meant?
    """
    text = read_text_file(path)
    reader = csv.DictReader(
        io.StringIO(text, newline=""), restval="", delimiter=csv_delimiter(text)
    )
    try:
        header = reader.fieldnames or []
        names = [name.strip().lower() for name in header]
        clashes = sorted({n for n in names if n and names.count(n) > 1})
        if clashes:
            raise InvalidInput(f"{path}: column {clashes[0]!r} appears more than once")
        reader.fieldnames = names
        return list(reader)
    except csv.Error as exc:
        raise InvalidInput(f"{path}: not a readable CSV ({exc})") from exc
