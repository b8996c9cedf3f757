"""Rentals import (idempotent, newest first), "women like me" (parsing, ranking, reasons) and the
fit metrics (macro-F1, AUC against a brute-force count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from lookalike.catalog.rental_store import RentalReview, RentalStore
from lookalike.catalog.rentals import read_checked_rentals, read_rentals
from lookalike.core.db import get_engine
from lookalike.core.errors import InvalidInput
from lookalike.recs.fit import auc, macro_f1
from lookalike.recs.likeme import Reviewers, parse_like_me, rank_reviewers, reason_for

HEADER = "user_id,item_id,fit,size,weight,height,bust size,body type,age,category,rented for"
CSV = (
    HEADER
    + """,rating,date
1,10,fit,8,135lbs,5' 6,34c,hourglass,30,dress,party,10,2017-01-05
2,10,small,8,170lbs,5' 9,38d,apple,41,dress,wedding,8,2017-03-01
3,10,large,4,120lbs,62,32b,petite,117,dress,work,6,2016-12-24
3,10,large,4,120lbs,62,32b,petite,117,dress,work,6,2016-12-24
4,11,fit,12,,,,,,gown,formal affair,10,2017-02-02
"""
)


@pytest.fixture()
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "rentals.csv"
    path.write_text(CSV)
    return path


def test_import_is_idempotent_and_reads_back_newest_first(tmp_path: Path, csv_file: Path) -> None:
    store = RentalStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    check, first = store.import_file(csv_file)
    assert check.implausible["age"] == 2 and check.missing["weight_lbs"] == 1
    assert (first.rows_read, first.added, first.duplicates) == (5, 4, 1)
    _, again = store.import_file(csv_file)
    assert again.added == 0 and store.counts().rows == 4
    reviews = store.item_reviews("10")
    assert [r.review_date for r in reviews] == ["2017-03-01", "2017-01-05", "2016-12-24"]
    assert reviews[1].height_in == 66 and reviews[1].bust_size_letter == "c"
    assert reviews[2].age is None  # 117: implausible, stored as unknown
    assert store.item_reviews("nope") == [] and not store.has_item("nope")
    counts = store.counts()
    assert (counts.items, counts.users, counts.first) == (2, 4, "2016-12-24")
    tables = sa.inspect(get_engine(store.url)).get_table_names()
    assert {"rentals", "shopper_events"} <= set(tables)


def test_like_me_parsing_names_the_bad_field() -> None:
    s = parse_like_me("height:66,weight:135,bust:34c,body_type:hourglass,size:8")
    assert (s.height_in, s.weight_lbs, s.bust_size_num, s.bust_cup) == (66, 135, 34, "c")
    assert s.body_type == "hourglass" and s.size == 8 and s.given == 5
    for query, field in {
        "height:tall": "height",
        "height:400": "height",
        "weight:5": "weight",
        "bust:huge": "bust",
        "body_type:pyramid": "body_type",
        "size:8.5": "size",
        "shoe:7": "shoe",
        "height": "name:value",
        "": "empty",
    }.items():
        with pytest.raises(InvalidInput, match=field):
            parse_like_me(query)


def test_reviewers_most_like_the_shopper_come_first(csv_file: Path, tmp_path: Path) -> None:
    store = RentalStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    store.import_file(csv_file)
    reviews = store.item_reviews("10")
    who = Reviewers.of(reviews)
    shopper = parse_like_me("height:66,weight:136,bust:34c,body_type:hourglass")
    order, similarity, shared = rank_reviewers(shopper, who)
    assert [reviews[i].user_id for i in order] == [
        "1",
        "3",
        "2",
    ]  # 3 is 4 in shorter, 2 is 34 lbs more
    assert similarity[order[0]] > 0.95 and list(shared) == [4, 4, 4]
    assert "hourglass like you" in reason_for(shopper, who, int(order[0]))
    # fewer shared features rank lower even when they match
    only_size = parse_like_me("size:4,height:62")
    order, similarity, _ = rank_reviewers(only_size, who)
    assert reviews[order[0]].user_id == "3"
    assert reason_for(parse_like_me("size:4"), Reviewers.of(store.item_reviews("11")), 0)


def test_a_reason_names_her_own_cup_and_equal_cups_are_alike() -> None:
    """dd and e are one cup (one index): a 34e shopper reads "34dd like you", not "34dd (you
    34e)", and each reviewer's letter is the one she gave, not the first letter of its index."""
    reviews = [
        RentalReview(user_id=str(n), item_id="10", fit="fit", size=8, weight_lbs=None,
                     height_in=None, bust_size_num=34.0, bust_size_letter=letter, body_type="",
                     age=None, category="dress", rented_for="party", rating=None,
                     review_date="2017-01-05")
        for n, letter in enumerate(["e", "dd", "f", "ddd", ""])
    ]  # fmt: skip
    who = Reviewers.of(reviews)
    reasons = [reason_for(parse_like_me("bust:34e"), who, i) for i in range(len(reviews))]
    assert reasons == [
        "bust 34e like you",
        "bust 34dd like you",
        "bust 34f (you 34e)",
        "bust 34ddd (you 34e)",
        "bust 34 (you 34e)",
    ]
    assert reason_for(parse_like_me("bust:34f"), who, 3) == "bust 34ddd like you"
    assert reason_for(parse_like_me("bust:34"), who, 2) == "bust 34f like you"


def test_macro_f1_and_auc_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 3, 300))
    f1, per = macro_f1(y, pred)
    for c in range(3):
        tp = np.sum((pred == c) & (y == c))
        precision, recall = tp / np.sum(pred == c), tp / np.sum(y == c)
        assert per[c] == pytest.approx(2 * precision * recall / (precision + recall))
    assert f1 == pytest.approx(np.mean(per))
    score = np.round(rng.random(300), 1)  # ties on purpose
    pos = y == 1
    pairs = [(a > b) + 0.5 * (a == b) for a in score[pos] for b in score[~pos]]
    assert auc(pos, score) == pytest.approx(np.mean(pairs))


def test_reading_checks_the_raw_values(csv_file: Path) -> None:
    rentals, check = read_checked_rentals(csv_file)
    assert len(rentals) == len(read_rentals(csv_file)) == 5
    assert check.implausible == {"age": 2, "height_in": 0, "weight_lbs": 0, "bust_size_num": 0}
