"""The post pre-filter kind: task ``post-prefilter``, one role, ``models/post_prefilter/N/``.

Artifact layout: :mod:`lookalike.moderation.prefilter`. Checks, in order (recorded in the
manifest):

=========  ====================================================================================
checksums  every file matches the manifest (the backbone and detector copies included)
load       the classifier, backbone and detector load; the classifier's width matches the blocks
output     on the held-out photos' stored features: finite scores in [0, 1], both labels present
metric     precision at the recall target on the held-out photos, not below production's on the
           same photos by more than ``TOLERANCE`` (higher is better). Production is scored on
           the candidate's held-out features when both read the same backbone and detector
           (same checksums), else on the photos themselves (``holdout.csv``)
latency    one photo scored (detector, two backbone passes, classifier), p95 ≤ ``LATENCY_P95_MS``
=========  ====================================================================================

Fallback chain of the one stage, ``prefilter``: the model → "send everything to the humans"
(score 1.0, every post enqueued, ``served_by: send-to-humans``). A model whose files cannot load
serves that last step and reports itself degraded in /health.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from lookalike.core.errors import IntegrityError, LookalikeError, short_reason
from lookalike.core.images import load_image_file
from lookalike.lifecycle import LoadContext, MetricGate, Release, Step
from lookalike.lifecycle.single import (
    ChainedGeneration,
    SingleModelKind,
    Unbuilt,
    latency_check,
    load_failed,
    output_result,
    product_chain,
)
from lookalike.moderation.evaluation import precision_at_recall
from lookalike.moderation.features import stack_blocks
from lookalike.moderation.prefilter import (
    BACKBONE_FILE,
    DETECTOR_FILE,
    HOLDOUT_CSV,
    HOLDOUT_NPZ,
    Classifier,
    PostScore,
    Scorer,
    SendToHumans,
)
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckResult

__all__ = [
    "ARTIFACT_NAME",
    "BUILD_FIX",
    "PREFILTER_CHECKS",
    "TASK",
    "PrefilterGeneration",
    "PrefilterKind",
    "holdout_precision",
    "read_holdout",
]

log = logging.getLogger("lookalike.moderation")
TASK = "post-prefilter"
ARTIFACT_NAME = "post_prefilter"
BUILD_FIX = "lookalike moderation train"
METRIC = "precision_at_recall"
PREFILTER_CHECKS = ("checksums", "load", "output", "metric", "latency")
TOLERANCE = 0.02  # precision at the recall target, absolute
# A batch job, not a shopper's query: one post (detector + two backbone passes, about 40 ms on
# an idle 2-core machine) may take up to a second while other work shares the CPU.
LATENCY_P95_MS = 1000.0
LATENCY_RUNS = 10
BATCH_BUDGET_S = 120.0


def read_holdout(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[Path]]:
    """The held-out photos of an artifact: (feature blocks, labels, photo paths)."""
    try:
        with np.load(folder / HOLDOUT_NPZ, allow_pickle=False) as z:
            blocks = {k: z[k] for k in z.files if k != "y"}
            y = z["y"].astype(int)
        with (folder / HOLDOUT_CSV).open(newline="") as fh:
            paths = [Path(r["path"]) for r in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError) as exc:
        raise IntegrityError(f"cannot read the held-out photos of {folder}: {exc}") from exc
    return blocks, y, paths


def _same_inputs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    files_a, files_b = a.get("files", {}), b.get("files", {})
    return all(
        files_a.get(f, {}).get("sha256") == files_b.get(f, {}).get("sha256") is not None
        for f in (BACKBONE_FILE, DETECTOR_FILE)
    )


def holdout_precision(
    registry: Registry, ref: Ref, on: Ref, blocks: dict[str, np.ndarray], y: np.ndarray,
    paths: Sequence[Path],
) -> float:  # fmt: skip
    """Precision at ``ref``'s recall target on the held-out photos of ``on`` (features ``blocks``
    as ``on``'s build computed them; recomputed from ``paths`` when ``ref`` reads other inputs)."""
    folder = registry.path(ref)
    clf = Classifier.load(folder / "classifier.npz")
    if ref != on and not _same_inputs(registry.manifest(ref), registry.manifest(on)):
        scorer = Scorer(folder, registry.manifest(ref), ref.version)
        blocks = {}
        rows = [scorer.features([load_image_file(p)]).blocks for p in paths]
        blocks = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    scores = clf.score(stack_blocks(blocks, clf.blocks))
    return precision_at_recall(scores, y, clf.recall_target)


