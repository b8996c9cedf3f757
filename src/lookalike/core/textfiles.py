"""Reading a text file a user hands a command: its text, or an error that says why not.

Every command that takes a CSV or JSONL file (price listings, a labelled photo folder, the seed
data's label files, retrieval pairs, rental reviews, post exports) reads it here, so a missing
file, a folder, a binary file or a spreadsheet saved in another encoding gives the same clear
:class:`~lookalike.core.errors.InvalidInput` (exit 1 with one line), never a traceback. A UTF-8
byte-order mark (what Excel writes) is dropped, and a CSV's column names are matched without
case or surrounding spaces (``File ,Has_Dress`` reads as ``file,has_dress``). A file whose header
line holds no comma but semicolons or tabs (a spreadsheet saved in a European locale, a TSV) is
read with that separator: :func:`csv_delimiter`.

Writing one (a report, a JSON of figures, a CSV of suggestions) goes through
:func:`output_file` / :func:`write_output`: whole or not at all (a temp file beside it, renamed
over it), and a full disk or a folder that cannot be written is one :class:`CannotWrite` line
(:func:`cannot_write`, which the registry's version writer uses as well), never a traceback
and never an empty or half file left at the path.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from lookalike.core.errors import ConfigError, InvalidInput

__all__ = [
    "CANNOT_WRITE",
    "CannotWrite",
    "cannot_write",
    "check_text",
    "csv_delimiter",
    "csv_rows",
    "fsync_dir",
    "output_file",
    "read_text_file",
    "write_output",
]

# Reasons a write fails that are the machine's, not the code's: one clear error for each.
CANNOT_WRITE = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


class CannotWrite(ConfigError):
    """A file or folder could not be written for a reason of the machine (see CANNOT_WRITE)."""


# A path a user named that cannot be a file: what to do instead.
_NOT_A_FILE = {
    errno.EISDIR: "it is a folder: name a file to write",
    errno.ENOTDIR: "a part of its path is a file, not a folder",
    errno.EEXIST: "a part of its path is a file, not a folder",
}


def cannot_write(exc: OSError, what: str) -> CannotWrite | None:
    """The one-line error for ``exc`` while writing ``what``; None for any other OSError."""
    if exc.errno in _NOT_A_FILE:
        return CannotWrite(f"cannot write {what}: {_NOT_A_FILE[exc.errno]}")
    if exc.errno not in CANNOT_WRITE:
        return None
    return CannotWrite(
        f"cannot write {what}: {exc.strerror}; nothing was written (free some space or fix "
        "the folder's permissions, then run it again)"
    )


@contextlib.contextmanager
def output_file(path: Path | str, *, newline: str | None = "") -> Iterator[TextIO]:
    """A UTF-8 text file at ``path``, written whole or not at all (module doc)."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's file is private; what we write is for people to read
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)  # the rename itself survives a crash
    except OSError as exc:
        ours = cannot_write(exc, str(path))
        if ours is None:
            raise
        raise ours from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the file system allows."""
    with contextlib.suppress(OSError):  # not every file system lets us open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_output(path: Path | str, text: str) -> None:
    """``text`` into ``path`` through :func:`output_file`."""
    with output_file(path, newline=None) as f:
        f.write(text)


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
