"""The one retrieval metric: ranks against a brute-force oracle, views, ties, twins, keys."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.core.errors import InvalidInput
from lookalike.core.metrics import KS, duplicate_groups, figures, rank_metrics, recall_key
from lookalike.embed.runtime import EmbedderInfo


def _oracle_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1 + rows scoring strictly higher than the relevant one, by sorting each row."""
    out = []
    for row, rel in zip(scores, relevant, strict=True):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        better = [j for j in order if row[j] > row[rel]]
        out.append(1 + len(better))
    return np.asarray(out)


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(60, 16)).astype(np.float32)
    relevant = rng.integers(0, 60, 45)
    # queries near their relevant row, so the ranks spread over 1..60
    queries = gallery[relevant] + rng.normal(scale=2.0, size=(45, 16)).astype(np.float32)
    return queries, gallery, relevant


def test_ranks_recall_and_map_match_the_oracle(data) -> None:  # type: ignore[no-untyped-def]
    queries, gallery, relevant = data
    recall, mean_ap, ranks = rank_metrics(queries, gallery, relevant)
    want = _oracle_ranks(queries @ gallery.T, relevant)
    np.testing.assert_array_equal(ranks, want)
    assert 1 < ranks.max() and ranks.min() == 1  # a spread, not a trivial case
    assert set(recall) == {recall_key(k) for k in KS} == {"@1", "@5", "@10", "@20"}
    for k in KS:
        assert recall[f"@{k}"] == round(float(np.mean(want <= k)), 4)
    assert mean_ap == round(float(np.mean(1.0 / want)), 4)
    assert figures(queries, gallery, relevant) == {"recall": recall, "map": mean_ap}


def test_views_and_owner_rows_score_the_best_view(data) -> None:  # type: ignore[no-untyped-def]
    queries, gallery, relevant = data
    rng = np.random.default_rng(8)
    other = queries + rng.normal(scale=1.0, size=queries.shape).astype(np.float32)
    stacked = np.stack([queries, other])  # (views, n, d)
    best = np.maximum(queries @ gallery.T, other @ gallery.T)
    _, _, ranks = rank_metrics(stacked, gallery, relevant)
    np.testing.assert_array_equal(ranks, _oracle_ranks(best, relevant))
    # The same views as rows grouped by owner (as multi-crop search produces them).
    rows = np.stack([queries, other], axis=1).reshape(-1, queries.shape[1])
    owner = np.repeat(np.arange(len(queries)), 2)
    np.testing.assert_array_equal(rank_metrics(rows, gallery, relevant, owner=owner)[2], ranks)


def test_a_tie_with_a_duplicate_counts_in_the_querys_favour() -> None:
    gallery = np.eye(3, dtype=np.float32)
    gallery = np.vstack([gallery, gallery[1]])  # row 3 is a byte-identical copy of row 1
    queries = gallery[[1]]
    recall, mean_ap, ranks = rank_metrics(queries, gallery, np.asarray([1]), ks=(1,))
    assert ranks.tolist() == [1] and recall == {"@1": 1.0} and mean_ap == 1.0


def _oracle_dedup_ranks(scores: np.ndarray, relevant: np.ndarray, keys: list[str]) -> np.ndarray:
    """1 + rows scoring strictly higher than the best row with the relevant row's key."""
    out = []
    for row, rel in zip(scores, relevant, strict=True):
        best = max(row[j] for j in range(len(row)) if keys[j] == keys[rel])
        out.append(1 + sum(1 for j in range(len(row)) if row[j] > best))
    return np.asarray(out)


def test_duplicate_groups_give_each_twin_its_first_rows_id() -> None:
    keys = ["a", "b", "a", "c", "b", "a"]
    assert duplicate_groups(keys).tolist() == [0, 1, 0, 3, 1, 0]
    assert duplicate_groups([]).tolist() == []


def test_a_twin_of_the_true_product_counts_as_found_with_groups(data) -> None:  # type: ignore[no-untyped-def]
    queries, gallery, relevant = data
    rng = np.random.default_rng(9)
    # A gallery where a fifth of the rows have a twin: the same photo under another item, whose
    # vector differs by a little noise (as separately computed vectors of one photo can).
    twins_of = rng.choice(len(gallery), size=12, replace=False)
    twins = gallery[twins_of] + rng.normal(scale=0.3, size=(12, gallery.shape[1]))
    full = np.vstack([gallery, twins.astype(np.float32)])
    keys = [f"sha-{i}" for i in range(len(gallery))] + [f"sha-{i}" for i in twins_of]
    groups = duplicate_groups(keys)
    scores = queries @ full.T

    strict, _, strict_ranks = rank_metrics(queries, full, relevant)
    dedup, mean_ap, ranks = rank_metrics(queries, full, relevant, groups=groups)
    np.testing.assert_array_equal(strict_ranks, _oracle_ranks(scores, relevant))
    np.testing.assert_array_equal(ranks, _oracle_dedup_ranks(scores, relevant, keys))
    assert set(dedup) == set(strict)  # the same "@k" keys
    assert np.all(ranks <= strict_ranks)
    with_twin = np.isin(relevant, twins_of)
    np.testing.assert_array_equal(ranks[~with_twin], strict_ranks[~with_twin])  # no twin: same
    assert np.any(ranks[with_twin] < strict_ranks[with_twin])  # the twin was found first
    assert mean_ap == round(float(np.mean(1.0 / ranks)), 4)
    for k in KS:
        assert dedup[f"@{k}"] == round(float(np.mean(ranks <= k)), 4) >= strict[f"@{k}"]
    # Without any twin the groups change nothing; views grouped by owner still work with them.
    alone = duplicate_groups([str(i) for i in range(len(full))])
    np.testing.assert_array_equal(
        rank_metrics(queries, full, relevant, groups=alone)[2], strict_ranks
    )
    rows = np.repeat(queries, 2, axis=0)
    owner = np.repeat(np.arange(len(queries)), 2)
    got = rank_metrics(rows, full, relevant, owner=owner, groups=groups)[2]
    np.testing.assert_array_equal(got, ranks)