class PrefilterKind(SingleModelKind):
    task: ClassVar[str] = TASK
    product: ClassVar[str] = "prefilter"
    artifact: ClassVar[str] = ARTIFACT_NAME
    build_fix: ClassVar[str] = BUILD_FIX
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {"model": PREFILTER_CHECKS}

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        return (MetricGate(METRIC, higher_is_better=True, tolerance=TOLERANCE),)

    def check_steps(self, registry: Registry, ref: Ref, **options: Any) -> Iterator[CheckResult]:
        folder = registry.path(ref)
        manifest = registry.manifest(ref)
        try:
            scorer = Scorer(folder, manifest, ref.version)
            blocks, y, paths = read_holdout(folder)
            width = stack_blocks(blocks, scorer.classifier.blocks).shape[1]
            if width != scorer.classifier.dim:
                raise IntegrityError(
                    f"features are {width} wide, classifier {scorer.classifier.dim}"
                )
        except (LookalikeError, KeyError, OSError) as exc:
            yield load_failed(exc)
            return
        clf = scorer.classifier
        yield CheckResult(
            "load", True, {"blocks": list(clf.blocks), "features": clf.dim},
            f"logistic regression over {'+'.join(clf.blocks)} ({clf.dim} features)",
        )  # fmt: skip
        scores = clf.score(stack_blocks(blocks, clf.blocks))
        problems = []
        if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
            problems.append("scores outside [0, 1] or not finite")
        if len(set(y.tolist())) < 2:
            problems.append("the held-out photos need both labels")
        yield output_result(
            problems, {"photos": len(y), "positives": int(y.sum())},
            f"{len(y)} held-out photos: finite scores in [0, 1]",
        )  # fmt: skip
        yield self.metric_check(
            registry, ref, precision_at_recall(scores, y, clf.recall_target),
            lambda prod: holdout_precision(registry, prod, ref, blocks, y, paths),
            source=f"{len(y)} held-out photos, recall target {clf.recall_target:g}",
        )  # fmt: skip
        yield self._latency(scorer, paths)

    def _latency(self, scorer: Scorer, paths: Sequence[Path]) -> CheckResult:
        images: list[Image.Image] = []
        for p in paths[:LATENCY_RUNS]:
            try:
                images.append(load_image_file(p))
            except (OSError, LookalikeError):
                continue
        if not images:  # the photos moved: a synthetic one still times the whole path
            rng = np.random.default_rng(0)
            images = [Image.fromarray(rng.integers(0, 256, (320, 240, 3), dtype=np.uint8))]
        return latency_check(
            lambda i: scorer.score([images[i % len(images)]]), runs=LATENCY_RUNS,
            budget_ms=LATENCY_P95_MS, what="one post",
        )  # fmt: skip

    def load(
        self, release: Release, context: LoadContext
    ) -> PrefilterGeneration | UnbuiltPrefilter:
        if not release.members:
            return UnbuiltPrefilter(release)
        registry = self.registry("model")
        ref = release.members["model"]
        return PrefilterGeneration.load(
            release, context, registry.path(ref), registry.manifest(ref)
        )

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        return [f"`lookalike moderation score` and servers use {ref} from their next reload"]


class PrefilterGeneration(ChainedGeneration):
    """A loaded pre-filter release: :meth:`score` runs model → send everything to the humans."""

    product = "prefilter"

    def __init__(
        self,
        release: Release,
        context: LoadContext,
        scorer: Scorer | None,
        why: str | None,
        manifest: dict[str, Any],
    ) -> None:
        self.release = release
        self.scorer = scorer
        self.why = why
        self.manifest = manifest
        self.version = str(release.members["model"])
        self.humans = SendToHumans(self.version)
        # a batch of posts, not a shopper's query: a hung model still hands over, a slow one not
        steps: list[Step[Any]] = [
            Step("model", scorer, why, label=f"pre-filter {self.version}"),
            Step("send-to-humans", self.humans, label="send everything to the humans"),
        ]
        self.chain = product_chain(
            "prefilter", "prefilter", steps, context, BUILD_FIX, min_budget_s=BATCH_BUDGET_S
        )
        self.chains = {"prefilter": self.chain}

    @classmethod
    def load(
        cls, release: Release, context: LoadContext, folder: Path, manifest: dict[str, Any]
    ) -> PrefilterGeneration:
        version = str(release.members["model"])
        scorer: Scorer | None = None
        why: str | None = None
        try:
            scorer = Scorer(folder, manifest, version)
            probe = Image.fromarray(np.full((64, 48, 3), 127, np.uint8))
            scorer.score([probe])
        except Exception as exc:  # noqa: BLE001 - the humans answer; the reason is shown
            why = f"pre-filter {version} could not load: {short_reason(exc, 200)}"
            log.warning("%s — sending every post to the moderators", why)
        return cls(release, context, scorer, why, manifest)

    @property
    def threshold(self) -> float:
        return self.scorer.threshold if self.scorer is not None else self.humans.threshold

    def score(
        self, images: Sequence[Image.Image], captions: Sequence[str | None] | None = None
    ) -> tuple[list[PostScore], str, list[str]]:
        """(answers, served_by, fallback reasons)."""
        answers, engine, reasons = self.chain.run(lambda e: e.score(images, captions))
        return answers, engine.served_by, reasons

    @property
    def served_by(self) -> str:
        return self.scorer.served_by if self.scorer is not None else self.humans.served_by

    def health(self) -> dict[str, Any]:
        metrics = self.manifest.get("metrics", {})
        down = self.scorer is None
        why = f"{self.why} — every post goes to the moderators; run `{BUILD_FIX}`"
        return self.health_body(
            {
                "blocks": self.manifest.get("blocks"),
                "threshold": self.threshold,
                "recall_target": self.manifest.get("recall_target"),
                "holdout": metrics.get("holdout"),
            },
            {"prefilter": [{"step": "send everything to the humans", "ready": True, "why": None}]},
            fell_back=down,
            problems=[why] if down else [],
        )


class UnbuiltPrefilter(Unbuilt):
    """No pre-filter promoted yet: scoring answers 503 naming ``lookalike moderation train``."""

    product = "prefilter"
    build_fix = BUILD_FIX

    threshold = 1.0

    def score(
        self, images: Sequence[Image.Image], captions: Sequence[str | None] | None = None
    ) -> tuple[list[PostScore], str, list[str]]:
        raise self.unavailable()
