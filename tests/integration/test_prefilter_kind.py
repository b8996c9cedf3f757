"""The post pre-filter kind end to end: artifact round trip, checks, promote, fallback, eval.

Artifacts are real: the plain ImageNet backbone the session builds (``built_models``), the
packaged nudenet detector, a logistic regression fitted on demo-catalog photos ("is it a dress
photo"). :func:`good_prefilter` and :func:`bad_prefilter` are also the contract test's factories.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.core.images import load_image_file
from lookalike.core.settings import Settings
from lookalike.embed.bodyparts import packaged_detector
from lookalike.lifecycle import LoadContext, ProductSlot, StepPools, promote, rollback
from lookalike.moderation.fit import (
    Sample,
    SearchParts,
    build_prefilter,
    register_prefilter,
    search_backbone,
)
from lookalike.moderation.kind import ARTIFACT_NAME, PrefilterKind, read_holdout
from lookalike.moderation.prefilter import (
    BACKBONE_FILE,
    CLASSIFIER_FILE,
    DETECTOR_FILE,
    Classifier,
    Scorer,
)
from lookalike.registry import Ref, Registry, sha256_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo" / "catalog"
BACKBONE = Ref("effnet_lite0", "production")


def demo_samples(per: int = 45) -> list[Sample]:
    """``per`` demo-catalog dress photos and ``per`` of other garments (label: is a dress)."""
    with (DEMO / "items.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    dresses = [r for r in rows if r["category"] == "Dress"][:per]
    others = [r for r in rows if r["category"] != "Dress"][:per]
    return [
        Sample(DEMO / r["image"], int(r["category"] == "Dress"), "demo") for r in dresses + others
    ]


def good_prefilter(registry: Registry, cache: Path | None = None) -> Ref:
    ref, _ = build_prefilter(
        registry,
        demo_samples(),
        backbone=BACKBONE,
        blocks=("whole", "parts"),
        cache=cache or registry.root.parent / "var" / "prefilter-cache",
        data={"seed": "demo catalog (test)"},
    )
    return ref


def bad_prefilter(registry: Registry) -> Ref:
    """The good model with its weights reversed: loads and answers, precision collapses."""
    good = registry.resolve(Ref(ARTIFACT_NAME, "production"))
    folder = registry.path(good)
    clf = Classifier.load(folder / CLASSIFIER_FILE)
    flipped = Classifier(
        clf.blocks, -clf.w, -clf.b, clf.centre, clf.scale, clf.threshold, clf.recall_target
    )
    blocks, y, paths = read_holdout(folder)
    holdout = [Sample(p, int(label), "demo") for p, label in zip(paths, y, strict=True)]
    manifest = registry.manifest(good)
    parts = SearchParts(
        folder / BACKBONE_FILE, manifest["preprocess"], manifest["backbone"]["variant"],
        folder / DETECTOR_FILE, manifest["detector"]["input"],
    )  # fmt: skip
    return register_prefilter(
        registry, flipped, parts, blocks, holdout, {"note": "weights reversed on purpose"}
    )


def test_prefilter_reads_the_search_models_own_detector(garment_models: Path) -> None:
    """The shipped search model finds garments with a 256 px detector: a pre-filter built on it
    reads the same file (one detector for both products, and the faster one)."""
    registry = Registry(garment_models, "model")
    parts = search_backbone(registry, BACKBONE)
    search = registry.manifest(registry.resolve(BACKBONE))
    folder = registry.path(registry.resolve(BACKBONE))
    assert parts.detector == folder / search["detector"]["file"]
    assert parts.detector_input == search["detector"]["input"] == 256
    assert parts.onnx == folder / search["variants"][search["default_variant"]]
    # features of one detector are never read as another's
    packaged = SearchParts(parts.onnx, parts.preprocess, parts.variant, packaged_detector(), 320)
    assert parts.cache_key() != packaged.cache_key()
    extractor = parts.extractor()
    assert extractor.detector.size == 256


@pytest.fixture()
def kind(home_with_model: Path) -> PrefilterKind:
    return PrefilterKind(Settings(home=home_with_model))


def test_artifact_round_trip_and_checksums(kind: PrefilterKind) -> None:
    registry = kind.registry("model")
    ref = good_prefilter(registry)
    folder = registry.path(ref)
    manifest = registry.manifest(ref)
    assert manifest["task"] == "post-prefilter" and manifest["blocks"] == ["whole", "parts"]
    assert 0 < manifest["threshold"] < 1 and manifest["recall_target"] == 0.9
    # the backbone and detector are copies, checksummed: a new search model changes nothing
    source = Registry(kind.settings.models_dir, "model").path(Ref("effnet_lite0", "1"))
    search = json.loads((source / "manifest.json").read_text())
    src_onnx = source / search["variants"][search["default_variant"]]
    assert sha256_file(folder / BACKBONE_FILE) == sha256_file(src_onnx)
    # this search model (the plain ImageNet one) has no detector: the packaged one is copied
    assert "detector" not in search
    assert sha256_file(folder / DETECTOR_FILE) == sha256_file(packaged_detector())
    assert manifest["detector"]["input"] == 320
    for name in (BACKBONE_FILE, DETECTOR_FILE, CLASSIFIER_FILE):
        assert manifest["files"][name]["sha256"] == sha256_file(folder / name)
    assert registry.verify(ref) == []
    # served features equal the stored held-out ones, so served scores are the evaluated ones
    scorer = Scorer(folder, manifest, ref.version)
    blocks, y, paths = read_holdout(folder)
    answers = scorer.score([load_image_file(p) for p in paths[:6]])
    stored = scorer.classifier.score(np.concatenate([blocks["whole"], blocks["parts"]], axis=1))
    assert np.allclose([a.score for a in answers], stored[:6], atol=1e-4)
    assert all(a.passed == (a.score >= manifest["threshold"]) for a in answers)
    # damage after the checksums were taken: the checksums check fails
    (folder / CLASSIFIER_FILE).write_bytes(b"\0" * 64)
    assert registry.verify(ref)
    report = kind.check("model", ref)
    assert not report.passed and not report.get("checksums").passed


def test_checks_block_a_worse_candidate_and_rollback(kind: PrefilterKind) -> None:
    registry = kind.registry("model")
    first = good_prefilter(registry)
    outcome = promote(kind, "model", first)
    assert outcome.promoted, outcome.failed_checks
    metric = kind.check("model", first).get("metric")
    assert metric.passed and metric.figures["direction"] == "higher"
    bad = bad_prefilter(registry)
    refused = promote(kind, "model", bad)
    assert refused.status == "refused" and "metric" in refused.failed_checks
    assert registry.aliases(ARTIFACT_NAME)["production"] == first.version
    second = good_prefilter(registry)
    assert promote(kind, "model", second).promoted
    rollback(kind, "model")
    assert registry.aliases(ARTIFACT_NAME)["production"] == first.version


def _copy_damaged(registry: Registry, ref: Ref) -> Ref:
    """A copy of ``ref`` whose classifier is zeros (after the checksums were taken)."""
    with registry.create(ARTIFACT_NAME, registry.manifest(ref) | {"note": "damaged"}) as w:
        for p in registry.path(ref).iterdir():
            if p.name != "manifest.json":
                shutil.copy(p, w.path / p.name)
    (w.path / CLASSIFIER_FILE).write_bytes(b"\0" * 64)
    return w.ref


def test_broken_model_sends_everything_to_the_humans(kind: PrefilterKind) -> None:
    registry = kind.registry("model")
    good = good_prefilter(registry)
    assert promote(kind, "model", good).promoted
    broken = _copy_damaged(registry, good)
    registry.set_aliases(ARTIFACT_NAME, production=broken.version)  # as a bad disk would
    slot = ProductSlot(kind, LoadContext(kind.settings, StepPools(2))).load()
    gen = slot.generation
    assert gen is not None and gen.scorer is None
    photo = load_image_file(demo_samples(1)[0].path)
    answers, served_by, reasons = gen.score([photo, photo])
    assert served_by == "send-to-humans" and reasons and "could not load" in reasons[0]
    assert [a.score for a in answers] == [1.0, 1.0] and all(a.passed for a in answers)
    health = slot.health()
    assert health["fell_back"] is True or health.get("status") != "ok"


def test_eval_command_on_a_labelled_folder(
    kind: PrefilterKind, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registry = kind.registry("model")
    assert promote(kind, "model", good_prefilter(registry)).promoted
    labels = tmp_path / "labels.csv"
    samples = demo_samples(12)
    with labels.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["file", "tags", "has_dress"])  # other columns are ignored
        for s in samples:
            out.writerow([s.path.relative_to(DEMO).as_posix(), "x", s.label])
        out.writerow(["images/missing.jpg", "x", 1])
    monkeypatch.setenv("LOOKALIKE_HOME", str(kind.settings.home))
    from lookalike.cli.main import app

    result = CliRunner().invoke(
        app,
        ["moderation", "eval", "--labels", str(labels), "--root", str(DEMO),
         "--json", str(tmp_path / "out.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads((tmp_path / "out.json").read_text())
    assert body["photos"] == len(samples) and body["unreadable"] == 1
    assert body["unreadable_photos"] == [f"{DEMO / 'images' / 'missing.jpg'}: no such photo"]
    assert sum(body["confusion"].values()) == len(samples)
    assert body["model_version"].startswith("post_prefilter:") and body["served_by"]
    assert 0.0 <= body["pr_auc"] <= 1.0 and "PR-AUC" in result.output
    bad = CliRunner().invoke(app, ["moderation", "eval", "--labels", str(tmp_path / "nope.csv"),
                                   "--root", str(DEMO)])  # fmt: skip
    assert bad.exit_code == 1 and "cannot read" in bad.output and "nope.csv" in bad.output
    assert isinstance(bad.exception, SystemExit), repr(bad.exception)  # no uncaught error


def test_score_command_fills_the_queue(
    fresh_demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.moderation.posts import Post
    from lookalike.moderation.store import ModerationStore

    settings = Settings(home=fresh_demo_home)
    kind = PrefilterKind(settings)
    assert promote(kind, "model", good_prefilter(kind.registry("model"))).promoted
    store = ModerationStore.from_settings(settings)
    store.create_schema()
    samples = demo_samples(4)
    posts = [
        Post(f"p{i}", "test", caption="#dress", image_path=s.path) for i, s in enumerate(samples)
    ]
    posts.append(Post("p9-again", "test", image_path=samples[0].path))  # the same photo again
    assert store.upsert_posts(posts).added == len(posts)
    monkeypatch.setenv("LOOKALIKE_HOME", str(fresh_demo_home))
    from lookalike.cli.main import app

    result = CliRunner().invoke(app, ["moderation", "score", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert f"scored {len(posts)} posts" in result.output
    assert store.posts_to_score(10) == []  # every post was scored
    threshold = kind.registry("model").manifest(Ref(ARTIFACT_NAME, "production"))["threshold"]
    queued = [
        store.queued_post(p.post_id) for p in posts if store.status_of(p.post_id)[0] == "queued"
    ]
    dresses = [s for s in samples if s.label == 1]
    assert queued, "no dress photo reached the queue"
    for q in queued:
        assert len(q.matches) == 3 and q.score >= threshold
    assert store.near_duplicate_of("p9-again") == "p0"
    assert len(queued) <= len(posts) and dresses


def test_catalog_matches_from_the_prefilter_rows_equal_search_image(
    fresh_demo_home: Path,
) -> None:
    """The match reuses the pre-filter's backbone rows of the garment crops: the same items and
    scores as ``search_image(image, k=3, box=garment_box)`` embedding each photo again."""
    from lookalike.catalog import CatalogStore
    from lookalike.moderation.features import BLOCKS
    from lookalike.moderation.prefilter import MATCHES, catalog_matches
    from lookalike.search.kind import SearchKind
    from lookalike.search.service import SearchService

    settings = Settings(home=fresh_demo_home)
    kind = PrefilterKind(settings)
    # blocks whole + parts: the crop rows the match needs are computed though no block reads them
    assert promote(kind, "model", good_prefilter(kind.registry("model"))).promoted
    street = REPO.parent / "shared" / "data" / "street" / "images"
    paths = sorted(street.glob("*.jpg"))[:10] + [s.path for s in demo_samples(3)]
    images = [load_image_file(p) for p in paths]
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    pools = StepPools(2)
    try:
        context = LoadContext(settings, pools, shared={"catalog": catalog})
        prefilter = ProductSlot(kind, context).load().generation
        search = ProductSlot(SearchKind(settings), context).load().generation
        answers, served_by, _ = prefilter.score(images, None)
        assert served_by == "prefilter-logreg"
        assert all(a.match_row is not None and a.backbone == ("effnet_lite0:1", "int8")
                   for a in answers)  # fmt: skip
        found, version = catalog_matches(search, images, answers)
        service = search.service
        for image, a, got in zip(images, answers, found, strict=True):
            want = service.search_image(image, k=MATCHES, box=a.garment_box, phases=search)
            assert [i for i, _ in got] == [h.item.item_id for h in want.hits]
            assert np.allclose([s for _, s in got], [h.score for h in want.hits], atol=1e-5)
            assert len(got) == MATCHES and version == want.model_version
        boxes = [a.garment_box for a in answers]
        rows = np.stack([a.match_row for a in answers])
        results = service.search_rows(images, boxes, rows, backbone=answers[0].backbone, k=3)
        assert all(r is not None and r.served_by == "backbone-rows" for r in results)
        # rows of another model file do not stand in: every photo is searched as usual
        other = service.search_rows(images, boxes, rows, backbone=("effnet_lite0:1", "fp32"))
        assert other == [None] * len(images)
        # a crop mode that cuts a photo without a person itself: only boxed photos reuse rows
        garment = SearchService(catalog, service.embedder, service.index, crops="garment")
        mixed = garment.search_rows(images, boxes, rows, backbone=answers[0].backbone, k=3)
        assert [r is not None for r in mixed] == [b is not None for b in boxes]
        if street.is_dir():
            assert any(b is not None for b in boxes) and any(b is None for b in boxes)
        # the crop block is the match rows; reading the whole block too changes neither
        extractor = prefilter.scorer.extractor
        every = extractor.extract(images, None, BLOCKS)
        crop_only = extractor.extract(images, None, ("crop",))
        assert np.allclose(every.blocks["crop"], crop_only.blocks["crop"], atol=1e-6)
        assert np.allclose(every.blocks["crop"], rows, atol=1e-6)
        persons = [i for i, b in enumerate(boxes) if b is not None]
        no_person = [i for i, b in enumerate(boxes) if b is None]
        whole = extractor.embedder.embed_backbone(images)
        assert np.allclose(every.blocks["whole"], whole, atol=1e-5)
        assert np.allclose(every.blocks["crop"][no_person], whole[no_person], atol=1e-5)
        if persons:  # a person's crop row is its garment's, not the photo's
            assert not np.allclose(every.blocks["crop"][persons], whole[persons], atol=1e-3)
    finally:
        catalog.close()
        pools.close()


def test_catalog_matches_reuse_rows_of_photos_without_a_person(
    tmp_path: Path, garment_models: Path
) -> None:
    """With the shipped garment-aware search model, a photo in which its detector finds no one
    is searched whole; the pre-filter that reads the same detector already holds that row, so
    the match reuses it and finds what ``search_image`` finds. A detector of another key does
    not stand in."""
    from lookalike.catalog import CatalogStore
    from lookalike.embed import load_embedder
    from lookalike.moderation.prefilter import MATCHES, catalog_matches
    from lookalike.search import build_index
    from lookalike.search.kind import SearchKind

    shutil.copytree(garment_models, tmp_path / "models")
    settings = Settings(home=tmp_path)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    catalog.create_schema()
    assert catalog.import_file(DEMO / "items.csv", DEMO).ok
    models = Registry(settings.models_dir, "model")
    index = build_index(
        catalog, load_embedder(models, BACKBONE), Registry(settings.index_dir, "index")
    )
    assert promote(SearchKind(settings), "index", index).promoted
    kind = PrefilterKind(settings)
    ref, _ = build_prefilter(
        models, demo_samples(12), backbone=BACKBONE, blocks=("crop",), data={"seed": "test"}
    )
    assert promote(kind, "model", ref).promoted
    street = REPO.parent / "shared" / "data" / "street" / "images"
    paths = sorted(street.glob("*.jpg"))[:6] + [s.path for s in demo_samples(3)]
    images = [load_image_file(p) for p in paths]
    pools = StepPools(2)
    try:
        context = LoadContext(settings, pools, shared={"catalog": catalog})
        prefilter = ProductSlot(kind, context).load().generation
        search = ProductSlot(SearchKind(settings), context).load().generation
        service = search.service
        answers, _, _ = prefilter.score(images, None)
        key = service.embedder.detector.key
        unworn = [a.nothing_worn for a in answers]
        assert prefilter.scorer.extractor.detector.key == key  # one detector for both
        assert set(unworn[-3:]) == {key}  # garments alone: nobody wears them
        assert all(
            u is None for a, u in zip(answers, unworn, strict=True) if a.garment_box is not None
        )
        found, _ = catalog_matches(search, images, answers)
        for image, a, got in zip(images, answers, found, strict=True):
            want = service.search_image(image, k=MATCHES, box=a.garment_box, phases=search)
            assert [i for i, _ in got] == [h.item.item_id for h in want.hits]
            assert np.allclose([s for _, s in got], [h.score for h in want.hits], atol=1e-5)
        boxes = [a.garment_box for a in answers]
        rows = np.stack([a.match_row for a in answers])
        backbone = answers[0].backbone
        reused = service.search_rows(images, boxes, rows, backbone=backbone, unworn=unworn)
        assert [r is not None for r in reused] == [
            b is not None or u is not None for b, u in zip(boxes, unworn, strict=True)
        ]
        assert all(
            r.crop_mode == "whole" for r, u in zip(reused, unworn, strict=True) if u is not None
        )
        other = ["0" * 16 + "@256-rect" if u else None for u in unworn]
        alone = service.search_rows(images, boxes, rows, backbone=backbone, unworn=other)
        assert [r is not None for r in alone] == [b is not None for b in boxes]
    finally:
        catalog.close()
        pools.close()
