"""Load an embedder from the model registry, walking a fallback ladder that says why it stepped.

Ladder (``runtime="auto"``)::

    cuda      ONNX Runtime CUDAExecutionProvider (fp32), else torch on CUDA
    onnx-cpu  ONNX Runtime on CPU, the manifest's ``default_variant`` (int8 or fp32), then fp32
    torch-cpu the artifact's ``weights.pt`` rebuilt in torch (needs torch; serving does not)

A trained model's manifest names a projection head (``head: {"file": "head.npz", ...}``, see
:mod:`lookalike.embed.heads`): every step then applies it after the backbone, in numpy, with the
tower chosen by ``embed(images, role=...)``. Without a head ``role`` changes nothing.

Every skipped or failed step is logged on the ``lookalike.embed`` logger and the reasons end up
in ``Embedder.info.reason``. A GPU step skipped on a machine without an NVIDIA GPU is expected,
so it is logged once per process at DEBUG; any other skip or failure is a WARNING. A step is
served only after a load check (one synthetic image must give a finite unit vector of the right
width), so a model that outputs NaN is never served.
``runtime`` pins one step (``LOOKALIKE_SEARCH__RUNTIME``). torch is imported only inside the
torch steps, so serving works where torch is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from lookalike.core.errors import (
    ConfigError,
    IntegrityError,
    InvalidInput,
    Unavailable,
    short_reason,
)
from lookalike.embed.bodyparts import BodyPartDetector, garment_boxes, may_show_person
from lookalike.embed.heads import ROLES, ProjectionHead, Role
from lookalike.embed.localize import FMAP_OUTPUT, Garment, LocalizerHead
from lookalike.embed.measure import cpu_threads
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.regions import Box, crop_box
from lookalike.embed.session import onnx_session
from lookalike.registry import Ref, Registry

__all__ = [
    "RUNTIMES",
    "Embedder",
    "EmbedderInfo",
    "LoadedEmbedder",
    "load_embedder",
    "onnx_session",
]

log = logging.getLogger("lookalike.embed")

RUNTIMES = ("auto", "cuda", "onnx-cpu", "torch-cpu")
BATCH = 32
_INPUT = "pixels"


def _nvidia_gpu_present() -> bool:
    """A cheap test for an NVIDIA driver, so torch is imported only where CUDA can exist."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


# Expected skips already said at DEBUG in this process: a CPU-only machine loads embedders for
# every command and every refresh, and the same "no GPU" line each time is noise.
_said: set[str] = set()


