"""Where the garment is on a person: nudenet's ONNX body-part detector and the boxes it implies.

The PyPI package ``nudenet`` (3.0.8, MIT; later releases add an AGPL-3.0 licence file, so the
pin matters) ships ``best.onnx`` inside its wheel: a YOLOv8n detector of 18 body-part classes
(faces, armpits, breasts, belly, buttocks, genitalia, feet; covered or exposed) on a fixed
320×320 letterboxed input. We read the ONNX file from the installed package without importing
it (its Python code needs OpenCV); a model build copies the file into the artifact, so a served
model never depends on what is installed.

Two uses, one runtime:

* **garment boxes** (:func:`garment_boxes`): a worn garment lies between the shoulders and the
  feet. From the torso parts we derive ``upper`` (shoulders to hips), ``lower`` (waist to the
  feet) and ``full`` (shoulders to the feet: a dress); a photo with no torso part (a garment
  alone, a product shot, a shoe) has no box and is embedded whole.
* **safety** (:func:`exposure`): the highest score of each *exposed* class — the moderation
  pre-filter's nudity check.

Serving needs numpy, Pillow and onnxruntime only. The packaged graph takes one photo a run;
with ``onnx`` installed (the build extra) :class:`BodyPartDetector` frees its batch dimension in
memory (:func:`free_batch`; the file, and so its checksum, is untouched) and runs
``DETECT_BATCH`` photos a run, else one at a time. Models built since write the freed graph.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.localize import Garment
from lookalike.embed.regions import Box
from lookalike.embed.session import onnx_session

__all__ = [
    "DETECTOR_FILE",
    "DETECTOR_PACKAGE",
    "DETECT_BATCH",
    "EXPOSED",
    "LABELS",
    "BodyPartDetector",
    "Part",
    "detector_pixels",
    "exposure",
    "free_batch",
    "garment_boxes",
    "packaged_detector",
]

DETECTOR_PACKAGE = "nudenet"
DETECTOR_FILE = "best.onnx"
INPUT_SIZE = 320
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
EXPOSED: tuple[str, ...] = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
# nudenet's own thresholds: a candidate needs 0.2, overlapping boxes (IoU > 0.45) are merged.
MIN_SCORE = 0.2
NMS_IOU = 0.45
# A part must be this sure to place a garment (chosen by eye on clothing/ demo photos: feet
# and faces of 0.2-0.3 were often a shoe or a print).
PART_SCORE = 0.35
# Photos per detector run: 8 ran 13 vs 15 ms a photo (one at a time) on the idle 2-core machine,
# 32 no faster than 8; beside a CPU-heavy neighbour batching gains nothing and costs ~10 %.
DETECT_BATCH = 8
# YOLOv8's head reshapes carry the batch of one the graph was exported with: the three
# per-stride reshapes (1, 64 + classes, -1) and the two DFL reshapes (1, 4, 16, A), (1, 4, A).
_HEAD_RESHAPES = (
    "/model.22/Constant_output_0",
    "/model.22/Constant_1_output_0",
    "/model.22/Constant_2_output_0",
    "/model.22/dfl/Constant_output_0",
    "/model.22/dfl/Constant_1_output_0",
)
log = logging.getLogger("lookalike.embed")


@dataclass(frozen=True)
class Part:
    """One body part: its ``label`` (one of :data:`LABELS`), score, normalised box."""

    label: str
    score: float
    box: Box


def packaged_detector() -> Path:
    """The detector file inside the installed ``nudenet`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(DETECTOR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the garment detector comes from the PyPI package {DETECTOR_PACKAGE!r}, which is "
            "not installed: run `bash scripts/setup.sh`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DETECTOR_FILE
        if path.is_file():
            return path
    raise ConfigError(f"{DETECTOR_PACKAGE} is installed but has no {DETECTOR_FILE}: pin 3.0.8")


def free_batch(model: Any) -> None:
    """Make a YOLOv8 detector graph (an ``onnx.ModelProto``) take any batch, in place.

    Its head's reshape shapes get 0 on the batch axis (ONNX: "as the input") and its input and
    output a symbolic ``batch`` dimension; the rest of the graph is convolutional. Each photo's
    output is unchanged (tested against one-photo runs). ``ConfigError`` for another graph.
    """
    from onnx import numpy_helper

    reshapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    found = 0
    for node in model.graph.node:
        if node.op_type != "Constant" or node.output[0] not in _HEAD_RESHAPES:
            continue
        shape = numpy_helper.to_array(node.attribute[0].t).copy()
        if node.output[0] not in reshapes or shape[0] not in (0, 1):
            raise ConfigError(f"{node.output[0]} is not a batch-of-one reshape shape")
        shape[0] = 0
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(shape, node.output[0]))
        found += 1
    allow_zero = [
        a.i for n in model.graph.node if n.op_type == "Reshape" for a in n.attribute
        if a.name == "allowzero"
    ]  # fmt: skip
    if found != len(_HEAD_RESHAPES) or any(allow_zero):
        raise ConfigError("not the YOLOv8 head whose batch this code knows how to free")
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]


def _detector_session(path: Path, threads: int | None) -> tuple[Any, int]:
    """The detector's session and photos per run (1 when its batch stays fixed, logged why)."""
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is None:
        session = onnx_session(path, threads=threads)
        if not isinstance(session.get_inputs()[0].shape[0], int):
            return session, DETECT_BATCH
        log.info("detector %s: one photo a run (its batch is fixed; onnx is not installed)", path)
        return session, 1
    model = onnx.load(str(path))
    if model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_param"):
        return onnx_session(path, threads=threads), DETECT_BATCH
    try:
        free_batch(model)
    except ConfigError as exc:
        log.info("detector %s: one photo a run (%s)", path, exc.message)
        return onnx_session(path, threads=threads), 1
    return onnx_session(model.SerializeToString(), threads=threads), DETECT_BATCH


def detector_pixels(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """The detector's input for ``images``: (n, 3, size, size) float32, as :meth:`detect` makes."""
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, img in enumerate(images):
        _letterbox(img, size, out=out[i])
    return out


def _letterbox(
    image: Image.Image, size: int, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, float, int, int]:
    """nudenet's preprocessing: longest side to ``size``, centred on black, RGB / 255, CHW
    (written into ``out``, a ``(3, size, size)`` float32 array, when given)."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (size, size))
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas.paste(rgb.resize((nw, nh), Image.Resampling.BILINEAR), (left, top))
    if out is None:
        out = np.empty((3, size, size), np.float32)
    # one pass from the uint8 pixels into ``out`` (the same float32 division as x / 255.0)
    np.divide(np.asarray(canvas).transpose(2, 0, 1), np.float32(255.0), out=out, dtype=np.float32)
    return out, scale, left, top


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression over ``(n, 4)`` x0 y0 x1 y1 boxes, class-agnostic."""
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        union = areas[i] + areas[rest] - inter
        order = rest[inter / np.maximum(union, 1e-9) <= iou]
    return keep


class BodyPartDetector:
    """The body-part detector on one ONNX Runtime session (thread-safe, like the embedder's)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        try:
            self._session, self.batch = _detector_session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ConfigError(f"cannot load the garment detector {self.path}: {exc}") from exc
        inp = self._session.get_inputs()[0]
        self.input_name = inp.name
        dims = [d if isinstance(d, int) else INPUT_SIZE for d in inp.shape[2:]]
        if len(dims) != 2 or dims[0] != dims[1]:
            raise ConfigError(f"{self.path}: expected a square image input, got {inp.shape}")
        self.size = int(dims[0])
        # what the detector is: its file's bytes and input size. Two detectors of one key find
        # the same parts in the same photo (the pre-filter's copy and the search model's own).
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self.key = f"{digest}@{self.size}"

    def detect(self, images: Sequence[Image.Image]) -> list[list[Part]]:
        """Body parts per image, best first (boxes normalised to each image)."""
        for img in images:
            if not isinstance(img, Image.Image):
                raise InvalidInput(f"expected PIL images, got {type(img).__name__}")
        out: list[list[Part]] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            pixels = np.empty((len(chunk), 3, self.size, self.size), np.float32)
            boxed = [_letterbox(img, self.size, out=pixels[j]) for j, img in enumerate(chunk)]
            raw = self._session.run(None, {self.input_name: pixels})[0]  # (n, 22, anchors)
            for rows, (_, scale, left, top), img in zip(raw, boxed, chunk, strict=True):
                out.append(self._parts(rows, scale, left, top, img.size))
        return out

    @staticmethod
    def _parts(
        raw: np.ndarray, scale: float, left: int, top: int, size: tuple[int, int]
    ) -> list[Part]:
        rows = raw.T  # (anchors, 4 + classes)
        cls = rows[:, 4:]
        best = cls.max(axis=1)
        keep = best >= MIN_SCORE
        if not keep.any():
            return []
        rows, cls, best = rows[keep], cls[keep], best[keep]
        cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        w, h = size
        boxes = np.stack(
            [
                (cx - bw / 2 - left) / scale / w,
                (cy - bh / 2 - top) / scale / h,
                (cx + bw / 2 - left) / scale / w,
                (cy + bh / 2 - top) / scale / h,
            ],
            axis=1,
        ).clip(0.0, 1.0)
        labels = cls.argmax(axis=1)
        parts = []
        for i in _nms(boxes, best, NMS_IOU):
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            if x1 > x0 and y1 > y0:
                parts.append(
                    Part(LABELS[int(labels[i])], round(float(best[i]), 4), (x0, y0, x1, y1))
                )
        return parts


def exposure(parts: Sequence[Part]) -> dict[str, float]:
    """The highest score of each exposed class found (empty: nothing exposed was found)."""
    found: dict[str, float] = {}
    for p in parts:
        if p.label in EXPOSED:
            found[p.label] = max(found.get(p.label, 0.0), p.score)
    return found


_TORSO = ("ARMPITS", "BREAST", "BELLY", "BUTTOCKS", "GENITALIA")


def _group(label: str) -> str:
    for name in (*_TORSO, "FACE", "FEET", "ANUS"):
        if name in label:
            return name
    return label


def _portrait(face: Part) -> bool:
    """A face small enough and high enough in the photo to have a garment below it."""
    return face.box[3] - face.box[1] <= 0.4 and face.box[3] <= 0.6


def garment_boxes(parts: Sequence[Part], *, min_score: float = PART_SCORE) -> list[Garment]:
    """The garments a person's body parts imply: ``full``, ``upper`` and ``lower`` boxes.

    Empty when the photo shows no person: no part is sure enough, a single torso part alone (the
    shape of a flat garment), feet alone (a shoe), or a face that fills the photo. A face with
    no torso part below it places the torso under the chin (three and a half faces long, three
    faces wide). The rules, in normalised image coordinates:

    * across: the torso parts' extent, widened by half of it each side (sleeves, a flared
      skirt), at least the face's width;
    * top: the chin (bottom of the face) or, without a face, a third of the torso's height above
      the highest torso part;
    * hips: the lowest belly / buttocks / genitalia part, else the torso parts' bottom plus half
      their height;
    * bottom: the top of the feet, else the photo's bottom.

    ``upper`` spans top → hips; ``lower`` the waist (midway between top and hips) → bottom;
    ``full`` top → bottom. A garment's score is the mean score of the parts that placed it.
    """
    sure = [p for p in parts if p.score >= min_score]
    torso = [p for p in sure if _group(p.label) in _TORSO]
    faces = [p for p in sure if _group(p.label) == "FACE"]
    feet = [p for p in sure if _group(p.label) == "FEET"]
    face = max(faces, key=lambda p: p.score) if faces else None
    groups = {_group(p.label) for p in torso}
    # A person: a face and a torso part, or two kinds of torso part (a headless catalog shot).
    # One torso part alone is usually the shape of a garment (a top's bust, a sleeveless
    # armhole on a flat product photo), so that photo is embedded whole.
    if not ((face is not None and groups) or len(groups) >= 2):
        if face is None or not _portrait(face):
            return []
        # A face and nothing the detector is sure of below it: the garment is under the chin.
        fw, fh = face.box[2] - face.box[0], face.box[3] - face.box[1]
        torso = [
            Part(
                "TORSO_ESTIMATED",
                face.score,
                (face.box[0] - fw, face.box[3], face.box[2] + fw, min(1.0, face.box[3] + 3.5 * fh)),
            )
        ]
    tx0 = min(p.box[0] for p in torso)
    tx1 = max(p.box[2] for p in torso)
    ty0 = min(p.box[1] for p in torso)
    ty1 = max(p.box[3] for p in torso)
    width = max(tx1 - tx0, (face.box[2] - face.box[0]) if face else 0.0)
    cx = (tx0 + tx1) / 2
    x0, x1 = max(0.0, cx - width), min(1.0, cx + width)

    top = face.box[3] if face is not None and face.box[3] < ty1 else ty0 - (ty1 - ty0) / 3
    hips_parts = [p for p in torso if _group(p.label) in ("BELLY", "BUTTOCKS", "GENITALIA")]
    hips = max(p.box[3] for p in hips_parts) if hips_parts else ty1 + (ty1 - ty0) / 2
    if not hips_parts and torso[0].label == "TORSO_ESTIMATED":
        hips = ty1
    feet_top = min((p.box[1] for p in feet if p.box[1] > hips), default=None)
    bottom = feet_top if feet_top is not None else 1.0
    top, hips, bottom = max(0.0, top), min(1.0, hips), min(1.0, bottom)

    score = round(float(np.mean([p.score for p in torso])), 4)
    out = []
    for label, y0, y1 in (
        ("full", top, bottom),
        ("upper", top, hips),
        ("lower", (top + hips) / 2, bottom),
    ):
        if y1 - y0 > 0.05 and x1 - x0 > 0.05:
            out.append(Garment(label, (x0, y0, x1, y1), score))
    return out
