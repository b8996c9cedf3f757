"""Recommendations: co-rental fit, blend mechanics, carousels, evaluation cases, events store.

Fixtures are small real rentals built in code (numbers of the RTR shape) and a real SQLite
database; no mocks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from lookalike.catalog.rentals import rentals_from_records, time_split
from lookalike.core.errors import InvalidInput
from lookalike.core.settings import Settings
from lookalike.recs.build import build_recs_model, fit_recs_model
from lookalike.recs.evaluation import home_cases, similar_cases
from lookalike.recs.events import EventStore
from lookalike.recs.home import build_page, page_items
from lookalike.recs.interactions import Interactions
from lookalike.recs.kind import RecsKind
from lookalike.recs.model import RecsModel
from lookalike.recs.occasions import occasion_name
from lookalike.recs.similar import Scored, blend, corental_items
from lookalike.registry import Registry


def synthetic_rentals(n_users: int = 300, seed: int = 0):
    """Two taste groups: wedding gowns (items 1–10) and work sheaths (items 11–20); each user
    rents 2–4 items of her group over 2016–2017, a few rent across groups."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {
        k: [] for k in ("user_id", "item_id", "review_date", "category", "rented_for")
    }
    for u in range(n_users):
        group = u % 2
        for _ in range(int(rng.integers(2, 5))):
            cross = rng.random() < 0.05
            g = 1 - group if cross else group
            item = int(rng.integers(1, 11)) + 10 * g
            day = np.datetime64("2016-01-01") + int(rng.integers(0, 730))
            cols["user_id"].append(1000 + u)
            cols["item_id"].append(item)
            cols["review_date"].append(str(day))
            cols["category"].append("gown" if g == 0 else "sheath")
            cols["rented_for"].append("wedding" if g == 0 else "work")
    return rentals_from_records(cols)


@pytest.fixture(scope="module")
def rentals():
    return synthetic_rentals()


@pytest.fixture(scope="module")
def model(rentals) -> RecsModel:
    return fit_recs_model(Interactions.from_rentals(rentals))


def test_corental_neighbours_are_the_same_taste_group(model: RecsModel) -> None:
    for item in ("3", "15"):
        near = [s for s in corental_items(model, item, 5, 6, fill=False)]
        assert near and all(s.source == "co-rental" for s in near)
        group = int(item) > 10
        same = [(int(s.item_id) > 10) == group for s in near]
        assert sum(same) >= 4, near
        assert item not in [s.item_id for s in near]


def test_item_list_is_full_and_unknown_item_is_empty(model: RecsModel) -> None:
    full = corental_items(model, "3", 15, 6)
    ids = [s.item_id for s in full]
    assert len(ids) == 15 and len(set(ids)) == 15 and "3" not in ids
    assert corental_items(model, "no-such-item", 10, 6) == []


def test_model_round_trips_through_its_files(model: RecsModel, tmp_path: Path) -> None:
    model.save(tmp_path)
    again = RecsModel.load(tmp_path)
    assert again.occasions == model.occasions and np.array_equal(again.nb_idx, model.nb_idx)
    assert [s.item_id for s in corental_items(again, "3", 5, 6)] == [
        s.item_id for s in corental_items(model, "3", 5, 6)
    ]


def test_blend_ends_are_visual_only_and_corental_only() -> None:
    visual = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    co = [Scored("c", 0.5, "co-rental"), Scored("d", 0.4, "co-rental")]
    assert [s.item_id for s in blend(visual, co, 0.0, 3)] == ["a", "b", "c"]
    assert [s.item_id for s in blend(visual, co, 1.0, 2)] == ["c", "d"]
    mid = blend(visual, co, 0.5, 4)
    assert mid[0].item_id == "c" and mid[0].source == "blend"  # in both lists
    # an item with no rentals: visual neighbours only, whatever the weight
    assert [s.source for s in blend(visual, [], 0.9, 3)] == ["visual"] * 3
    # fill entries are not a signal
    assert blend(visual, [Scored("z", 0.0, "popular")], 1.0, 2)[0].source == "visual"