@dataclass(frozen=True)
class EmbedderInfo:
    """What is serving: ``ref`` ("effnet_lite0:1"), width, variant, engine, and why this one."""

    ref: str
    dim: int
    variant: str
    served_by: str
    reason: str
    # the manifest's calibrated ``score_labels`` ({label: min cosine}) as pairs; () when none
    score_labels: tuple[tuple[str, float], ...] = ()
    # the same for a query of a garment worn by a person (``score_labels_worn``; when the
    # manifest has none, ``score_labels``): the category signature is not in those scores
    score_labels_worn: tuple[tuple[str, float], ...] = ()


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns images into ``(n, dim)`` float32 L2-normalised rows.

    ``role`` is "query" for a shopper's photo and "catalog" (the default) for catalog photos;
    a model without a learned head gives the same rows for both.
    """

    info: EmbedderInfo

    def embed(self, images: Sequence[Image.Image], role: Role = "catalog") -> np.ndarray: ...


class LoadedEmbedder:
    """An :class:`Embedder` over any batch function ``(n,3,S,S) float32 -> (n, backbone dim)``.

    It applies the manifest's preprocessing, batches by ``batch_size`` and, when the model has
    one, the projection ``head``; safe to call from several threads when the batch function is
    (ONNX Runtime sessions and torch no-grad are). ``query_crop`` is the region of a shopper's
    photo the model was trained on ("whole", "upper", ...): callers that cut crops read it.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        preprocess: PreprocessConfig,
        info: EmbedderInfo,
        batch_size: int = BATCH,
        *,
        head: ProjectionHead | None = None,
        backbone_dim: int | None = None,
        query_crop: str = "whole",
        localizer: LocalizerHead | None = None,
        run_maps: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        detector: BodyPartDetector | None = None,
    ) -> None:
        self._run = run
        self.detector = detector
        self.localizer = localizer if run_maps is not None else None
        self._run_maps = run_maps
        self.preprocess = preprocess
        self.info = info
        self.batch_size = batch_size
        self.head = head
        self.backbone_dim = backbone_dim or (head.in_dim if head else info.dim)
        self.query_crop = query_crop

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Backbone rows ``(n, backbone_dim)`` (unit norm) of preprocessed ``(n, 3, S, S)`` pixels.

        Without a head these are the embeddings; with one, :meth:`project` finishes the job.
        """
        n = len(pixels)
        out = np.empty((n, self.backbone_dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = self._run(pixels[start : start + self.batch_size])
            out[start : start + len(chunk)] = chunk
        # Re-normalise: int8 rounding leaves norms a hair off 1, and callers use inner product.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_backbone(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Backbone rows of PIL images, before any head (what training and caches store)."""
        for img in images:
            if not isinstance(img, Image.Image):
                raise InvalidInput(f"expected PIL images, got {type(img).__name__}")
        if not images:
            return np.empty((0, self.backbone_dim), dtype=np.float32)
        return self.embed_pixels(preprocess_batch(images, self.preprocess))

    def project(
        self,
        features: np.ndarray,
        role: Role = "catalog",
        images: Sequence[Image.Image] | None = None,
        *,
        worn: bool = False,
    ) -> np.ndarray:
        """Apply the head (if any) to backbone rows; ``images`` feed a colour signature.
        ``worn``: the rows are of garments a person wears (see :meth:`ProjectionHead.apply`)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be 'query' or 'catalog', got {role!r}")
        if self.head is None:
            return features
        colour = self.head.colours(images) if images is not None else None
        return self.head.apply(features, role, colour, worn=worn)

    def locate(self, images: Sequence[Image.Image]) -> list[list[Garment]]:
        """The worn garments the body-part detector finds per photo, the primary one first
        (empty lists without a detector, or for photos with no person)."""
        return [found for found, _ in self.locate_people(images)]

    def locate_people(self, images: Sequence[Image.Image]) -> list[tuple[list[Garment], bool]]:
        """:meth:`locate` and, per photo, whether it may show a person (garments found, or
        :func:`~lookalike.embed.bodyparts.may_show_person`): one detector pass."""
        if self.detector is None:
            return [([], False) for _ in images]
        out = []
        for parts in self.detector.detect(images):
            found = garment_boxes(parts)
            out.append((found, bool(found) or may_show_person(parts)))
        return out

    def embed_regions(
        self, image: Image.Image, boxes: Sequence[Box], role: Role = "query"
    ) -> np.ndarray:
        """Embed regions of one photo of a person, each corrected for the photo's context.

        With a garment-aware head (``context_weight`` > 0 in its meta), a region's backbone row
        ``f`` becomes ``f - w * (f_whole - centre)`` before the head: the features the region
        shares with the whole photo (skin, hair, the street behind) are taken out, so a worn
        garment meets a catalog photo of it on the garment alone. The category classifier still
        reads the region's own row. Without such a head this is :meth:`embed` of the crops.
        """
        crops = [crop_box(image, b) for b in boxes]
        if not crops:
            return np.empty((0, self.info.dim), np.float32)
        if self._context_weight() <= 0:
            return self.embed(crops, role, worn=True)
        feats = self.embed_backbone([image, *crops])
        return self._corrected(feats[:1], feats[1:], crops, role)

    def _context_weight(self) -> float:
        head = self.head
        return float(head.extra.get("context_weight", 0.0)) if head is not None else 0.0

    def _corrected(
        self, whole: np.ndarray, own: np.ndarray, crops: Sequence[Image.Image], role: Role
    ) -> np.ndarray:
        """Head rows of region rows ``own`` with the whole photo's row ``whole`` taken out."""
        assert self.head is not None
        tower = self.head.query if role == "query" else self.head.catalog
        centre = tower.centre if tower.centre is not None else 0.0
        corrected = own - self._context_weight() * (whole - centre)
        return self.project_rows(corrected, role, crops, kind_features=own, worn=True)

    def project_rows(
        self,
        features: np.ndarray,
        role: Role,
        images: Sequence[Image.Image],
        *,
        kind_features: np.ndarray | None = None,
        worn: bool = False,
    ) -> np.ndarray:
        """:meth:`project` with the rows the category classifier reads given apart."""
        if self.head is None:
            return features
        colour = self.head.colours(images)
        return self.head.apply(features, role, colour, kind_features, worn=worn)

    def _full_length(self, full_features: np.ndarray) -> bool | None:
        """Does the full-length crop show one of the head's ``full_body`` kinds (a dress, a
        jumpsuit)? None when the model has no category classifier to tell."""
        head = self.head
        full_body = set(head.extra.get("full_body", ())) if head is not None else set()
        if head is None or head.category is None or not full_body:
            return None
        probs = head.category_probabilities(full_features)[0]
        p_full = sum(
            float(p) for c, p in zip(head.categories, probs, strict=True) if c in full_body
        )
        return p_full >= 0.5

    def primary_garment(self, image: Image.Image, found: Sequence[Garment]) -> list[Garment]:
        """The garments to search for in a photo of a person, the main one first.

        The full-length box (shoulders to feet) is a dress, a jumpsuit — when the category
        classifier reads it as one of the head's ``full_body`` kinds; otherwise the person wears
        separates and the top (``upper``) comes first, then the ``lower`` garment.
        """
        by = {g.label: g for g in found}
        if "full" not in by:
            return list(found)
        full = self._full_length(self.embed_backbone([crop_box(image, by["full"].box)]))
        return _ordered(by, found, full)

    def embed_worn(
        self, image: Image.Image, found: Sequence[Garment], *, primary_only: bool = True
    ) -> tuple[list[Garment], np.ndarray]:
        """:meth:`primary_garment` then :meth:`embed_regions` (query rows), in the fewest
        backbone passes: the whole photo and its full-length crop go in one batch, whose crop
        row both decides dress or separates and, for a dress, is the query; the top and bottom
        are embedded only for separates. ``primary_only``: the main garment alone."""
        by = {g.label: g for g in found}
        if "full" not in by or self._context_weight() <= 0:
            garments = self.primary_garment(image, found)
            garments = garments[:1] if primary_only else garments
            return garments, self.embed_regions(image, [g.box for g in garments])
        full_crop = crop_box(image, by["full"].box)
        feats = self.embed_backbone([image, full_crop])
        whole = feats[:1]
        garments = _ordered(by, found, self._full_length(feats[1:]))
        if primary_only:
            garments = garments[:1]
        known = {"full": (full_crop, feats[1:])}
        todo = [g for g in garments if g.label not in known]
        if todo:
            crops = [crop_box(image, g.box) for g in todo]
            rows = self.embed_backbone(crops)
            for i, (g, crop) in enumerate(zip(todo, crops, strict=True)):
                known[g.label] = (crop, rows[i : i + 1])
        crops = [known[g.label][0] for g in garments]
        own = np.concatenate([known[g.label][1] for g in garments])
        return garments, self._corrected(whole, own, crops, "query")

    def embed(
        self, images: Sequence[Image.Image], role: Role = "catalog", *, worn: bool = False
    ) -> np.ndarray:
        """Embed PIL images (any mode, any size); returns ``(n, dim)`` float32, unit rows.

        ``role="query"`` uses the shopper-photo tower of a trained head; the default
        (``"catalog"``) is what index builds use. Models without a head ignore ``role``. Catalog
        photos are embedded whole; queries are cut by the caller (``search/crops.py``), who
        says whether they show a person (``worn``, see :meth:`ProjectionHead.apply`).
        """
        if role not in ROLES:
            raise InvalidInput(f"role must be 'query' or 'catalog', got {role!r}")
        feats = self.embed_backbone(images)
        if self.head is None or not len(images):
            return feats if self.head is None else np.empty((0, self.info.dim), np.float32)
        return self.project(feats, role, images, worn=worn)

    def embed_and_locate(
        self, images: Sequence[Image.Image], role: Role = "query"
    ) -> tuple[np.ndarray, list[list[Garment]]]:
        """Embed whole photos and find their garments in the same backbone pass.

        Returns the ``(n, dim)`` embeddings and, per photo, its garments best first (empty
        lists when the model has no localiser: check ``self.localizer``).
        """
        if self.localizer is None or self._run_maps is None or not images:
            return self.embed(images, role), [[] for _ in images]
        pixels = preprocess_batch(images, self.preprocess)
        feats, fmap = self._run_maps(pixels)
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        probs = self.localizer.probabilities(fmap)
        size = self.preprocess.size
        garments = [
            self.localizer.boxes(p, img.size, size) for p, img in zip(probs, images, strict=True)
        ]
        return self.project(feats.astype(np.float32), role, images), garments


