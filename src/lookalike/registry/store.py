"""A file-system registry of immutable artifacts.

Layout (one registry per kind, e.g. ``models/`` and ``index/``)::

    models/
      effnet_lite0/
        1/ manifest.json model.onnx ...     immutable once written
        2/ ...
        aliases.json                        {"production": "2", "previous": "1"}
        aliases.lock                        flock'ed around every alias read-modify-write

An artifact is written into a hidden temp folder (``.tmp-<pid>-*``) beside its final place and
renamed into place only after its manifest (with a sha256 of every file) is written and fsynced,
so a reader never sees a half-written version; a folder left by a killed writer is never listed
as a version and is removed by the next writer once its pid is gone. Aliases live in one small
JSON file per name, replaced atomically (write temp, fsync, rename), so ``production`` and
``previous`` always move together. Every change to them is a read-modify-write under an
exclusive ``flock`` on ``aliases.lock``, so two promotes at once cannot lose an update; hold
:meth:`Registry.alias_lock` to move several aliases (or several artifacts) as one step.

A damaged ``aliases.json`` (not JSON, not an object, values that are not version strings or name
versions that do not exist) never raises from :meth:`Registry.aliases`: it returns the entries
that are valid and :meth:`Registry.alias_problems` says what was wrong, so a server serves what
it can and reports itself degraded. :meth:`Registry.aliases_strict` raises
:class:`BrokenAliases` instead, and :meth:`Registry.repair_aliases` (``lookalike registry
repair``) rewrites the file from what is valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.errors import (
    ConfigError,
    IntegrityError,
    InvalidInput,
    LookalikeError,
    NotFound,
    Unavailable,
)
from lookalike.core.textfiles import cannot_write, fsync_dir, write_output

__all__ = [
    "ALIASES",
    "ArtifactWriter",
    "BrokenAliases",
    "Ref",
    "Registry",
    "atomic_write_text",
    "sha256_file",
]

ALIASES = ("production", "previous", "candidate")
MANIFEST = "manifest.json"
ALIAS_FILE = "aliases.json"
LOCK_FILE = "aliases.lock"
TMP_PREFIX = ".tmp-"
LOCK_TIMEOUT_S = 60.0
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TMP_PID_RE = re.compile(r"^\.tmp-(\d+)-")
_STALE_TMP_S = 24 * 3600  # a temp folder without a pid (older writers) is stale after a day


class BrokenAliases(IntegrityError):
    """``aliases.json`` of a name is damaged; ``problems`` says how. Raised only by
    :meth:`Registry.aliases_strict`; run ``lookalike registry repair`` to fix it."""

    code = "broken_aliases"

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class _HeldLock:
    """One process's hold on one lock file: re-entrant across nested ``alias_lock`` calls."""

    def __init__(self) -> None:
        self.guard = threading.RLock()  # threads of one process queue here, processes on flock
        self.fd: int | None = None
        self.depth = 0
        self.pid = os.getpid()


_HELD: dict[str, _HeldLock] = {}
_HELD_GUARD = threading.Lock()


