"""The garment detector: nudenet's packaged ONNX graph on real photos, and the box rules."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.bodyparts import (
    DETECT_BATCH,
    BodyPartDetector,
    Part,
    _nms,
    canvas_shape,
    exposure,
    garment_boxes,
    may_show_person,
    packaged_detector,
    split_head,
)


def _part(label: str, box: tuple[float, float, float, float], score: float = 0.8) -> Part:
    return Part(label, score, box)


STANDING = [
    _part("FACE_FEMALE", (0.42, 0.05, 0.58, 0.17)),
    _part("ARMPITS_COVERED", (0.33, 0.22, 0.40, 0.28)),
    _part("ARMPITS_COVERED", (0.60, 0.22, 0.67, 0.28)),
    _part("FEMALE_BREAST_COVERED", (0.40, 0.24, 0.60, 0.32)),
    _part("BELLY_COVERED", (0.42, 0.36, 0.58, 0.46)),
    _part("FEET_COVERED", (0.40, 0.92, 0.60, 0.99)),
]


def test_a_standing_person_gives_full_upper_and_lower_between_chin_and_feet() -> None:
    found = {g.label: g.box for g in garment_boxes(STANDING)}
    assert list(found) == ["full", "upper", "lower"]
    x0, y0, x1, y1 = found["full"]
    assert y0 == pytest.approx(0.17)  # the chin
    assert y1 == pytest.approx(0.92)  # the top of the feet
    assert x0 < 0.33 and x1 > 0.67  # wider than the torso: sleeves, a flared skirt
    assert found["upper"][3] == pytest.approx(0.46)  # the hips: bottom of the belly
    assert found["lower"][1] > found["upper"][1] and found["lower"][3] == pytest.approx(0.92)


def test_no_person_means_no_garment_box() -> None:
    assert garment_boxes([]) == []
    # Feet alone are a shoe photo; one torso part alone is the shape of a flat top; a face that
    # fills the photo is a portrait: all are embedded whole.
    assert garment_boxes([STANDING[-1]]) == []
    assert garment_boxes([STANDING[3]]) == []
    assert garment_boxes([_part("FACE_FEMALE", (0.2, 0.1, 0.8, 0.7))]) == []
    # Unsure parts do not place a garment.
    assert garment_boxes([_part("BELLY_COVERED", (0.4, 0.4, 0.6, 0.5), score=0.25)]) == []


def test_a_photo_with_no_garment_box_may_still_show_a_person() -> None:
    """Where the garment rules place nothing, a face, feet or two kinds of body part still say
    a person may be there (the kind signature is then left off); one torso part alone, the
    shape of a flat top, does not."""
    assert may_show_person(STANDING)
    assert not may_show_person([])
    assert not may_show_person([STANDING[3]])  # a flat top's bust
    assert may_show_person([STANDING[-1]])  # feet
    assert may_show_person([_part("FACE_FEMALE", (0.2, 0.1, 0.8, 0.7), score=0.25)])
    assert may_show_person([STANDING[3], _part("BELLY_COVERED", (0.4, 0.4, 0.6, 0.5), 0.2)])
    assert not may_show_person([_part("FACE_FEMALE", (0.2, 0.1, 0.8, 0.7), score=0.1)])


def test_a_face_with_nothing_sure_below_it_places_the_garment_under_the_chin() -> None:
    found = {g.label: g.box for g in garment_boxes([STANDING[0]])}
    assert found["upper"][1] == pytest.approx(0.17)
    assert found["upper"][3] == pytest.approx(0.17 + 3.5 * 0.12)
    assert found["full"][3] == 1.0


def test_without_feet_the_garment_runs_to_the_bottom_of_the_photo() -> None:
    found = {g.label: g.box for g in garment_boxes(STANDING[:-1])}
    assert found["full"][3] == 1.0


def test_exposure_reports_only_exposed_classes_at_their_best_score() -> None:
    parts = [
        _part("BELLY_EXPOSED", (0.4, 0.4, 0.6, 0.5), 0.9),
        _part("FEMALE_BREAST_EXPOSED", (0.4, 0.2, 0.5, 0.3), 0.4),
        _part("FEMALE_BREAST_EXPOSED", (0.5, 0.2, 0.6, 0.3), 0.7),
        _part("FEMALE_BREAST_COVERED", (0.4, 0.2, 0.6, 0.3), 0.9),
    ]
    assert exposure(parts) == {"FEMALE_BREAST_EXPOSED": 0.7}


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1, 1], [2, 2, 3, 3]], dtype=np.float32)
    assert _nms(boxes, np.array([0.5, 0.9, 0.3]), 0.45) == [1, 2]


@pytest.fixture(scope="module")
def worn_photo(shared_data) -> Image.Image:
    """A street-fashion photo of a woman in a dress (../shared/data/street, 0002.jpg)."""
    with Image.open(shared_data / "street" / "images" / "0002.jpg") as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def flat_photo(demo_catalog) -> Image.Image:
    """A bundled demo photo of a dress laid flat (no person)."""
    with Image.open(demo_catalog / "images" / "009b3c31-fb62-45c0-be9a-37a5c238cb88.jpg") as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def detector() -> BodyPartDetector:
    return BodyPartDetector(packaged_detector(), threads=1)


def test_packaged_detector_finds_a_person_and_not_a_flat_garment(
    detector: BodyPartDetector, worn_photo: Image.Image, flat_photo: Image.Image
) -> None:
    worn, flat = detector.detect([worn_photo, flat_photo])
    assert any(p.label.startswith("FACE") or "BREAST" in p.label for p in worn), worn
    boxes = garment_boxes(worn)
    assert boxes and boxes[0].label == "full"
    for g in boxes:
        x0, y0, x1, y1 = g.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert garment_boxes(flat) == []
    assert may_show_person(worn) and not may_show_person(flat)
    for parts in (worn, flat):
        assert all(0.2 <= p.score <= 1 for p in parts)


def test_detector_takes_any_size_and_mode(detector: BodyPartDetector) -> None:
    for im in (
        Image.new("L", (7, 300), 128),
        Image.new("RGBA", (1000, 40)),
        Image.new("P", (1, 1)),
    ):
        assert isinstance(detector.detect([im])[0], list)
    with pytest.raises(InvalidInput):
        detector.detect([np.zeros((10, 10, 3))])  # type: ignore[list-item]


def test_batched_detector_equals_one_photo_runs(
    detector: BodyPartDetector, worn_photo: Image.Image, flat_photo: Image.Image, shared_data
) -> None:
    pytest.importorskip("onnx", reason="freeing the packaged graph's batch needs onnx")
    street = sorted((shared_data / "street" / "images").glob("*.jpg"))[:8]
    photos = [worn_photo, flat_photo, *(Image.open(p).convert("RGB") for p in street)]
    photos.append(Image.new("L", (40, 300), 90))  # 11 photos: a full run of 8 and a short one
    assert detector.batch == DETECT_BATCH > 1  # the packaged graph (batch 1) was freed in memory
    one = BodyPartDetector(packaged_detector(), threads=1)
    one.batch = 1  # the path a fixed graph takes without onnx installed
    batched = detector.detect(photos)
    assert batched == one.detect(photos)
    assert any(garment_boxes(parts) for parts in batched)  # people were found, not just nothing


def test_a_graph_whose_batch_cannot_be_freed_runs_one_photo_at_a_time(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # a fixed batch of one but not the YOLOv8 head: left as it is, one photo a run
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])], "g", [x], [y]
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    other = BodyPartDetector(path)
    assert (other.batch, other.size) == (1, 64)


def test_a_broken_detector_file_is_a_config_error(tmp_path) -> None:
    bad = tmp_path / "detector.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(ConfigError, match="garment detector"):
        BodyPartDetector(bad)


def test_a_resized_detector_finds_the_same_garment(
    detector: BodyPartDetector, worn_photo: Image.Image, flat_photo: Image.Image, tmp_path
) -> None:
    pytest.importorskip("onnx", reason="resizing the detector is a build step (build extra)")
    from lookalike.embed.build import resize_detector

    # rewriting the packaged size changes nothing
    same = tmp_path / "320.onnx"
    resize_detector(packaged_detector(), same, 320)
    assert BodyPartDetector(same).detect([worn_photo]) == detector.detect([worn_photo])

    small = tmp_path / "256.onnx"
    resize_detector(packaged_detector(), small, 256)
    import onnx

    written = onnx.load(str(small)).graph
    assert written.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # any batch
    assert written.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    resized = BodyPartDetector(small, threads=1)
    assert resized.size == 256
    worn, flat = resized.detect([worn_photo, flat_photo])
    ref = {g.label: g.box for g in garment_boxes(detector.detect([worn_photo])[0])}
    got = {g.label: g.box for g in garment_boxes(worn)}
    assert got.keys() == ref.keys()
    for label, (x0, y0, x1, y1) in got.items():
        r = ref[label]
        inter = max(0, min(x1, r[2]) - max(x0, r[0])) * max(0, min(y1, r[3]) - max(y0, r[1]))
        union = (x1 - x0) * (y1 - y0) + (r[2] - r[0]) * (r[3] - r[1]) - inter
        assert inter / union > 0.7, (label, got[label], r)
    assert garment_boxes(flat) == []
    with pytest.raises(InvalidInput, match="multiple of 32"):
        resize_detector(packaged_detector(), tmp_path / "x.onnx", 250)


def test_a_photo_runs_on_the_narrowest_input_that_holds_it() -> None:
    assert canvas_shape(212, 320, 256) == (192, 256)  # a 2:3 street photo: 25 % fewer pixels
    assert canvas_shape(320, 212, 256) == (256, 192)
    assert canvas_shape(800, 1000, 256) == (224, 256)  # 4:5, Instagram's portrait
    assert canvas_shape(192, 256, 256) == (224, 256)  # 3:4 keeps a border: 192 + 2 × 8
    assert canvas_shape(500, 500, 256) == (256, 256)
    assert canvas_shape(500, 490, 256) == (256, 256)  # nearly square: no narrower input
    assert canvas_shape(40, 300, 256) == (64, 256)
    assert canvas_shape(1, 1000, 320) == (32, 320)


def test_the_narrow_input_finds_what_the_square_one_finds(shared_data, flat_photo) -> None:
    """Portraits, landscapes (the same photos turned) and a garment alone on their narrow
    inputs against the square letterbox: the same people and garment boxes, no safety flip."""
    pytest.importorskip("onnx", reason="reshaping the graph's input needs onnx")
    from lookalike.embed.build import parts_agreement

    street = sorted((shared_data / "street" / "images").glob("*.jpg"))[::40][:30]
    portraits = [Image.open(p).convert("RGB") for p in street]
    photos = [*portraits, *(p.transpose(Image.Transpose.ROTATE_90) for p in portraits[:10])]
    photos.append(flat_photo)
    square = BodyPartDetector(packaged_detector(), canvas="square")
    rect = BodyPartDetector(packaged_detector())
    assert rect.rect and not square.rect and rect.key != square.key
    assert rect.canvas(portraits[0]) == canvas_shape(*portraits[0].size, 320)
    assert rect.canvas(portraits[0])[0] < 320 and square.canvas(portraits[0]) == (320, 320)
    a, b = square.detect(photos), rect.detect(photos)
    agree = parts_agreement(a, b)
    assert agree["person_agreement"] >= 0.95, agree
    assert agree["median_box_iou"] >= 0.95, agree

    def unsafe(found: list[list[Part]]) -> list[bool]:
        return [any(v >= 0.5 for v in exposure(parts).values()) for parts in found]

    assert unsafe(a) == unsafe(b)
    assert garment_boxes(b[-1]) == []
    assert len(rect._sessions) >= 3  # the square, portrait and landscape inputs
    with pytest.raises(ConfigError, match="canvas"):
        BodyPartDetector(packaged_detector(), canvas="round")


def test_the_numpy_box_decode_finds_what_the_graph_decode_finds(shared_data, flat_photo) -> None:
    """The head cut before its box decode (split_head) and decoded in numpy on the anchors
    that pass MIN_SCORE: the same parts, scores and boxes as the graph's own tail, on the
    square and the narrow inputs."""
    pytest.importorskip("onnx", reason="cutting the graph needs onnx")
    import onnx

    street = sorted((shared_data / "street" / "images").glob("*.jpg"))[::25][:40]
    photos = [Image.open(p).convert("RGB") for p in street]
    photos += [photos[0].transpose(Image.Transpose.ROTATE_90), flat_photo]
    for canvas in ("rect", "square"):
        numpy_ = BodyPartDetector(packaged_detector(), canvas=canvas)
        graph = BodyPartDetector(packaged_detector(), canvas=canvas, decode="graph")
        assert numpy_.split and not graph.split and numpy_.key == graph.key
        a, b = numpy_.detect(photos), graph.detect(photos)
        assert sum(map(len, a)) > len(photos)  # people were found
        for mine, theirs in zip(a, b, strict=True):
            assert [p.label for p in mine] == [p.label for p in theirs]
            for p, q in zip(mine, theirs, strict=True):
                assert p.score == pytest.approx(q.score, abs=1e-4)
                assert np.allclose(p.box, q.box, atol=1e-5)
    cut = split_head(onnx.load(str(packaged_detector())))
    assert [o.name for o in cut.graph.output] == [
        "/model.22/Split_output_0",
        "/model.22/Sigmoid_output_0",
    ]
    assert not any(n.op_type == "Softmax" for n in cut.graph.node)
    with pytest.raises(ConfigError, match="box decode"):
        split_head(cut)  # a graph already cut, or any other head
    with pytest.raises(ConfigError, match="decode"):
        BodyPartDetector(packaged_detector(), decode="torch")