def _load_check(emb: LoadedEmbedder) -> None:
    """Embed one synthetic image; raise ValueError unless it is a finite unit vector."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (160, 120, 3), dtype=np.uint8), "RGB")
    raw = emb._run(preprocess_batch([img], emb.preprocess))
    if raw.shape != (1, emb.backbone_dim):
        raise ValueError(f"load check: output shape {raw.shape}, expected (1, {emb.backbone_dim})")
    if not np.all(np.isfinite(raw)):
        raise ValueError("load check: output is not finite (NaN or inf)")
    norm = float(np.linalg.norm(raw))
    if abs(norm - 1.0) > 1e-2:
        raise ValueError(f"load check: output norm {norm:.4f}, expected 1")
    if emb.head is not None:
        for role in ROLES:
            out = emb.embed([img], role=role)  # type: ignore[arg-type]
            if out.shape != (1, emb.info.dim) or not np.all(np.isfinite(out)):
                raise ValueError(f"load check: head output for {role} is {out.shape} or not finite")


class _Ladder:
    """Holds one load attempt's inputs and the reasons collected on the way down."""

    def __init__(self, registry: Registry, ref: Ref, manifest: dict[str, Any], variant: str | None):
        self.ref = ref
        self.dir = registry.path(ref)
        self.manifest = manifest
        self.dim = int(manifest.get("embedding_dim", 0))
        if self.dim <= 0:
            raise ConfigError(f"model {ref}: manifest has no embedding_dim")
        self.head: ProjectionHead | None = None
        self.backbone_dim = int(manifest.get("backbone_dim", self.dim))
        self.query_crop = str(manifest.get("query_crop", "whole"))
        self.detector: BodyPartDetector | None = None
        det = manifest.get("detector")
        if det:
            self.detector = BodyPartDetector(self.dir / det["file"], threads=cpu_threads())
        self.localizer: LocalizerHead | None = None
        loc = manifest.get("localizer")
        if loc:
            self.localizer = LocalizerHead.load(self.dir / loc["file"])
        self.output_name = str(manifest.get("output_name", "embedding"))
        head = manifest.get("head")
        if head:
            self.head = ProjectionHead.load(self.dir / head["file"])
            if self.head.out_dim != self.dim or self.head.in_dim != self.backbone_dim:
                raise ConfigError(
                    f"model {ref}: head maps {self.head.in_dim}->{self.head.out_dim} but the "
                    f"manifest says {self.backbone_dim}->{self.dim}"
                )
        self.preprocess = PreprocessConfig.from_dict(manifest.get("preprocess", {}))
        self.variants: dict[str, str] = dict(manifest.get("variants", {}))
        self.variant = variant or manifest.get("default_variant") or "fp32"
        if variant is not None and variant not in self.variants:
            raise ConfigError(f"model {ref} has no {variant!r} variant ({sorted(self.variants)})")
        self.reasons: list[str] = []
        # load_embedder clears it on "auto" without an NVIDIA GPU: GPU skips are then expected.
        self.gpu_wanted = True
        self.expected: list[str] = []  # reasons of expected GPU skips, kept out of INFO lines
        if manifest.get("reason"):
            self.reasons.append(
                f"default variant {manifest.get('default_variant')}: {manifest['reason']}"
            )

    def note(self, step: str, why: str, *, gpu: bool = False) -> None:
        """Record why ``step`` was skipped; ``gpu`` marks a GPU step (see the module docstring)."""
        self.reasons.append(f"{step} skipped: {why}")
        if gpu and not self.gpu_wanted:
            self.expected.append(self.reasons[-1])
            key = f"{step}: {why}"
            if key not in _said:
                _said.add(key)
                log.debug("embedder %s: %s skipped: %s (no NVIDIA GPU here)", self.ref, step, why)
            return
        log.warning("embedder %s: %s skipped: %s", self.ref, step, why)

    def accept(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        variant: str,
        served_by: str,
        run_maps: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> LoadedEmbedder:
        if self.localizer is not None and run_maps is None:
            self.reasons.append(f"{served_by} has no feature map: localiser off")
        reason = "; ".join([*self.reasons, f"serving with {served_by}"])
        labels, worn = (
            tuple((str(k), float(v)) for k, v in (self.manifest.get(key) or {}).items())
            for key in ("score_labels", "score_labels_worn")
        )
        info = EmbedderInfo(
            str(self.ref), self.dim, variant, served_by, reason, labels, worn or labels
        )
        emb = LoadedEmbedder(
            run,
            self.preprocess,
            info,
            head=self.head,
            backbone_dim=self.backbone_dim,
            query_crop=self.query_crop,
            localizer=self.localizer,
            run_maps=run_maps,
            detector=self.detector,
        )
        _load_check(emb)
        said = "; ".join(
            r for r in [*self.reasons, f"serving with {served_by}"] if r not in self.expected
        )
        log.info("embedder %s served by %s (%s)", self.ref, served_by, said)
        return emb

    # -- steps: each returns an embedder or raises with the reason --------------------------
    def onnx(self, variant: str, provider: str, label: str) -> LoadedEmbedder:
        if variant not in self.variants:
            raise ValueError(f"no {variant} ONNX file in the manifest")
        sess = onnx_session(self.dir / self.variants[variant], [provider])
        if provider not in sess.get_providers():
            raise ValueError(f"{provider} did not take the session")

        outputs = [o.name for o in sess.get_outputs()]
        first = self.output_name if self.output_name in outputs else outputs[0]

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(sess.run([first], {_INPUT: x})[0], dtype=np.float32)

        run_maps = None
        if FMAP_OUTPUT in outputs:

            def run_maps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                emb, fmap = sess.run([first, FMAP_OUTPUT], {_INPUT: x})
                return np.asarray(emb, np.float32), np.asarray(fmap, np.float32)

        return self.accept(run, variant, f"{label}:{variant}", run_maps)

    def torch(self, device: str) -> LoadedEmbedder:
        weights = self.manifest.get("torch_weights")
        if not weights or not (self.dir / weights).is_file():
            raise ValueError("the artifact has no torch weights file")
        if device == "cuda" and not _nvidia_gpu_present():
            # Importing torch costs seconds and memory: look for a GPU first.
            raise ValueError("no NVIDIA GPU on this machine (no /proc/driver/nvidia)")
        try:
            import torch

            from lookalike.embed.torch_model import load_torch_embedder
        except ImportError as exc:
            raise ValueError(f"torch is not installed ({exc})") from exc
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("torch sees no CUDA device")
        model = load_torch_embedder(self.dir / weights).to(device)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = model(torch.from_numpy(np.ascontiguousarray(x)).to(device))
            return out.float().cpu().numpy()

        def run_maps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                fmap = model.features(torch.from_numpy(np.ascontiguousarray(x)).to(device))
                emb = torch.nn.functional.normalize(fmap.mean(dim=(2, 3)), dim=1)
            return emb.float().cpu().numpy(), fmap.float().cpu().numpy()

        return self.accept(run, "fp32", f"torch-{device}", run_maps)

    def step_cuda(self) -> LoadedEmbedder:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            try:  # int8 QDQ graphs run poorly on CUDA; a GPU serves fp32
                return self.onnx("fp32", "CUDAExecutionProvider", "onnxruntime-cuda")
            except Exception as exc:  # noqa: BLE001 - any failure means: try the next engine
                self.note("onnxruntime-cuda", short_reason(exc), gpu=True)
        else:
            self.note("onnxruntime-cuda", "onnxruntime has no CUDAExecutionProvider", gpu=True)
        return self.torch("cuda")

    def step_onnx_cpu(self) -> LoadedEmbedder:
        order = [self.variant] + (["fp32"] if self.variant != "fp32" else [])
        last: Exception | None = None
        for variant in order:
            try:
                return self.onnx(variant, "CPUExecutionProvider", "onnxruntime-cpu")
            except Exception as exc:  # noqa: BLE001
                last = exc
                if variant != order[-1]:
                    self.note(f"onnxruntime-cpu:{variant}", short_reason(exc))
        assert last is not None
        raise last

    def step_torch_cpu(self) -> LoadedEmbedder:
        return self.torch("cpu")


def load_embedder(
    registry: Registry,
    ref: str | Ref = "effnet_lite0:production",
    runtime: str = "auto",
    *,
    variant: str | None = None,
) -> LoadedEmbedder:
    """Load ``ref`` on the best engine available, or the one ``runtime`` pins.

    Raises ``NotFound`` when the model does not exist, ``IntegrityError`` when its files do not
    match the manifest's checksums, ``ConfigError`` for an unknown runtime or variant, and
    ``Unavailable`` (listing every step's reason) when no step passes its load check. ``variant``
    ("fp32"/"int8") overrides the manifest's ``default_variant`` on the ONNX CPU step.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    resolved = registry.resolve(ref)
    problems = registry.verify(resolved)
    if problems:
        raise IntegrityError(
            f"model {resolved} does not match its manifest: {'; '.join(problems)} — "
            "rebuild it with `lookalike models build-default` or roll back with "
            "`lookalike models rollback`"
        )
    ladder = _Ladder(registry, resolved, registry.manifest(resolved), variant)
    steps = {
        "cuda": ladder.step_cuda,
        "onnx-cpu": ladder.step_onnx_cpu,
        "torch-cpu": ladder.step_torch_cpu,
    }
    order = list(steps) if runtime == "auto" else [runtime]
    if runtime != "auto":
        ladder.reasons.append(f"runtime pinned to {runtime}")
    # A pinned "cuda" that fails is worth a warning even without a GPU: someone asked for it.
    ladder.gpu_wanted = runtime != "auto" or _nvidia_gpu_present()
    for name in order:
        try:
            return steps[name]()
        except Exception as exc:  # noqa: BLE001 - each failure is recorded, then we step down
            ladder.note(name, short_reason(exc), gpu=name == "cuda")
    raise Unavailable(f"no runtime could serve model {resolved}: " + "; ".join(ladder.reasons))


def _ordered(by: dict[str, Garment], found: Sequence[Garment], full: bool | None) -> list[Garment]:
    """The garments in search order: the full-length box for a dress (``full`` true), else the
    top then the bottom; ``full`` None (no classifier): as found."""
    if full is None:
        return list(found)
    if full:
        return [by["full"]]
    return [by[k] for k in ("upper", "lower") if k in by] or [by["full"]]
