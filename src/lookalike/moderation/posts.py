"""The records of the moderation loop: a post, its scores, a decision, an import's outcome.

Plain dataclasses, no I/O: the store (:mod:`lookalike.moderation.store`) reads and writes them,
the importers (:mod:`~lookalike.moderation.importer`, :mod:`~lookalike.moderation.instagram`)
make :class:`Post` objects, and the pre-filter's scorer makes :class:`PostScore` objects.

A post's ``status`` moves forward only::

    imported ──► scored  (below the threshold: never shown)
       │     └─► queued  ──► decided  (approve / reject; undo puts it back in the queue)
       └──► rejected_unreadable  (its image could not be read; ``reject_reason`` says why)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "ACTIONS",
    "STATUSES",
    "Action",
    "Decision",
    "DecisionLabel",
    "ImportResult",
    "Post",
    "PostScore",
    "QueuedPost",
    "Status",
]

Status = Literal["imported", "rejected_unreadable", "scored", "queued", "decided"]
STATUSES: tuple[str, ...] = ("imported", "rejected_unreadable", "scored", "queued", "decided")
Action = Literal["approve", "reject", "skip", "undo"]
ACTIONS: tuple[str, ...] = ("approve", "reject", "skip", "undo")


@dataclass(frozen=True)
class Post:
    """One Instagram (or exported) post as imported.

    ``image_path`` is the local stored copy (normalised JPEG under the moderation media folder),
    ``media_url`` where it came from when it was downloaded.
    """

    post_id: str
    source: str
    media_type: str = "IMAGE"
    caption: str = ""
    author: str = ""
    permalink: str | None = None
    timestamp: datetime | None = None
    image_path: Path | None = None
    media_url: str | None = None


@dataclass(frozen=True)
class PostScore:
    """What the pre-filter said about one post (written by ``lookalike moderation score``).

    ``matches``: the top catalog items, best first, as ``(item_id, score)``; ``enqueue`` puts
    the post in the moderators' queue, where a higher ``priority`` comes first.
    """

    post_id: str
    score: float
    safe: bool
    exposure: float
    matches: list[tuple[str, float]]
    duplicate_of: str | None
    classifier_version: str
    model_version: str
    enqueue: bool
    priority: float


@dataclass(frozen=True)
class ImportResult:
    """Counts of one import: new posts, posts already known, and posts rejected (with why)."""

    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def __add__(self, other: ImportResult) -> ImportResult:
        return ImportResult(
            self.added + other.added,
            self.duplicates + other.duplicates,
            self.rejected + other.rejected,
            self.reasons + other.reasons,
        )


@dataclass(frozen=True)
class QueuedPost:
    """A post as a moderator sees it: the post, its scores, and the queued near-duplicates."""

    post: Post
    status: str
    score: float
    safe: bool
    matches: list[tuple[str, float]]
    duplicate_of: str | None
    duplicates: list[str]
    classifier_version: str
    model_version: str
    priority: float


@dataclass(frozen=True)
class Decision:
    """One row of the append-only audit log."""

    id: int
    post_id: str
    moderator: str
    action: str
    item_id: str | None
    at: datetime
    classifier_version: str | None
    model_version: str | None
    undoes: int | None
    batch_id: int | None


@dataclass(frozen=True)
class DecisionLabel:
    """A post's standing decision (approve or reject, undone ones left out): a training label."""

    post_id: str
    image_path: Path | None
    caption: str
    action: str
    item_id: str | None
    at: datetime

    @property
    def decided_at(self) -> datetime:
        return self.at
