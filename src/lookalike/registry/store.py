"""A file-system registry of immutable artifacts.

Layout (one registry per kind, e.g. ``models/`` and ``index/``)::

    models/
      effnet_lite0/
        1/ manifest.json model.onnx ...     immutable once written
        2/ ...
        aliases.json                        {"production": "2", "previous": "1"}

An artifact is written into a hidden temp folder beside its final place and renamed into place
only after its manifest (with a sha256 of every file) is written and fsynced, so a reader never
sees a half-written version. Aliases live in one small JSON file per name, replaced atomically
(write temp, fsync, rename), so ``production`` and ``previous`` always move together.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.errors import ConfigError, IntegrityError, InvalidInput, NotFound

__all__ = ["ALIASES", "ArtifactWriter", "Ref", "Registry", "atomic_write_text", "sha256_file"]

ALIASES = ("production", "previous", "candidate")
MANIFEST = "manifest.json"
ALIAS_FILE = "aliases.json"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True, order=True)
class Ref:
    """``name:version`` — the address of one artifact."""

    name: str
    version: str

    @classmethod
    def parse(cls, text: str, default_version: str = "production") -> Ref:
        name, _, version = text.partition(":")
        return cls(name, version or default_version)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets us open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ArtifactWriter:
    """Write the files of a new version into ``self.path``; see :meth:`Registry.create`."""

    def __init__(self, path: Path, ref: Ref) -> None:
        self.path = path
        self.ref = ref
        self.manifest: dict[str, Any] = {}


class Registry:
    """Artifacts of one kind under ``root`` (``models/`` or ``index/``)."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = Path(root)
        self.kind = kind

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def versions(self, name: str) -> list[str]:
        base = self.root / name
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
        return sorted(found, key=lambda v: (int(v) if v.isdigit() else 0, v))

    def aliases(self, name: str) -> dict[str, str]:
        path = self.root / name / ALIAS_FILE
        if not path.is_file():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: str(v) for k, v in data.items() if k in ALIASES and v}

    def resolve(self, ref: Ref | str) -> Ref:
        """Turn ``name:alias`` or ``name:latest`` into ``name:version``; raise if it is absent."""
        if isinstance(ref, str):
            ref = Ref.parse(ref)
        version = ref.version
        if version in ALIASES:
            resolved = self.aliases(ref.name).get(version)
            if resolved is None:
                raise NotFound(
                    f"{self.kind} {ref.name!r} has no {version!r} version yet — "
                    f"{self._fix_hint(ref.name)}"
                )
            version = resolved
        elif version == "latest":
            versions = self.versions(ref.name)
            if not versions:
                raise NotFound(f"no {self.kind} named {ref.name!r} — {self._fix_hint(ref.name)}")
            version = versions[-1]
        out = Ref(ref.name, version)
        if not (self.path(out) / MANIFEST).is_file():
            raise NotFound(f"{self.kind} {out} does not exist — {self._fix_hint(ref.name)}")
        return out

    def path(self, ref: Ref) -> Path:
        return self.root / ref.name / ref.version

    def manifest(self, ref: Ref | str) -> dict[str, Any]:
        ref = self.resolve(ref)
        try:
            data: dict[str, Any] = json.loads((self.path(ref) / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{self.kind} {ref}: unreadable manifest: {exc}") from exc
        return data

    def verify(self, ref: Ref | str) -> list[str]:
        """Return the problems found by checking every file against the manifest's sha256."""
        ref = self.resolve(ref)
        problems: list[str] = []
        try:
            files = self.manifest(ref).get("files", {})
        except IntegrityError as exc:
            return [exc.message]
        for rel, expected in files.items():
            p = self.path(ref) / rel
            if not p.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(p) != expected["sha256"]:
                problems.append(f"{rel}: checksum does not match the manifest")
        return problems

    def _fix_hint(self, name: str) -> str:
        if self.kind == "model":
            return "run `lookalike models build-default` (or `lookalike models list`)"
        return "run `lookalike index build` (or `lookalike index list`)"

    # -- writing -----------------------------------------------------------------------------
    def next_version(self, name: str) -> str:
        nums = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(nums, default=0) + 1)

    @contextlib.contextmanager
    def create(self, name: str, manifest: dict[str, Any] | None = None) -> Iterator[ArtifactWriter]:
        """Write a new version: yield a writer whose ``path`` is a temp folder.

        On a clean exit every file gets a sha256 in the manifest and the folder is renamed to
        ``name/<next version>``; on any error the temp folder is removed and nothing appears.
        """
        if not _NAME_RE.match(name):
            raise InvalidInput(f"bad artifact name {name!r}: use lower-case letters, digits, _.-")
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tmp-"))
        writer = ArtifactWriter(tmp, Ref(name, "?"))
        writer.manifest.update(manifest or {})
        try:
            yield writer
            files = {}
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    rel = p.relative_to(tmp).as_posix()
                    files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for _ in range(100):  # another writer may take the same number: retry with the next
                version = self.next_version(name)
                ref = Ref(name, version)
                writer.ref = ref
                doc = {
                    "name": name,
                    "version": version,
                    "kind": self.kind,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **writer.manifest,
                    "files": files,
                }
                atomic_write_text(tmp / MANIFEST, json.dumps(doc, indent=2, sort_keys=True))
                try:
                    os.rename(tmp, self.path(ref))
                except OSError:
                    if self.path(ref).exists():
                        continue
                    raise
                _fsync_dir(base)
                writer.path = self.path(ref)
                writer.manifest = doc
                return
            raise ConfigError(f"could not find a free version number for {name}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def update_manifest(self, ref: Ref, **fields: Any) -> None:
        """Add figures (evaluations, checks) to a manifest; files and checksums never change."""
        ref = self.resolve(ref)
        doc = self.manifest(ref)
        for key in ("files", "name", "version"):
            if key in fields:
                raise InvalidInput(f"manifest field {key!r} is immutable")
        doc.update(fields)
        atomic_write_text(self.path(ref) / MANIFEST, json.dumps(doc, indent=2, sort_keys=True))

    def set_aliases(self, name: str, **aliases: str | None) -> dict[str, str]:
        current = self.aliases(name)
        for alias, version in aliases.items():
            if alias not in ALIASES:
                raise InvalidInput(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
            if version is None:
                current.pop(alias, None)
            else:
                self.resolve(Ref(name, version))
                current[alias] = version
        atomic_write_text(self.root / name / ALIAS_FILE, json.dumps(current, indent=2))
        return current

    def promote(self, ref: Ref | str) -> dict[str, str]:
        """Make ``ref`` production; the old production becomes previous. Deletes nothing."""
        ref = self.resolve(ref)
        current = self.aliases(ref.name)
        if current.get("production") == ref.version:
            return current
        return self.set_aliases(
            ref.name, production=ref.version, previous=current.get("production")
        )

    def rollback(self, name: str) -> dict[str, str]:
        """Swap production and previous in one atomic step."""
        current = self.aliases(name)
        if "previous" not in current:
            raise NotFound(f"{self.kind} {name!r} has no previous version to roll back to")
        return self.set_aliases(
            name, production=current["previous"], previous=current.get("production")
        )