def test_unknown_user_gets_the_seasonal_popular_layout(model: RecsModel) -> None:
    page = build_page(model, {}, 6)
    assert page and all(c.kind in ("occasion", "category") for c in page)
    assert {c.id for c in page} >= {"occasion:wedding", "occasion:work"}
    scores = [c.score for c in page]
    assert scores == sorted(scores, reverse=True)


def test_history_personalises_order_and_adds_for_you(model: RecsModel) -> None:
    work_items = {model.item_index[str(i)]: 1.0 for i in (11, 12, 13)}
    page = build_page(model, work_items, 6)
    assert page[0].id == "for-you"
    assert int(page[0].items[0].item_id) > 10  # her taste group first
    occ = [c.id for c in page if c.kind == "occasion"]
    assert occ.index("occasion:work") < occ.index("occasion:wedding")
    shown = page_items(page, 20)
    assert len(shown) == len(set(shown)) and not {"11", "12", "13"} & set(shown)


def test_time_split_cases(rentals) -> None:
    past, later = time_split(rentals, test_from="2017-07-01")
    sim = similar_cases(past, later)
    assert sim and all(q != t and 1 <= m <= 12 for q, t, m in sim)
    users = [u for u, _, _ in home_cases(past, later)]
    assert len(users) == len(set(users)) == len(set(later.user_id.astype(str)))


def test_occasion_names() -> None:
    assert occasion_name("Formal-Affair") == "formal affair"
    assert occasion_name("formal_affair") == "formal affair"
    with pytest.raises(InvalidInput):
        occasion_name("<script>")


def test_events_store_overlay_and_fold(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'db.sqlite'}", ttl_s=60.0)
    store.create_schema()
    assert store.recent("u1") == []  # cached empty for 60 s …
    store.record("u1", [("LK-0001", "viewed"), ("LK-0002", "hearted")])
    recent = store.recent("u1")  # … but the writing worker forgets its copy at once
    assert [(i, e) for i, e, _ in recent] == [("LK-0002", "hearted"), ("LK-0001", "viewed")] or {
        (i, e) for i, e, _ in recent
    } == {("LK-0001", "viewed"), ("LK-0002", "hearted")}
    other = EventStore(store.url, ttl_s=0.0)  # another worker reads the same table
    assert len(other.recent("u1")) == 2
    inter = store.interactions()
    assert len(inter) == 2 and set(inter.weight.tolist()) == {0.2, 0.5}
    assert store.forget("u1") == 2 and other.recent("u1") == []


def test_build_registers_checks_and_folds_events(rentals, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    registry = Registry(settings.models_dir, "model")
    day = datetime(2017, 12, 20, tzinfo=UTC)
    events = Interactions.from_events(
        [("9001", "LK-A", "rented", day), ("9001", "LK-B", "hearted", day)]
    )
    ref = build_recs_model(registry, rentals, events=events, test_months=6)
    manifest = registry.manifest(ref)
    assert manifest["task"] == "recommendations" and manifest["events"] == 2
    assert set(manifest["metrics"]) == {"ndcg@10", "hit@10", "home_hit@20"}
    served = RecsModel.load(registry.path(ref))
    assert "LK-A" in served.item_index  # an item known only from events is served
    assert [s.item_id for s in corental_items(served, "LK-A", 1, 12, fill=False)] == ["LK-B"]
    report = RecsKind(settings).check("model", ref)
    assert report.passed, [(r.name, r.message) for r in report.failed]
    # on two clear taste groups, co-rental ranks the next rental higher than popularity does
    rows = manifest["evaluation"]["similar"]["rows"]
    assert rows["co-rental"]["ndcg@10"] > rows["popular"]["ndcg@10"]