def _held_lock(path: Path) -> _HeldLock:
    key = str(path)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None or held.pid != os.getpid():  # a forked child holds nothing yet
            held = _HELD[key] = _HeldLock()
        return held


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


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


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half
    (a full disk: one clear error, the old file kept; ``core.textfiles.write_output``)."""
    write_output(path, text)


class ArtifactWriter:
    """Write the files of a new version into ``self.path``; see :meth:`Registry.create`."""

    def __init__(self, path: Path, ref: Ref) -> None:
        self.path = path
        self.ref = ref
        self.manifest: dict[str, Any] = {}


class Registry:
    """Artifacts of one kind under ``root`` (``models/`` or ``index/``)."""

    def __init__(self, root: Path, kind: str, fix: str | None = None) -> None:
        self.root = Path(root)
        self.kind = kind
        self.fix = fix  # the command that builds this product's artifacts, for "not found" errors

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def versions(self, name: str) -> list[str]:
        """Complete versions only: a hidden ``.tmp-*`` folder is never one, even with a manifest
        (a writer killed between writing its manifest and the rename leaves exactly that)."""
        base = self.root / name
        if not base.is_dir():
            return []
        found = [
            p.name
            for p in base.iterdir()
            if _VERSION_RE.match(p.name) and p.is_dir() and (p / MANIFEST).is_file()
        ]
        return sorted(found, key=lambda v: (int(v) if v.isdigit() else 0, v))

    def leftovers(self, name: str) -> list[Path]:
        """Temp folders of unfinished writes under ``name`` (live writers' included)."""
        base = self.root / name
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir() if p.name.startswith(TMP_PREFIX) and p.is_dir())

    def clean_leftovers(self, name: str) -> list[str]:
        """Remove temp folders whose writer is gone (its pid is dead, or, for a folder that
        names no pid, older than a day); return their names. A live writer's folder stays."""
        removed: list[str] = []
        for path in self.leftovers(name):
            match = _TMP_PID_RE.match(path.name)
            if match is not None:
                if _pid_alive(int(match.group(1))):
                    continue
            else:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < _STALE_TMP_S:
                    continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        return removed

    def unaliased_since(self, name: str, since: str) -> list[str]:
        """Versions of ``name`` created at or after ``since`` (``%Y-%m-%dT%H:%M:%SZ``, as in
        manifests) that no alias points at: what a job killed after writing a version, but
        before moving an alias to it, leaves behind. Nothing is deleted."""
        aliased = set(self.aliases(name).values())
        out: list[str] = []
        for version in self.versions(name):
            if version in aliased:
                continue
            try:
                created = str(self.manifest(Ref(name, version)).get("created_at", ""))
            except LookalikeError:
                continue
            if created >= since:  # ISO-8601 UTC strings of one format sort as times do
                out.append(version)
        return out

    def _read_aliases(self, name: str) -> tuple[dict[str, str], list[str]]:
        """(valid aliases, problems) of ``name``'s alias file; never raises for its content."""
        path = self.root / name / ALIAS_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}, []
        except OSError as exc:
            return {}, [f"{ALIAS_FILE} cannot be read: {exc.strerror or exc}"]
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return {}, [f"{ALIAS_FILE} is not valid JSON ({type(exc).__name__}: {exc})"[:200]]
        if not isinstance(data, dict):
            return {}, [f"{ALIAS_FILE} holds {type(data).__name__}, not an object of aliases"]
        valid: dict[str, str] = {}
        problems: list[str] = []
        known = set(self.versions(name))
        for key, value in data.items():
            if key not in ALIASES:
                problems.append(f"unknown alias {str(key)[:40]!r} ignored")
            elif value is None:
                continue  # an explicit null is an absent alias
            elif not isinstance(value, str) or not _VERSION_RE.match(value):
                problems.append(f"alias {key!r} holds {str(value)[:40]!r}, not a version string")
            elif value not in known:
                problems.append(f"alias {key!r} points at {name}:{value}, which does not exist")
            else:
                valid[key] = value
        return valid, problems

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of ``name``: only entries that point at existing versions.

        Never raises for a damaged alias file; :meth:`alias_problems` says what was dropped.
        """
        return self._read_aliases(name)[0]

    def alias_problems(self, name: str) -> list[str]:
        """What is wrong with ``name``'s alias file (empty when it is sound or absent)."""
        return self._read_aliases(name)[1]

    def aliases_strict(self, name: str) -> dict[str, str]:
        """Like :meth:`aliases`, but raise :class:`BrokenAliases` when anything was dropped."""
        valid, problems = self._read_aliases(name)
        if problems:
            raise BrokenAliases(
                f"{self.kind} {name!r}: {ALIAS_FILE} is damaged: {'; '.join(problems)} — "
                f"run `lookalike registry repair {name}`",
                problems,
            )
        return valid

    def resolve(self, ref: Ref | str) -> Ref:
        """Turn ``name:alias`` or ``name:latest`` into ``name:version``; raise if it is absent."""
        if isinstance(ref, str):
            ref = Ref.parse(ref)
        version = ref.version
        if version in ALIASES:
            valid, problems = self._read_aliases(ref.name)
            resolved = valid.get(version)
            if resolved is None:
                if problems:
                    raise NotFound(
                        f"{self.kind} {ref.name!r} has no usable {version!r} alias: "
                        f"{ALIAS_FILE} is damaged ({'; '.join(problems)}) — "
                        f"run `lookalike registry repair {ref.name}`"
                    )
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
        if self.fix:
            return f"run `{self.fix}`"
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
        self.clean_leftovers(name)  # what a killed writer left behind
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f"{TMP_PREFIX}{os.getpid()}-"))
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
                fsync_dir(base)
                writer.path = self.path(ref)
                writer.manifest = doc
                return
            raise ConfigError(f"could not find a free version number for {name}")
        except OSError as exc:
            ours = cannot_write(exc, f"{self.kind} {name} into {base} (nothing was promoted)")
            if ours is None:
                raise
            raise ours from exc
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

    @contextlib.contextmanager
    def alias_lock(self, name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the exclusive lock on ``name``'s aliases for the body.

        Re-entrant in one process (``promote`` inside the body does not deadlock), so a caller
        may move several aliases, or hold the locks of several names in a fixed order, as one
        step. Other processes wait; after ``timeout`` seconds this raises ``Unavailable``
        naming the pid that holds the lock. The lock dies with its process (kill -9 included).
        """
        base = self.root / name
        if not _NAME_RE.match(name):
            raise InvalidInput(f"bad artifact name {name!r}: use lower-case letters, digits, _.-")
        if not base.is_dir():
            raise NotFound(f"no {self.kind} named {name!r} — {self._fix_hint(name)}")
        held = _held_lock(base / LOCK_FILE)
        with held.guard:
            if held.depth == 0:
                held.fd = self._acquire(base / LOCK_FILE, name, timeout)
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
                if held.depth == 0 and held.fd is not None:
                    os.close(held.fd)  # closing the descriptor releases the flock
                    held.fd = None

    def _acquire(self, path: Path, name: str, timeout: float) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    os.close(fd)
                    raise Unavailable(
                        f"the aliases of {self.kind} {name!r} are locked by pid {holder} "
                        f"for over {timeout:.0f} s; try again when it has finished"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except BaseException:
                os.close(fd)
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _write_aliases(self, name: str, aliases: dict[str, str]) -> None:
        ordered = {a: aliases[a] for a in ALIASES if a in aliases}
        atomic_write_text(self.root / name / ALIAS_FILE, json.dumps(ordered, indent=2))

    def set_aliases(self, name: str, **aliases: str | None) -> dict[str, str]:
        """Set (a version) or clear (None) aliases of ``name`` in one locked, atomic step.

        Entries of a damaged alias file that were not valid are dropped by this write.
        """
        for alias in aliases:
            if alias not in ALIASES:
                raise InvalidInput(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        for version in aliases.values():
            if version is not None:
                self.resolve(Ref(name, version))  # versions are immutable: check before locking
        with self.alias_lock(name):
            current = self.aliases(name)
            for alias, version in aliases.items():
                if version is None:
                    current.pop(alias, None)
                else:
                    current[alias] = version
            self._write_aliases(name, current)
            return current

    def promote(self, ref: Ref | str) -> dict[str, str]:
        """Make ``ref`` production; the old production becomes previous. Deletes nothing."""
        ref = self.resolve(ref)
        with self.alias_lock(ref.name):
            current = self.aliases(ref.name)
            if current.get("production") == ref.version and not self.alias_problems(ref.name):
                return current
            if current.get("production") == ref.version:
                return self.set_aliases(ref.name, production=ref.version)
            return self.set_aliases(
                ref.name, production=ref.version, previous=current.get("production")
            )

    def rollback(self, name: str) -> dict[str, str]:
        """Swap production and previous in one atomic step."""
        with self.alias_lock(name):
            current = self.aliases(name)
            if "previous" not in current:
                raise NotFound(f"{self.kind} {name!r} has no previous version to roll back to")
            return self.set_aliases(
                name, production=current["previous"], previous=current.get("production")
            )

    def repair_aliases(self, name: str) -> dict[str, Any]:
        """Rewrite ``name``'s alias file from what is valid in it; say what was done.

        When no valid ``production`` is left, production points at the newest version whose
        recorded checks passed and whose files match its manifest, else at the newest intact
        version. Returns ``{"name", "changed", "problems", "before", "after", "actions"}``.
        Dead writers' temp folders are removed too (``"removed_leftovers"``).
        """
        with self.alias_lock(name):
            valid, problems = self._read_aliases(name)
            after = dict(valid)
            actions: list[str] = []
            if problems:
                actions.append("dropped what was invalid: " + "; ".join(problems))
            if "production" not in after:
                choice, why = self._repair_choice(name)
                if choice is not None:
                    after["production"] = choice
                    actions.append(f"production -> {name}:{choice} ({why})")
                    if after.get("previous") == choice:
                        after.pop("previous")
            changed = bool(problems) or after != valid
            if changed:
                self._write_aliases(name, after)
            removed = self.clean_leftovers(name)
            if removed:
                actions.append(f"removed {len(removed)} unfinished write(s): {', '.join(removed)}")
            return {
                "name": name,
                "kind": self.kind,
                "changed": changed,
                "problems": problems,
                "before": valid,
                "after": after,
                "actions": actions,
                "removed_leftovers": removed,
            }

    def _repair_choice(self, name: str) -> tuple[str | None, str]:
        intact = [v for v in reversed(self.versions(name)) if not self.verify(Ref(name, v))]
        for version in intact:
            try:
                checks = self.manifest(Ref(name, version)).get("checks")
            except LookalikeError:
                continue
            if isinstance(checks, dict) and checks.get("passed") is True:
                return version, "the newest version that passed its checks"
        if intact:
            return intact[0], "the newest intact version; none has passed checks on record"
        return None, "no intact version"
