"""The mongomock adaptation of utils/mongomock_compat.py (upstream issue mongomock#912) and its speedups,
which must give plain mongomock's answers."""

import os
from contextlib import contextmanager

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import ReplaceOne, UpdateOne

from utils.mongomock_compat import SPEEDUPS_VARIABLE, patch_mongomock, speedups_enabled


def test_bulk_write_takes_update_one_and_replace_one_under_current_pymongo():
    patch_mongomock()
    patch_mongomock()  # idempotent
    collection = mongomock.MongoClient()["db"]["c"]
    collection.insert_many([{"_id": 1, "x": 1}, {"_id": 2, "x": 2}])
    result = collection.bulk_write([UpdateOne({"_id": 1}, {"$set": {"x": 10}}), ReplaceOne({"_id": 2}, {"y": 20}),
                                    UpdateOne({"_id": 3}, {"$set": {"x": 30}}, upsert=True)])
    assert (result.matched_count, result.upserted_count) == (2, 1)
    assert list(collection.find().sort("_id")) == [{"_id": 1, "x": 10}, {"_id": 2, "y": 20}, {"_id": 3, "x": 30}]


def test_a_sort_mongomock_cannot_honour_is_refused():
    patch_mongomock()
    collection = mongomock.MongoClient()["db"]["c"]
    with pytest.raises(NotImplementedError, match="sort option"):
        collection.bulk_write([UpdateOne({}, {"$set": {"x": 1}}, sort={"_id": -1})])


# --- the speedups give mongomock's own answers ------------------------------------------------


@contextmanager
def speedups(enabled):
    """mongomock with or without the speedups for the time of the block, as the environment had it after."""
    previous = os.environ.get(SPEEDUPS_VARIABLE)
    os.environ[SPEEDUPS_VARIABLE] = "1" if enabled else "0"
    patch_mongomock()
    try:
        yield
    finally:
        if previous is None:
            del os.environ[SPEEDUPS_VARIABLE]
        else:
            os.environ[SPEEDUPS_VARIABLE] = previous
        patch_mongomock()


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-3, 3, allow_nan=False),
                    st.sampled_from(["a", "b", "c"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.fixed_dictionaries({"x": scalars}))
documents = st.lists(st.fixed_dictionaries({"k": values, "j": scalars}), max_size=25)
in_lists = st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=6)


def answers(filters, docs, skip, limit):
    collection = mongomock.MongoClient()["db"]["c"]
    if docs:
        collection.insert_many([dict(doc, _id=number) for number, doc in enumerate(docs)])
    return [list(collection.find(query).skip(skip).limit(limit)) for query in filters] + \
        [collection.count_documents(query) for query in filters]


@settings(max_examples=300, deadline=None)
@given(docs=documents, in_list=in_lists, other=scalars, skip=st.integers(0, 5), limit=st.integers(0, 5))
def test_the_speedups_give_the_answers_of_plain_mongomock(docs, in_list, other, skip, limit):
    filters = [{"k": {"$in": in_list}}, {"k": {"$in": in_list}, "j": other}, {"k": {"$nin": in_list}},
               {"j": {"$in": in_list}}, {"k.x": {"$in": in_list}}, {}]
    with speedups(True):
        assert speedups_enabled()
        fast = answers(filters, docs, skip, limit)
    with speedups(False):
        assert not speedups_enabled()
        plain = answers(filters, docs, skip, limit)
    assert fast == plain


def test_a_cursor_is_read_in_linear_time_and_sliced_as_before():
    collection = mongomock.MongoClient()["db"]["c"]
    collection.insert_many([{"_id": number} for number in range(50)])
    assert [doc["_id"] for doc in collection.find().skip(45)] == [45, 46, 47, 48, 49]
    assert [doc["_id"] for doc in collection.find().skip(3).limit(2)] == [3, 4]
    assert [doc["_id"] for doc in collection.find().limit(-2)] == [0, 1]
    assert list(collection.find().skip(60)) == []


def test_patching_again_wraps_nothing_twice():
    from mongomock.collection import BulkOperationBuilder

    patch_mongomock()
    wrapped = BulkOperationBuilder.add_update
    for _ in range(3):
        patch_mongomock()
    assert BulkOperationBuilder.add_update is wrapped
