"""Load an embedder from the model registry, walking a fallback ladder that says why it stepped.

Ladder (``runtime="auto"``)::

    cuda      ONNX Runtime CUDAExecutionProvider (fp32), else torch on CUDA
    onnx-cpu  ONNX Runtime on CPU, the manifest's ``default_variant`` (int8 or fp32), then fp32
    torch-cpu the artifact's ``weights.pt`` rebuilt in torch (needs torch; serving does not)

Every skipped or failed step is logged on the ``lookalike.embed`` logger and the reasons end up
in ``Embedder.info.reason``. A step is served only after a load check (one synthetic image must
give a finite unit vector of the right width), so a model that outputs NaN is never served.
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

from lookalike.core.errors import ConfigError, IntegrityError, InvalidInput, Unavailable
from lookalike.embed.measure import cpu_threads
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
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


@dataclass(frozen=True)
class EmbedderInfo:
    """What is serving: ``ref`` ("effnet_lite0:1"), width, variant, engine, and why this one."""

    ref: str
    dim: int
    variant: str
    served_by: str
    reason: str


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns images into ``(n, dim)`` float32 L2-normalised rows."""

    info: EmbedderInfo

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class LoadedEmbedder:
    """An :class:`Embedder` over any batch function ``(n,3,S,S) float32 -> (n, dim)``.

    It applies the manifest's preprocessing and batches by ``batch_size``; safe to call from
    several threads when the batch function is (ONNX Runtime sessions and torch no-grad are).
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        preprocess: PreprocessConfig,
        info: EmbedderInfo,
        batch_size: int = BATCH,
    ) -> None:
        self._run = run
        self.preprocess = preprocess
        self.info = info
        self.batch_size = batch_size

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed already-preprocessed ``(n, 3, S, S)`` pixels."""
        n = len(pixels)
        out = np.empty((n, self.info.dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = self._run(pixels[start : start + self.batch_size])
            out[start : start + len(chunk)] = chunk
        # Re-normalise: int8 rounding leaves norms a hair off 1, and callers use inner product.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed PIL images (any mode, any size); returns ``(n, dim)`` float32, unit rows."""
        for img in images:
            if not isinstance(img, Image.Image):
                raise InvalidInput(f"expected PIL images, got {type(img).__name__}")
        if not images:
            return np.empty((0, self.info.dim), dtype=np.float32)
        return self.embed_pixels(preprocess_batch(images, self.preprocess))


def onnx_session(path: Path, providers: list[str], threads: int | None = None) -> Any:
    """An ONNX Runtime session tuned for this machine (intra-op threads = usable cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), opts, providers=providers)


def _load_check(emb: LoadedEmbedder) -> None:
    """Embed one synthetic image; raise ValueError unless it is a finite unit vector."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (160, 120, 3), dtype=np.uint8), "RGB")
    raw = emb._run(preprocess_batch([img], emb.preprocess))
    if raw.shape != (1, emb.info.dim):
        raise ValueError(f"load check: output shape {raw.shape}, expected (1, {emb.info.dim})")
    if not np.all(np.isfinite(raw)):
        raise ValueError("load check: output is not finite (NaN or inf)")
    norm = float(np.linalg.norm(raw))
    if abs(norm - 1.0) > 1e-2:
        raise ValueError(f"load check: output norm {norm:.4f}, expected 1")


class _Ladder:
    """Holds one load attempt's inputs and the reasons collected on the way down."""

    def __init__(self, registry: Registry, ref: Ref, manifest: dict[str, Any], variant: str | None):
        self.ref = ref
        self.dir = registry.path(ref)
        self.manifest = manifest
        self.dim = int(manifest.get("embedding_dim", 0))
        if self.dim <= 0:
            raise ConfigError(f"model {ref}: manifest has no embedding_dim")
        self.preprocess = PreprocessConfig.from_dict(manifest.get("preprocess", {}))
        self.variants: dict[str, str] = dict(manifest.get("variants", {}))
        self.variant = variant or manifest.get("default_variant") or "fp32"
        if variant is not None and variant not in self.variants:
            raise ConfigError(f"model {ref} has no {variant!r} variant ({sorted(self.variants)})")
        self.reasons: list[str] = []
        if manifest.get("reason"):
            self.reasons.append(
                f"default variant {manifest.get('default_variant')}: {manifest['reason']}"
            )

    def note(self, step: str, why: str) -> None:
        log.warning("embedder %s: %s skipped: %s", self.ref, step, why)
        self.reasons.append(f"{step} skipped: {why}")

    def accept(self, run: Callable[[np.ndarray], np.ndarray], variant: str, served_by: str):
        reason = "; ".join([*self.reasons, f"serving with {served_by}"])
        info = EmbedderInfo(str(self.ref), self.dim, variant, served_by, reason)
        emb = LoadedEmbedder(run, self.preprocess, info)
        _load_check(emb)
        log.info("embedder %s served by %s (%s)", self.ref, served_by, reason)
        return emb

    # -- steps: each returns an embedder or raises with the reason --------------------------
    def onnx(self, variant: str, provider: str, label: str) -> LoadedEmbedder:
        if variant not in self.variants:
            raise ValueError(f"no {variant} ONNX file in the manifest")
        sess = onnx_session(self.dir / self.variants[variant], [provider])
        if provider not in sess.get_providers():
            raise ValueError(f"{provider} did not take the session")

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(sess.run(None, {_INPUT: x})[0], dtype=np.float32)

        return self.accept(run, variant, f"{label}:{variant}")

    def torch(self, device: str) -> LoadedEmbedder:
        weights = self.manifest.get("torch_weights")
        if not weights or not (self.dir / weights).is_file():
            raise ValueError("the artifact has no torch weights file")
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

        return self.accept(run, "fp32", f"torch-{device}")

    def step_cuda(self) -> LoadedEmbedder:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            try:  # int8 QDQ graphs run poorly on CUDA; a GPU serves fp32
                return self.onnx("fp32", "CUDAExecutionProvider", "onnxruntime-cuda")
            except Exception as exc:  # noqa: BLE001 - any failure means: try the next engine
                self.note("onnxruntime-cuda", _short(exc))
        else:
            self.note("onnxruntime-cuda", "onnxruntime has no CUDAExecutionProvider")
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
                    self.note(f"onnxruntime-cpu:{variant}", _short(exc))
        assert last is not None
        raise last

    def step_torch_cpu(self) -> LoadedEmbedder:
        return self.torch("cpu")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


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
    for name in order:
        try:
            return steps[name]()
        except Exception as exc:  # noqa: BLE001 - each failure is recorded, then we step down
            ladder.note(name, _short(exc))
    raise Unavailable(f"no runtime could serve model {resolved}: " + "; ".join(ladder.reasons))
