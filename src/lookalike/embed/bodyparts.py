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

Every session runs the graph cut before its box decode (:func:`split_head`): the head's raw box
logits and class scores come out, and :func:`decode_boxes` turns the distribution over 16 bins
into boxes in numpy for the anchors that pass ``MIN_SCORE`` only (in the graph that softmax,
over a non-last axis, was 14 % of the int8 detector's time). ``decode="graph"`` keeps the
graph's own decode, for comparison.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.localize import Garment
from lookalike.embed.regions import Box
from lookalike.embed.session import onnx_session

__all__ = [
    "CANVAS",
    "DETECTOR_FILE",
    "DETECTOR_PACKAGE",
    "DETECT_BATCH",
    "EXPOSED",
    "LABELS",
    "BodyPartDetector",
    "Part",
    "anchor_grid",
    "canvas_shape",
    "decode_boxes",
    "detector_pixels",
    "exposure",
    "free_batch",
    "garment_boxes",
    "may_show_person",
    "packaged_detector",
    "set_input_shape",
    "split_head",
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
# YOLOv8's detection head bakes its input's shape into five constants: the two DFL reshapes
# (anchor count) and the anchor points (two copies) and strides of its 8/16/32-pixel grids.
_DFL_SHAPES = ("/model.22/dfl/Constant_output_0", "/model.22/dfl/Constant_1_output_0")
_ANCHOR_POINTS = ("/model.22/Constant_9_output_0", "/model.22/Constant_10_output_0")
_ANCHOR_STRIDES = "/model.22/Constant_12_output_0"
STRIDES = (8, 16, 32)
# How a photo meets the detector: "rect", on the narrowest input that holds it (canvas_shape).
# Part of what names a detector's answers (BodyPartDetector.key, the pre-filter's feature cache).
CANVAS = "rect"
CANVAS_MARGIN = 8  # pixels of black at least on each side of a photo's short side
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


def anchor_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (1, 2, A) and strides (1, A) of a ``width``×``height`` input
    (ultralytics' ``make_anchors``: x varies fastest, cell centres at +0.5)."""
    points, strides = [], []
    for stride in STRIDES:
        w, h = width // stride, height // stride
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(w * h, float(stride)))
    return np.concatenate(points, 1)[None], np.concatenate(strides)[None]


def set_input_shape(model: Any, width: int, height: int) -> None:
    """Make a YOLOv8 detector graph (an ``onnx.ModelProto``, fp32 or quantised) take a
    ``width``×``height`` input, in place: the graph is convolutional but for its head's
    constants, which are rewritten for the new grid. A constant whose shape does not change
    must keep its values (so the grid is the one this code expects); ``ConfigError`` for
    another graph, or a side that is not a multiple of the largest stride."""
    from onnx import numpy_helper

    if width % STRIDES[-1] or height % STRIDES[-1] or min(width, height) < STRIDES[-1]:
        raise ConfigError(f"detector input {width}x{height}: each side a multiple of 32")
    points, strides = anchor_grid(width, height)
    anchors = points.shape[2]
    # the constants are Constant nodes in the packaged graph, initialisers once quantised
    tensors = [n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"]
    names = [n.output[0] for n in model.graph.node if n.op_type == "Constant"]
    tensors += list(model.graph.initializer)
    names += [t.name for t in model.graph.initializer]
    found = set()
    for name, tensor in zip(names, tensors, strict=True):
        if name not in (*_DFL_SHAPES, *_ANCHOR_POINTS, _ANCHOR_STRIDES):
            continue
        old = numpy_helper.to_array(tensor)
        if name in _DFL_SHAPES:
            new = np.array([*old[:-1], anchors], dtype=old.dtype)
        else:
            new = points if name in _ANCHOR_POINTS else strides
            if old.shape == new.shape and not np.allclose(old, new):
                raise ConfigError(f"{name} is not the anchor grid this code expects")
        tensor.CopyFrom(numpy_helper.from_array(new.astype(old.dtype), tensor.name))
        found.add(name)
    if len(found) != 5:
        raise ConfigError("not the YOLOv8 head this code knows how to resize")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = height, width
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = anchors
    del model.graph.value_info[:]


# Where YOLOv8's head splits into box logits (n, 4 x 16, A) and class scores (n, classes, A):
# the distribution-focal decode after it (a softmax over 16 bins on a non-last axis, 14 % of the
# int8 detector's time at 256 px) runs in numpy on the few anchors that pass MIN_SCORE instead.
_BOX_LOGITS = "/model.22/Split_output_0"
_CLASS_SCORES = "/model.22/Sigmoid_output_0"
DFL_BINS = 16


def split_head(model: Any) -> Any:
    """The graph of a YOLOv8 detector (an ``onnx.ModelProto``) cut before its box decode: two
    outputs, the box logits (n, 64, A) and the class scores (n, classes, A); decoded by
    :func:`decode_boxes`. ``ConfigError`` for another head."""
    from onnx import TensorProto, helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if _BOX_LOGITS not in producer or _CLASS_SCORES not in producer or len(softmax) != 1:
        raise ConfigError("not the YOLOv8 head whose box decode this code knows")
    needed: set[str] = set()  # the nodes the two new outputs depend on
    stack = [producer[_BOX_LOGITS], producer[_CLASS_SCORES]]
    while stack:
        node = stack.pop()
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack += [producer[i] for i in node.input if i in producer]
    cut = type(model)()
    cut.CopyFrom(model)
    keep = [n for n in graph.node if id(n) in needed]
    del cut.graph.node[:]
    cut.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in cut.graph.initializer if t.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(inits)
    del cut.graph.output[:]
    for name, rows in ((_BOX_LOGITS, 4 * DFL_BINS), (_CLASS_SCORES, len(LABELS))):
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", rows, "anchors"])
        cut.graph.output.append(out)
    del cut.graph.value_info[:]
    return cut


def decode_boxes(logits: np.ndarray, points: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """YOLOv8's box decode for ``k`` anchors: ``logits`` (64, k) → (k, 4) cx, cy, w, h in input
    pixels, as the graph's own tail computes it (a softmax over each side's 16 bins, its
    expectation is the side's distance from the anchor point (2, k), in cells of ``strides``)."""
    bins = logits.reshape(4, DFL_BINS, -1)
    bins = np.exp(bins - bins.max(axis=1, keepdims=True))
    dist = (bins * np.arange(DFL_BINS, dtype=np.float32)[None, :, None]).sum(1) / bins.sum(1)
    x0, y0 = points[0] - dist[0], points[1] - dist[1]
    x1, y1 = points[0] + dist[2], points[1] + dist[3]
    return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1) * strides[:, None]


def _detector_session(path: Path, threads: int | None) -> tuple[Any, int, Any]:
    """The detector's session, photos per run (1 when its batch stays fixed, logged why) and
    its batch-free graph (an ``onnx.ModelProto``; None without ``onnx``, or when its head is
    not the one this code knows: then every photo runs on the square input)."""
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is None:
        session = onnx_session(path, threads=threads)
        if not isinstance(session.get_inputs()[0].shape[0], int):
            return session, DETECT_BATCH, None
        log.info("detector %s: one photo a run (its batch is fixed; onnx is not installed)", path)
        return session, 1, None
    model = onnx.load(str(path))
    if model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_param"):
        return onnx_session(path, threads=threads), DETECT_BATCH, model
    try:
        free_batch(model)
    except ConfigError as exc:
        log.info("detector %s: one photo a run (%s)", path, exc.message)
        return onnx_session(path, threads=threads), 1, None
    return onnx_session(model.SerializeToString(), threads=threads), DETECT_BATCH, model


def detector_pixels(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """The detector's square input for ``images``: (n, 3, size, size) float32 (what the int8
    build calibrates on; :meth:`BodyPartDetector.detect` runs most photos on a narrower one)."""
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, img in enumerate(images):
        _letterbox(img, size, out=out[i])
    return out


def _fitted(w: int, h: int, size: int) -> tuple[float, int, int]:
    """The scale that brings a ``w``×``h`` photo's longest side to ``size``, and its new size."""
    scale = size / max(w, h)
    return scale, max(1, round(w * scale)), max(1, round(h * scale))


def canvas_shape(w: int, h: int, size: int) -> tuple[int, int]:
    """The detector input (width, height) a ``w``×``h`` photo runs on: its longest side
    ``size``; the other side its scaled length plus ``CANVAS_MARGIN`` of black on each side,
    rounded up to a multiple of 32 (ultralytics' minimal letterbox, with a border). A 2:3
    portrait runs on 192×256 at 256 px: 25 % fewer pixels than the square, at the same scale.
    Without the border a 3:4 photo would fill its 192×256 input edge to edge, and on viton-dev
    that lost retrieval (mAP 0.133 against 0.145 square; 0.146 with the border:
    docs/search-quality.md)."""
    _, nw, nh = _fitted(w, h, size)
    step = STRIDES[-1]

    def side(n: int) -> int:
        return size if n >= size else min(size, -(-(n + 2 * CANVAS_MARGIN) // step) * step)

    return side(nw), side(nh)


def _letterbox(
    image: Image.Image,
    size: int,
    *,
    canvas: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, float, int, int]:
    """nudenet's preprocessing: longest side to ``size``, centred on black, RGB / 255, CHW, on a
    ``canvas`` (width, height; default square ``size``), written into ``out`` when given."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    scale, nw, nh = _fitted(w, h, size)
    cw, ch = canvas or (size, size)
    board = Image.new("RGB", (cw, ch))
    left, top = (cw - nw) // 2, (ch - nh) // 2
    board.paste(rgb.resize((nw, nh), Image.Resampling.BILINEAR), (left, top))
    if out is None:
        out = np.empty((3, ch, cw), np.float32)
    # one pass from the uint8 pixels into ``out`` (the same float32 division as x / 255.0)
    np.divide(np.asarray(board).transpose(2, 0, 1), np.float32(255.0), out=out, dtype=np.float32)
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

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        canvas: str = CANVAS,
        decode: str = "numpy",
    ) -> None:
        if canvas not in ("rect", "square"):
            raise ConfigError(f"detector canvas must be 'rect' or 'square', got {canvas!r}")
        if decode not in ("numpy", "graph"):
            raise ConfigError(f"detector decode must be 'numpy' or 'graph', got {decode!r}")
        self.path = Path(path)
        self._threads = threads
        try:
            self._session, self.batch, self._graph = _detector_session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ConfigError(f"cannot load the garment detector {self.path}: {exc}") from exc
        inp = self._session.get_inputs()[0]
        self.input_name = inp.name
        dims = [d if isinstance(d, int) else INPUT_SIZE for d in inp.shape[2:]]
        if len(dims) != 2 or dims[0] != dims[1]:
            raise ConfigError(f"{self.path}: expected a square image input, got {inp.shape}")
        self.size = int(dims[0])
        # A photo runs on the narrowest input that holds it (canvas_shape) when the graph can
        # be reshaped: one session per input shape, made on first use.
        self.rect = canvas == "rect" and self._graph is not None and self.size % STRIDES[-1] == 0
        self._sessions: dict[tuple[int, int], Any] = {(self.size, self.size): self._session}
        self._lock = threading.Lock()
        # The box decode runs in numpy when the head can be cut (``decode="numpy"``: the same
        # parts, tested; ``"graph"`` keeps the graph's own): every input shape's session is
        # then made from the cut graph, the square one too.
        self.split = False
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        if decode == "numpy" and self._graph is not None and self.size % STRIDES[-1] == 0:
            try:
                split_head(self._graph)
            except ConfigError as exc:
                log.info("detector %s: box decode in the graph (%s)", self.path, exc.message)
            else:
                self.split = True
                del self._sessions[(self.size, self.size)]
                self._session_for((self.size, self.size))
        # what the detector is: its file's bytes, input size and canvas rule. Two detectors of
        # one key find the same parts in the same photo (the pre-filter's copy and the search
        # model's own).
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self.key = f"{digest}@{self.size}" + ("-rect" if self.rect else "")

    def canvas(self, image: Image.Image) -> tuple[int, int]:
        """The input (width, height) ``image`` runs on (square without a reshapable graph)."""
        if not self.rect:
            return self.size, self.size
        return canvas_shape(*image.size, self.size)

    def _session_for(self, shape: tuple[int, int]) -> Any:
        session = self._sessions.get(shape)
        if session is not None:
            return session
        with self._lock:
            if shape not in self._sessions:
                import onnx

                model = onnx.ModelProto()
                model.CopyFrom(self._graph)
                set_input_shape(model, *shape)
                if self.split:
                    model = split_head(model)
                    points, strides = anchor_grid(*shape)
                    self._grids[shape] = (
                        points[0].astype(np.float32),
                        strides[0].astype(np.float32),
                    )
                self._sessions[shape] = onnx_session(
                    model.SerializeToString(), threads=self._threads
                )
                log.debug("detector %s: a session for %dx%d input", self.path.name, *shape)
            return self._sessions[shape]

    def detect(self, images: Sequence[Image.Image]) -> list[list[Part]]:
        """Body parts per image, best first (boxes normalised to each image)."""
        for img in images:
            if not isinstance(img, Image.Image):
                raise InvalidInput(f"expected PIL images, got {type(img).__name__}")
        out: list[list[Part]] = [[] for _ in images]
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(self.canvas(img), []).append(i)
        for (cw, ch), which in by_shape.items():
            session = self._session_for((cw, ch))
            for start in range(0, len(which), self.batch):
                chunk = which[start : start + self.batch]
                pixels = np.empty((len(chunk), 3, ch, cw), np.float32)
                boxed = [
                    _letterbox(images[i], self.size, canvas=(cw, ch), out=pixels[j])
                    for j, i in enumerate(chunk)
                ]
                runs = session.run(None, {self.input_name: pixels})
                if self.split:  # box logits (n, 64, A), class scores (n, classes, A)
                    points, strides = self._grids[(cw, ch)]
                    answers = [
                        (c, partial(_decoded, logits, points, strides))
                        for logits, c in zip(runs[0], runs[1], strict=True)
                    ]
                else:  # (n, 4 + classes, A): cx, cy, w, h decoded in the graph
                    answers = [(r[4:], partial(_in_graph, r)) for r in runs[0]]
                for (cls, boxes_of), (_, scale, left, top), i in zip(
                    answers, boxed, chunk, strict=True
                ):
                    out[i] = self._parts(cls, boxes_of, scale, left, top, images[i].size)
        return out

    @staticmethod
    def _parts(
        scores: np.ndarray,
        boxes_of: Any,
        scale: float,
        left: int,
        top: int,
        size: tuple[int, int],
    ) -> list[Part]:
        """Parts from one photo's class ``scores`` (classes, A); ``boxes_of(keep)`` gives the
        kept anchors' cx, cy, w, h in input pixels."""
        best = scores.max(axis=0)
        keep = np.flatnonzero(best >= MIN_SCORE)
        if not keep.size:
            return []
        cls, best = scores[:, keep].T, best[keep]
        xywh = boxes_of(keep)
        cx, cy, bw, bh = xywh[:, 0], xywh[:, 1], xywh[:, 2], xywh[:, 3]
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


def _decoded(
    logits: np.ndarray, points: np.ndarray, strides: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    return decode_boxes(logits[:, keep], points[:, keep], strides[keep])


def _in_graph(raw: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return raw[:4, keep].T


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


def may_show_person(parts: Sequence[Part]) -> bool:
    """Whether a photo may show a person, also where :func:`garment_boxes` placed no garment:
    any face or feet, or two kinds of body part, at the detector's own ``MIN_SCORE``.

    What reads it: the category signature of the shipped default, which is trusted only on
    photos of a garment alone. Checked on photos where :func:`garment_boxes` found nothing: of
    117 such street photos of people it flags 112 (0.957); of 2,177 photos of a garment alone
    (``clothing/``, not demo photos) 61 (0.028, mostly shoes). A throwaway probe, figures in
    docs/search-quality.md.
    """
    groups = {_group(p.label) for p in parts if p.score >= MIN_SCORE}
    return bool(groups & {"FACE", "FEET"}) or len(groups) >= 2


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
