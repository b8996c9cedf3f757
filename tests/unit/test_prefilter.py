"""The pre-filter's parts: figures, caption features, the classifier on a small real subset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lookalike.core.errors import InvalidInput
from lookalike.embed.bodyparts import packaged_detector
from lookalike.moderation.evaluation import (
    average_precision,
    confusion,
    figures,
    precision_at_recall,
    threshold_for_recall,
)
from lookalike.moderation.features import Extractor, caption_features
from lookalike.moderation.fit import (
    Sample,
    cached_blocks,
    fit_classifier_cv,
    label_folds,
    labelled_folder,
    seed_samples,
    stratified_split,
)
from lookalike.moderation.prefilter import Classifier


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),  # no such file
        ("folder", "Is a directory"),
        (b"\xff\xd8\xff\xe0 a JPEG, not a CSV", "not UTF-8 text (byte 0)"),
        (b"file,has_dress\na.jpg,1\x00\n", "NUL bytes"),
        (b"name,label\na.jpg,1\n", "needs columns file and has_dress, has ['label', 'name']"),
        (
            b"file,has_dress\na.jpg\n",
            "line 2: has_dress must be 0 or 1 (or yes/no, true/false), got ''",
        ),  # short row
        (b"file,has_dress\na.jpg,1\n,0\n", "line 3: the file column is empty"),
        (
            b"file,has_dress\na.jpg,2\n",
            "line 2: has_dress must be 0 or 1 (or yes/no, true/false), got '2'",
        ),
    ],
)
def test_a_labels_file_that_cannot_be_read_says_why(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    labels = tmp_path / "labels.csv"
    if content == "folder":
        labels.mkdir()
    elif isinstance(content, bytes):
        labels.write_bytes(content)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        labelled_folder(labels, tmp_path)


def test_labels_saved_by_a_spreadsheet_read_like_any_other(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"  # Excel's UTF-8 CSV starts with a byte-order mark
    labels.write_bytes("\ufefffile,has_dress,note\r\n a.jpg ,1,x\r\nb.jpg,0,\r\n".encode())
    samples = labelled_folder(labels, tmp_path, "shop")
    assert [(s.path, s.label, s.source) for s in samples] == [
        (tmp_path / "a.jpg", 1, "shop"),
        (tmp_path / "b.jpg", 0, "shop"),
    ]


def test_labels_separated_by_semicolons_or_tabs_read_like_commas(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    for sep in (";", "\t"):
        labels.write_text(f"file{sep}has_dress{sep}note\na.jpg{sep}1{sep}x, y\nb.jpg{sep}0{sep}\n")
        samples = labelled_folder(labels, tmp_path)
        assert [(s.path.name, s.label) for s in samples] == [("a.jpg", 1), ("b.jpg", 0)]


def test_labels_with_other_header_case_and_yes_no_values_read_the_same(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("File ,Has_Dress\na.jpg,Yes\nb.jpg,false\nc.jpg,1\nd.jpg,N\n")
    samples = labelled_folder(labels, tmp_path)
    assert [(s.path.name, s.label) for s in samples] == [
        ("a.jpg", 1),
        ("b.jpg", 0),
        ("c.jpg", 1),
        ("d.jpg", 0),
    ]
    labels.write_text("file,has_dress\na.jpg,maybe\n")
    with pytest.raises(InvalidInput, match="line 2: has_dress must be 0 or 1"):
        labelled_folder(labels, tmp_path)
    labels.write_text("file,File,has_dress\na.jpg,b.jpg,1\n")
    with pytest.raises(InvalidInput, match="column 'file' appears more than once"):
        labelled_folder(labels, tmp_path)


def test_seed_data_that_is_not_there_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a folder: pass --data"):
        seed_samples(tmp_path / "nowhere")
    with pytest.raises(InvalidInput, match=re.escape("street/tags.csv: No such file")):
        seed_samples(tmp_path)


def test_average_precision_bounds_and_random_scorer() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(int)
    assert average_precision(y.astype(float), y) == pytest.approx(1.0)
    assert average_precision(-y.astype(float), y) < 0.25  # reversed: about the positive share
    random = average_precision(rng.random(len(y)), y)
    assert abs(random - y.mean()) < 0.03


def test_threshold_keeps_recall_and_confusion_adds_up() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(int)
    scores = y * 0.5 + rng.random(500)
    t = threshold_for_recall(scores, y, 0.9)
    c = confusion(scores, y, t)
    assert c["tp"] / (c["tp"] + c["fn"]) >= 0.9
    assert sum(c.values()) == 500
    # the highest such threshold: one step up loses recall
    higher = np.min(scores[scores > t]) if np.any(scores > t) else np.inf
    c_up = confusion(scores, y, higher)
    assert c_up["tp"] / (c_up["tp"] + c_up["fn"]) < 0.9
    f = figures(scores, y, t)
    assert f["precision_at_recall_0.9"] >= f["precision"] - 1e-9
    with pytest.raises(InvalidInput):
        precision_at_recall(scores, y[:-1], 0.9)


def test_caption_features() -> None:
    assert caption_features(None).tolist() == [0.0, 0.0, 0.0]
    f = caption_features("Loving my new #Lookalike midi #dress #ootd")
    assert f[0] == pytest.approx(np.log1p(3)) and f[1] == 1.0 and f[2] == 1.0
    assert caption_features("address unknown")[2] == 0.0  # a word that only contains "dress"


def test_classifier_round_trip_refuses_damage(tmp_path: Path) -> None:
    d = 5
    clf = Classifier(("parts",), np.ones(d), 0.1, np.zeros(d), np.ones(d), 0.4, 0.9)
    clf.save(tmp_path / "c.npz")
    back = Classifier.load(tmp_path / "c.npz")
    x = np.random.default_rng(0).random((3, d))
    assert np.allclose(back.score(x), clf.score(x)) and back.blocks == ("parts",)
    z = dict(np.load(tmp_path / "c.npz"))
    z["w"] = np.full(d, np.nan)
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(Exception, match="NaN"):
        Classifier.load(tmp_path / "bad.npz")


def _subset(data: Path, per: int = 50) -> list[Sample]:
    """A small stratified subset of the seed data: street dresses, street others, scenes,
    clothing (``per`` of each, 2 × ``per`` street dresses)."""
    rng = np.random.default_rng(5)
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in seed_samples(data):
        groups.setdefault((s.source, s.label), []).append(s)
    out: list[Sample] = []
    for key, items in sorted(groups.items()):
        n = 2 * per if key == ("street", 1) else per
        out += [items[i] for i in rng.choice(len(items), min(n, len(items)), replace=False)]
    return out


@pytest.mark.shared_data
def test_classifier_beats_chance_on_real_photos(
    shared_data: Path, built_models: Path, tmp_path: Path
) -> None:
    manifest = json.loads((built_models / "effnet_lite0" / "1" / "manifest.json").read_text())
    onnx = built_models / "effnet_lite0" / "1" / manifest["variants"][manifest["default_variant"]]
    extractor = Extractor(onnx, manifest["preprocess"], packaged_detector())
    samples = _subset(shared_data)
    blocks = cached_blocks(extractor, samples, tmp_path, "test")
    assert blocks["whole"].shape == (len(samples), 1280) and blocks["parts"].shape[1] == 21
    # the cache answers the second time, identically
    again = cached_blocks(extractor, samples, tmp_path, "test")
    assert all(np.array_equal(blocks[k], again[k]) for k in blocks)

    y = np.array([s.label for s in samples])
    split = stratified_split(samples, holdout=0.3, validation=0.3)
    train, val = set(split.train), set(split.validation)
    assert not train & set(split.holdout) and not val & train
    assert set(split.fitting) == train | val
    folds = label_folds(y, split.fitting, 5, 0)
    assert sorted(np.concatenate(folds).tolist()) == sorted(split.fitting.tolist())
    assert max(y[f].sum() for f in folds) - min(y[f].sum() for f in folds) <= 1  # labels spread
    clf, choice = fit_classifier_cv(blocks, y, split.fitting, ("whole", "crop", "parts"), steps=600)
    assert choice["folds"] == 5 and 0.0 < clf.threshold < 1.0
    x = np.concatenate([blocks[b] for b in clf.blocks], axis=1)
    # the threshold, chosen on out-of-fold scores, keeps its recall on the rows it was fitted on
    c = confusion(clf.score(x[split.fitting]), y[split.fitting], clf.threshold)
    assert c["tp"] / (c["tp"] + c["fn"]) >= 0.9
    # and on held-out photos it ranks dresses far above chance (chance PR-AUC = positive share)
    held = clf.score(x[split.holdout])
    share = y[split.holdout].mean()
    ap = average_precision(held, y[split.holdout])
    assert ap > share + 0.25, (ap, share, choice)