def test_groups_of_the_wrong_length_are_refused(data) -> None:  # type: ignore[no-untyped-def]
    queries, gallery, relevant = data
    with pytest.raises(ValueError, match="groups has shape"):
        rank_metrics(queries, gallery, relevant, groups=np.zeros(len(gallery) - 1, np.int64))


class _MeanColour:
    """A real, tiny embedder: the unit vector of a photo's mean RGB (plus a constant)."""

    info = EmbedderInfo("mean-colour:1", 4, "fp32", "numpy", "test embedder")

    def embed(self, images, role="catalog"):  # type: ignore[no-untyped-def]
        rows = [
            np.r_[np.asarray(im.convert("RGB"), np.float32).mean(axis=(0, 1)), 40.0]
            for im in images
        ]
        out = np.asarray(rows, np.float32).reshape(-1, 4)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_evaluate_retrieval_counts_byte_identical_twins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from PIL import Image

    from lookalike.search.evaluation import Pair, evaluate_retrieval

    colours = {"a": (200, 20, 20), "c": (20, 200, 20), "d": (20, 20, 200), "e": (200, 200, 20)}
    for folder in ("product", "person", "extra"):
        (tmp_path / folder).mkdir()
    for name, rgb in colours.items():
        Image.new("RGB", (24, 32), rgb).save(tmp_path / "product" / f"{name}.png")
        near = tuple(min(255, v + 15) for v in rgb)
        Image.new("RGB", (24, 32), near).save(tmp_path / "person" / f"{name}.png")
    # Item b's product photo is a byte copy of a's; a distractor is a byte copy of c's; d's is
    # the same colour re-saved as JPEG (looks alike, different bytes: not a twin).
    shutil.copyfile(tmp_path / "product" / "a.png", tmp_path / "product" / "b.png")
    shutil.copyfile(tmp_path / "person" / "a.png", tmp_path / "person" / "b.png")
    shutil.copyfile(tmp_path / "product" / "c.png", tmp_path / "extra" / "c-copy.png")
    Image.new("RGB", (24, 32), colours["d"]).save(tmp_path / "extra" / "d.jpg", quality=70)
    names = ["a", "b", "c", "d", "e"]
    pairs = [Pair(n, f"person/{n}.png", f"product/{n}.png") for n in names]
    distractors = sorted((tmp_path / "extra").iterdir())

    report = evaluate_retrieval(_MeanColour(), pairs, tmp_path, distractors=distractors)
    assert report.gallery == 7 and report.queries == 5
    assert report.pairs_with_twin == 3  # a and b (each other's twin), c (the distractor copy)
    assert set(report.recall_dedup) == set(report.recall) == {recall_key(k) for k in KS}
    for k in report.recall:
        assert 0 < report.recall[k] <= report.recall_dedup[k] <= 1
    doc = report.to_dict()
    assert doc["recall_dedup"] == report.recall_dedup and doc["pairs_with_twin"] == 3


def test_unreadable_photos_are_skipped_with_their_pairs_and_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from lookalike.search.evaluation import Pair, evaluate_retrieval, read_pairs

    for folder in ("product", "person", "extra"):
        (tmp_path / folder).mkdir()
    for name, rgb in {"a": (200, 20, 20), "b": (20, 200, 20), "c": (20, 20, 200)}.items():
        Image.new("RGB", (24, 32), rgb).save(tmp_path / "product" / f"{name}.jpg")
        Image.new("RGB", (24, 32), rgb).save(tmp_path / "person" / f"{name}.png")
    whole = (tmp_path / "product" / "c.jpg").read_bytes()
    (tmp_path / "product" / "c.jpg").write_bytes(whole[: len(whole) // 2])  # a cut download
    (tmp_path / "extra" / "notes.jpg").write_text("not a photo")
    Image.new("RGB", (24, 32), (90, 90, 90)).save(tmp_path / "extra" / "grey.jpg")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "item_id,person,product,split\n"
        "a,person/a.png,product/a.jpg,Val\n"
        "b,person/b.png,product/b.jpg, val\n"
        "c,person/c.png,product/c.jpg,val\n"
        "d,person/typo.png,product/a.jpg,val\n"
        "e,person/a.png,product/a.jpg,train\n"
    )
    pairs = read_pairs(csv_path, "val")  # a split's name matches in any case, spaces trimmed
    assert [p.item_id for p in pairs] == ["a", "b", "c", "d"]

    report = evaluate_retrieval(
        _MeanColour(), pairs, tmp_path, distractors=sorted((tmp_path / "extra").iterdir())
    )
    assert (report.queries, report.gallery, report.distractors) == (2, 3, 1)
    assert report.recall[recall_key(1)] == 1.0  # a and b each find their own product
    skipped = report.to_dict()["skipped"]
    assert {k: skipped[k] for k in ("photos", "pairs", "distractors")} == {
        "photos": 3,
        "pairs": 2,
        "distractors": 1,
    }
    reasons = " | ".join(skipped["reasons"])
    assert f"{tmp_path / 'person' / 'typo.png'}: no such photo" in reasons
    assert f"{tmp_path / 'product' / 'c.jpg'}: the JPEG file is truncated" in reasons
    assert f"{tmp_path / 'extra' / 'notes.jpg'}: " in reasons

    with pytest.raises(InvalidInput, match="no pair has readable photos"):
        evaluate_retrieval(_MeanColour(), [Pair("d", "person/typo.png", "product/c.jpg")], tmp_path)
